"""Every prompt the optimiser sends, as named templates. A session may override any of them.

Placeholders are `{name}`; only known names are substituted, so braces in user text are safe.
ProTeGi's templates follow microsoft/LMOps `prompt_optimization/optimizers.py`; the TextGrad ones
follow textgrad's `optimizer_prompts.py` and `backward_prompts.py` (AutoMedPrompt uses TextGrad).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class MetaPrompt:
    name: str
    method: str  # "protegi" | "textgrad"
    purpose: str
    system: str
    user: str
    placeholders: tuple[str, ...]


PROTEGI_ERROR_V1 = MetaPrompt(
    "protegi.error", "protegi", "How one wrong example is shown inside the gradient and edit prompts.",
    system="", user="## Example {index}\nText: \"{text}\"\nLabel: {label} Prediction: {prediction}",
    placeholders=("index", "text", "label", "prediction"),
)

PROTEGI_GRADIENT = MetaPrompt(
    "protegi.gradient", "protegi", "One call per error group: why did the prompt get these wrong?",
    system="",
    user=("I'm trying to write a zero-shot classifier prompt.\n\n"
          "My current prompt is:\n\"{prompt}\"\n\n"
          "But this prompt gets the following examples wrong:\n{errors}\n\n"
          "give {num_reasons} reasons why the prompt could have gotten these examples wrong.\n"
          "Wrap each reason with <START> and <END>"),
    placeholders=("prompt", "errors", "num_reasons"),
)

PROTEGI_EDIT = MetaPrompt(
    "protegi.edit", "protegi", "One call per reason: edit the prompt to fix it.",
    system="",
    user=("I'm trying to write a zero-shot classifier.\n\n"
          "My current prompt is:\n\"{prompt}\"\n\n"
          "But it gets the following examples wrong:\n{errors}\n\n"
          "Based on these examples the problem with this prompt is that {reason}\n\n"
          "{locked}"
          "Based on the above information, I wrote {num_edits} different improved prompts.\n"
          "Each prompt is wrapped with <START> and <END>.\n\n"
          "The {num_edits} new prompts are:"),
    placeholders=("prompt", "errors", "reason", "num_edits", "locked"),
)

PROTEGI_PARAPHRASE = MetaPrompt(
    "protegi.paraphrase", "protegi", "Monte-Carlo successors: one sampled call per paraphrase.",
    system="",
    user=("Generate a variation of the following instruction while keeping the semantic meaning.\n\n"
          "Input: {prompt}\n\nOutput:"),
    placeholders=("prompt",),
)

PROTEGI_ERROR = MetaPrompt(
    "protegi.error", "protegi", "How one wrong example is shown inside the gradient and edit prompts, with an "
    "excerpt of the model's own answer (its reasoning is what a gradient needs).",
    system="", user="## Example {index}\nText: \"{text}\"\nLabel: {label} Prediction: {prediction}\n"
                    "Model answer (excerpt): \"{answer}\"",
    placeholders=("index", "text", "label", "prediction", "answer"),
)

TEXTGRAD_LOSS = MetaPrompt(
    "textgrad.loss", "textgrad", "Per-example loss: the backward model compares the answer with the gold answer.",
    system=("You are a meticulous evaluator of answers to {task_title} questions. Do not attempt to solve "
            "the question yourself. Compare the model's answer with the correct answer and give concise, "
            "specific feedback: is the final answer correct, and if not, what in the reasoning or the "
            "format led to the mistake. Be super concise."),
    user=("<QUESTION>\n{question}\n</QUESTION>\n\n<MODEL_ANSWER>\n{answer}\n</MODEL_ANSWER>\n\n"
          "<CORRECT_ANSWER>{gold}</CORRECT_ANSWER>\n<PARSED_MODEL_ANSWER>{parsed}</PARSED_MODEL_ANSWER>"),
    placeholders=("task_title", "question", "answer", "gold", "parsed"),
)

TEXTGRAD_GRADIENT = MetaPrompt(
    "textgrad.gradient", "textgrad", "One backward call: turn the batch's feedback into criticism of the system prompt.",
    system=("You are part of an optimization system that improves a given text (i.e. the variable). You are the "
            "gradient (feedback) engine. Your only responsibility is to give intelligent and creative feedback "
            "and constructive criticism to variables, given an objective specified in <OBJECTIVE_FUNCTION> "
            "</OBJECTIVE_FUNCTION> tags. The variables may be solutions to problems, prompts to language models, "
            "code, or any other text-based variable. Pay attention to the role description of the variable, and "
            "the context in which it is used. You should assume that the variable will be used in a similar "
            "context in the future. Only provide strategies, explanations, and methods to change in the variable. "
            "DO NOT propose a new version of the variable, that will be the job of the optimizer."),
    user=("You will give feedback to a variable with the following role: <ROLE> {role} </ROLE>.\n\n"
          "The variable was used as the system prompt of a language model on these questions, and an evaluator "
          "wrote the following feedback on each answer:\n\n{feedback}\n\n"
          "<OBJECTIVE_FUNCTION>Answer as many questions as possible correctly, in the required answer format."
          "</OBJECTIVE_FUNCTION>\n\n"
          "We are interested in giving feedback to the {role} for these conversations. Specifically, give "
          "feedback to the following span of text:\n\n<VARIABLE> {prompt} </VARIABLE>\n\n"
          "Given the above history, describe how the {role} could be improved to improve the "
          "<OBJECTIVE_FUNCTION>. Wrap your feedback in <FEEDBACK> and </FEEDBACK>."),
    placeholders=("role", "feedback", "prompt"),
)

def _tgd_update_user(context_slot: str) -> str:
    """The TGD update's user message; version 1 put the bare gradient in <CONTEXT>, version 2 the conversations
    with the gradient in <FEEDBACK> tags (the text is otherwise the same, so old sessions replay identically)."""
    return ("Here is the role of the variable you will improve: <ROLE>{role}</ROLE>.\n\n"
            "The variable is the text within the following span: <VARIABLE> {prompt} </VARIABLE>\n\n"
            "Here is the context and feedback we got for the variable:\n\n<CONTEXT>{" + context_slot + "}</CONTEXT>\n\n"
            "{memory}"
            "Improve the variable ({role}) using the feedback provided in <FEEDBACK> tags.\n"
            "{constraints}"
            "{locked}"
            "Send the improved variable in the following format:\n\n"
            "<IMPROVED_VARIABLE>{{the improved variable}}</IMPROVED_VARIABLE>\n\n"
            "Send ONLY the improved variable between the <IMPROVED_VARIABLE> tags, and nothing else.")


TEXTGRAD_UPDATE_V1 = MetaPrompt(
    "textgrad.update", "textgrad", "Textual Gradient Descent: rewrite the prompt under constraints.",
    system=("You are part of an optimization system that improves text (i.e., variable). You will be asked to "
            "creatively and critically improve prompts, solutions to problems, code, or any other text-based "
            "variable. You will receive some feedback, and use the feedback to improve the variable. The feedback "
            "may be noisy, identify what is important and what is correct. Pay attention to the role description "
            "of the variable, and the context in which it is used. This is very important: You MUST give your "
            "response by sending the improved variable between <IMPROVED_VARIABLE> {{improved variable}} "
            "</IMPROVED_VARIABLE> tags. The text you send between the tags will directly replace the variable."),
    user=_tgd_update_user("gradient"),
    placeholders=("role", "prompt", "gradient", "memory", "constraints", "locked"),
)

TEXTGRAD_MEMORY_V1 = MetaPrompt(
    "textgrad.memory", "textgrad", "Gradient memory: past prompts with their validation scores and past feedback.",
    system="",
    user=("Here are the past iterations of this variable, with their validation accuracy, and the feedback "
          "they received:\n<PAST_ITERATIONS>\n{past}\n</PAST_ITERATIONS>\n\n"),
    placeholders=("past",),
)

# TGD update as textgrad builds it (zou-group/textgrad@75e912e, textgrad/optimizer/optimizer_prompts.py
# TGD_PROMPT_PREFIX / GRADIENT_TEMPLATE, and optimizer.py get_gradient_and_context_text): the <CONTEXT> holds
# the conversation and, in <FEEDBACK> tags, the feedback on the variable, so "the feedback in <FEEDBACK>
# tags" is the current gradient. Past iterations (memory) carry their feedback in <PAST_FEEDBACK> tags.
TEXTGRAD_UPDATE = MetaPrompt(
    "textgrad.update", "textgrad", "Textual Gradient Descent: rewrite the prompt under constraints.",
    system=TEXTGRAD_UPDATE_V1.system,
    user=_tgd_update_user("context"),
    placeholders=("role", "prompt", "context", "memory", "constraints", "locked"),
)

TEXTGRAD_CONTEXT = MetaPrompt(
    "textgrad.context", "textgrad", "Inside the update's <CONTEXT>: the batch's conversations and the current "
    "feedback (the gradient) in <FEEDBACK> tags, as textgrad's GRADIENT_TEMPLATE.",
    system="",
    user=("Here is a conversation:\n\n<CONVERSATION>{conversation}</CONVERSATION>\n\n"
          "This conversation is potentially part of a larger system. The output is used as the answer to "
          "{task_title} questions\n\n"
          "Here is the feedback we got for {role} in the conversation:\n\n<FEEDBACK>{gradient}</FEEDBACK>\n\n"),
    placeholders=("conversation", "task_title", "role", "gradient"),
)

TEXTGRAD_MEMORY = MetaPrompt(
    "textgrad.memory", "textgrad", "Gradient memory: past prompts, the feedback each received, and the revision "
    "made from it (validation scores only if the session asks).",
    system="",
    user=("Here are the past iterations of this variable: each prompt, the feedback that prompt received, and "
          "the revision proposed from that feedback:\n\n<PAST_ITERATIONS>\n{past}\n</PAST_ITERATIONS>\n\n"
          "Similar feedbacks across different steps suggests that the modifications to the variable are "
          "insufficient. If this is the case, please make more significant changes to the variable.\n\n"),
    placeholders=("past",),
)

TEMPLATES: dict[str, MetaPrompt] = {t.name: t for t in (
    PROTEGI_GRADIENT, PROTEGI_EDIT, PROTEGI_PARAPHRASE, PROTEGI_ERROR,
    TEXTGRAD_LOSS, TEXTGRAD_GRADIENT, TEXTGRAD_UPDATE, TEXTGRAD_CONTEXT, TEXTGRAD_MEMORY)}

# Template sets by version. A session records the version it was created with (old sessions: 1), so it
# replays with the prompts it sent; new sessions get TEMPLATE_VERSION.
TEMPLATE_VERSION = 2
LEGACY_TEMPLATES: dict[int, dict[str, MetaPrompt]] = {1: {t.name: t for t in (
    PROTEGI_ERROR_V1, TEXTGRAD_UPDATE_V1, TEXTGRAD_MEMORY_V1)}}

# Placeholders that are empty unless given: {locked} (core/person_marks.locked_block) is "" when nothing is
# locked, so a session without locks renders, and caches, byte for byte what it did before locks existed.
BLANK_UNLESS_GIVEN = ("locked",)

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(\w+)\}")


def fill(text: str, /, **values: object) -> str:
    """Substitute `{name}` for known names only; `{{`/`}}` become literal braces."""
    def sub(m: re.Match) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        name = m.group(1)
        return str(values[name]) if name in values else tok

    return _PLACEHOLDER.sub(sub, text)


class Templates:
    """The templates a session uses: the defaults with the session's overrides on top."""

    def __init__(self, overrides: dict[str, dict[str, str]] | None = None, version: int = TEMPLATE_VERSION):
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items() if k in TEMPLATES}
        self.version = version

    def get(self, name: str) -> MetaPrompt:
        base = LEGACY_TEMPLATES.get(self.version, {}).get(name) or TEMPLATES[name]
        o = self.overrides.get(name)
        if not o:
            return base
        return MetaPrompt(base.name, base.method, base.purpose, o.get("system", base.system),
                          o.get("user", base.user), base.placeholders)

    def messages(self, name: str, **values: object) -> tuple[tuple[str, str], ...]:
        t = self.get(name)
        values = {**{k: "" for k in BLANK_UNLESS_GIVEN if k in t.placeholders}, **values}
        msgs: tuple[tuple[str, str], ...] = ()
        if t.system.strip():
            msgs += (("system", fill(t.system, **values)),)
        return msgs + (("user", fill(t.user, **values)),)

    def text(self, name: str, **values: object) -> str:
        t = self.get(name)
        return fill(t.user, **{**{k: "" for k in BLANK_UNLESS_GIVEN if k in t.placeholders}, **values})


def tagged_spans(text: str, start: str, end: str) -> list[tuple[str, bool]]:
    """Every non-empty span between start and end tags (case-insensitive), with whether it was closed:
    an unclosed last span is a reply cut off mid-answer."""
    out = []
    pattern = re.compile(re.escape(start) + r"(.*?)(" + re.escape(end) + r"|$)", re.S | re.I)
    for m in pattern.finditer(text):
        s = m.group(1).strip()
        if s:
            out.append((s, bool(m.group(2))))
    return out


def extract_tagged(text: str, start: str, end: str) -> list[str]:
    """Every span between start and end tags (case-insensitive); an unclosed last span counts
    (`tagged_spans` says which one it is, so callers can flag it "cut off")."""
    return [s for s, _ in tagged_spans(text, start, end)]

"""AutoMedPrompt / TextGrad: per-example feedback (the loss), one gradient on the system prompt,
one Textual Gradient Descent update under constraints, with a gradient memory.

A step is four dependent rounds: forward answers (done by the session), losses (concurrent),
gradient, update. TextGrad's own loop makes 13 sequential calls for a batch of 5.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .baselines import SEED_PROMPT as AUTOMEDPROMPT_SEED  # the one seed prompt
from .engine import StepContext, normalise
from .evaluate import EvalReport
from .lineage import CallRecord, Candidate, Gradient, Proposal
from .llm import Request, is_cut_off
from .meta_prompts import extract_tagged, tagged_spans
from .person_marks import locked_block

SAMPLED_TEMPERATURE = 0.7  # regenerated and extra update samples


@dataclass
class TextGradConfig:
    batch_size: int = 5
    constraints: list[str] = field(default_factory=list)
    memory: int = 3  # past iterations (prompt, its feedback, the revision) shown to the update; 0 = off
    role: str = "system prompt to a language model that answers {task} questions"
    question_chars: int = 2000  # question text shown to the gradient call, per example
    max_tokens: int = 1024
    candidates: int = 1  # update samples drawn at once (distinct sample indices), de-duplicated
    memory_scores: bool = False  # show past validation scores to the update (leaks the gate's data)
    batch_by_task: dict[str, int] = field(default_factory=dict)  # task name -> batch size (paper presets)
    role_by_task: dict[str, str] = field(default_factory=dict)  # task name -> role description
    val_questions: int | None = None  # the gate scores the first N validation questions (paper presets)

    def for_task(self, name: str | None) -> "TextGradConfig":
        """This config with the task-specific batch size and role applied."""
        return replace(self, batch_size=self.batch_by_task.get(name or "", self.batch_size),
                       role=self.role_by_task.get(name or "", self.role))


# The AutoMedPrompt paper's code (SeanWu25/AutoMedPrompt@HEAD): textgrad_wrapper.py lines 38-48 (role
# descriptions, "This system prompt should not be too verbose."), lines 53-58 (plain TextualGradientDescent:
# no momentum / gradient memory, no constraints), utils.py line 17 (yn_loader, PubMedQA: batch_size=1) and
# line 76 (make_loader, MedQA: batch_size=5), data.py lines 11-15 (a 50-question dev set), textgrad_wrapper.py
# lines 98-118 (_run_validation_revert: keep the new prompt only if dev accuracy rises: the `strict` gate).
_AMP_ROLE = ("A general system prompt for a language model designed to answer medical-related {kind} questions. "
             "This system prompt should not be too verbose.")
PRESETS: dict[str, TextGradConfig] = {
    "AutoMedPrompt paper": TextGradConfig(
        batch_size=5, memory=0, candidates=1, val_questions=50,
        batch_by_task={"pubmedqa": 1, "medqa": 5},
        role=_AMP_ROLE.replace("medical-related {kind}", "{task}"),
        role_by_task={"pubmedqa": _AMP_ROLE.format(kind="yes/no/maybe"),
                      "medqa": _AMP_ROLE.format(kind="multiple-choice")}),
    "quick": TextGradConfig(batch_size=3, memory=2, candidates=3, constraints=["Keep the prompt under 120 words."]),
}
# The product's preset: the paper's method settings, gated by the adaptive gate on up to gate_cap questions
# (no fixed 50-question validation set); sessions start with the `adaptive` policy (session.default_policy).
PRESETS["recommended"] = replace(PRESETS["AutoMedPrompt paper"], val_questions=None)
# Sessions created before template version 2 keep the presets they ran with (so they replay identically).
LEGACY_PRESETS: dict[int, dict[str, TextGradConfig]] = {1: {
    "AutoMedPrompt paper": TextGradConfig(batch_size=5),
    "quick": TextGradConfig(batch_size=3, memory=2, constraints=["Keep the prompt under 120 words."]),
}}


@dataclass
class MemoryItem:
    prompt: str  # the revision proposed at that step (the prompt validated)
    val_accuracy: float | None
    gradient: str  # the feedback on `parent`, from which `prompt` was made
    accepted: bool
    parent: str = ""  # the prompt that feedback criticised


def constraints_text(constraints: list[str]) -> str:
    items = [c.strip() for c in constraints if c.strip()]
    if not items:
        return ""
    body = "\n".join(f"- {c}" for c in items)
    return f"You must follow the following constraints:\n<CONSTRAINTS>\n{body}\n</CONSTRAINTS>\n\n"


def memory_text(ctx: StepContext, memory: list[MemoryItem], size: int, scores: bool = False) -> str:
    if size <= 0 or not memory:
        return ""
    if ctx.templates.version >= 2:
        return _memory_text_v2(ctx, memory[-size:], scores)
    lines = []  # template version 1: kept as sent, so old sessions replay
    for m in memory[-size:]:
        acc = "not scored" if m.val_accuracy is None else f"{m.val_accuracy:.1%}"
        verdict = "accepted" if m.accepted else "rejected"
        lines.append(f"<PROMPT validation_accuracy=\"{acc}\" {verdict}>\n{m.prompt}\n</PROMPT>\n"
                     f"<FEEDBACK>\n{m.gradient}\n</FEEDBACK>")
    return ctx.templates.text("textgrad.memory", past="\n".join(lines))


def _memory_text_v2(ctx: StepContext, items: list[MemoryItem], scores: bool) -> str:
    """Each past iteration: the prompt, the feedback THAT prompt received, and the revision made from it."""
    blocks = []
    for n, m in enumerate(items, 1):
        verdict = "accepted" if m.accepted else "rejected"
        score = "" if not scores or m.val_accuracy is None else f" validation_accuracy=\"{m.val_accuracy:.1%}\""
        blocks.append(f"<ITERATION {n}>\n<PROMPT>\n{m.parent}\n</PROMPT>\n<PAST_FEEDBACK on=\"the prompt above\">\n"
                      f"{m.gradient}\n</PAST_FEEDBACK>\n<REVISION made_from=\"that feedback\" {verdict}{score}>\n"
                      f"{m.prompt}\n</REVISION>\n</ITERATION {n}>")
    return ctx.templates.text("textgrad.memory", past="\n".join(blocks))


def conversation_text(ctx: StepContext, rows, question_chars: int) -> str:
    """The batch as the update's context sees it: each question and the model's answer."""
    return "\n".join(f"<LM_INPUT>\n{ctx.task_text(r.id)[:question_chars]}\n</LM_INPUT>\n"
                     f"<LM_OUTPUT>\n{r.raw_output}\n</LM_OUTPUT>" for r in rows)


class TextGradEngine:
    method = "textgrad"

    def __init__(self, cfg: TextGradConfig):
        self.cfg = cfg

    def role(self, ctx: StepContext) -> str:
        return self.cfg.role.replace("{task}", ctx.task.title)

    async def propose(self, ctx: StepContext, beam: list[str], reports: list[EvalReport],
                      memory: list[MemoryItem] | None = None) -> Proposal:
        prompt, report = beam[0], reports[0]
        cfg, tpl = self.cfg, ctx.templates
        rows = [r for r in report.rows if not r.error]
        prop = Proposal()
        if not rows:
            prop.note = "Every forward call in this batch failed; nothing to learn from. Regenerate or check the model."
            return prop

        k = max(1, int(cfg.candidates))
        ctx.plan("loss", len(rows))  # the whole step's optimiser calls, known before the first is sent
        ctx.plan("gradient", 1)
        ctx.plan("update", k)

        # 1. the loss: one feedback call per example, all at once
        loss_msgs = [tpl.messages("textgrad.loss", task_title=ctx.task.title, question=ctx.task_text(r.id),
                                  answer=r.raw_output, gold=r.gold, parsed=r.parsed or "unparsed") for r in rows]
        losses = await ctx.backward([Request(messages=m, temperature=0.0, max_tokens=cfg.max_tokens, tag="textgrad.loss")
                                     for m in loss_msgs], phase="loss")
        prop.calls = [CallRecord.of("textgrad.loss", m, c) for m, c in zip(loss_msgs, losses)]
        # a failed loss call's error text (request ids, redacted keys) stays in its CallRecord, out of the gradient
        # prompt: the prompt, and so its cache key and an offline replay, must not depend on how a call failed
        feedback = {r.id: (c.text.strip() if c.ok else "(no feedback: the evaluation call failed)")
                    for r, c in zip(rows, losses)}

        # 2. the gradient on the system prompt
        blocks = []
        for i, r in enumerate(rows, 1):
            q = ctx.task_text(r.id)[: cfg.question_chars]
            verdict = "correct" if r.correct else ("unparsed" if r.parsed is None else "wrong")
            blocks.append(f"<EXAMPLE {i} ({verdict})>\n<LM_INPUT>\n{q}\n</LM_INPUT>\n<LM_OUTPUT>\n{r.raw_output}\n"
                          f"</LM_OUTPUT>\n<EVALUATION>\n{feedback[r.id]}\n</EVALUATION>\n</EXAMPLE {i}>")
        gmsgs = tpl.messages("textgrad.gradient", role=self.role(ctx), feedback="\n\n".join(blocks), prompt=prompt)
        g = (await ctx.backward([Request(messages=gmsgs, temperature=0.0, max_tokens=cfg.max_tokens,
                                         tag="textgrad.gradient")], phase="gradient"))[0]
        if not g.ok:
            prop.note = f"The gradient call failed: {g.error}"
            ctx.job.end("update")  # no update follows
            prop.calls += [CallRecord.of("textgrad.gradient", gmsgs, g)]
            return prop
        parts = extract_tagged(g.text, "<FEEDBACK>", "</FEEDBACK>")
        grad = Gradient(id=f"{ctx.prefix}g1", text="\n\n".join(parts) if parts else g.text.strip(),
                        failure_ids=[r.id for r in rows if not r.correct], parent=prompt, flagged=not parts,
                        call=CallRecord.of("textgrad.gradient", gmsgs, g), feedback=feedback)
        prop.gradients.append(grad)

        # 3. the TGD update: the current feedback inside <CONTEXT>, in the <FEEDBACK> tags the prompt points at
        context = tpl.text("textgrad.context", conversation=conversation_text(ctx, rows, cfg.question_chars),
                           task_title=ctx.task.title, role=self.role(ctx), gradient=grad.text)
        umsgs = tpl.messages("textgrad.update", role=self.role(ctx), prompt=prompt, gradient=grad.text,
                             context=context, memory=memory_text(ctx, memory or [], cfg.memory, cfg.memory_scores),
                             constraints=constraints_text(cfg.constraints), locked=locked_block(ctx.locked, prompt))
        if k == 1:  # as before: sample index = attempt (old sessions replay)
            draws = [(0.0 if ctx.attempt == 0 else SAMPLED_TEMPERATURE, ctx.attempt)]
        else:  # k distinct, reproducible samples per attempt; the first of attempt 0 is greedy
            draws = [(0.0 if ctx.attempt == 0 and i == 0 else SAMPLED_TEMPERATURE, ctx.attempt * k + i)
                     for i in range(k)]
        replies = await ctx.backward([Request(messages=umsgs, temperature=t, max_tokens=cfg.max_tokens, sample=n,
                                              tag="textgrad.update") for t, n in draws], phase="update")
        seen, problems = {normalise(prompt)}, []
        for i, u in enumerate(replies, 1):
            rec = CallRecord.of("textgrad.update", umsgs, u)
            spans = [(t, closed) for t, closed in (tagged_spans(u.text, "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
                                                   if u.ok else [])
                     if "the improved variable" not in t.lower()]
            if not spans:
                prop.calls.append(rec)
                problems.append("The update model did not put a new prompt between <IMPROVED_VARIABLE> tags"
                                + (f" ({u.error})" if u.error else ""))
                continue
            text, closed = spans[-1]
            if normalise(text) in seen:
                prop.calls.append(rec)
                problems.append("The update returned the prompt unchanged" if normalise(text) == normalise(prompt)
                                else "The update repeated another sample")
                continue
            seen.add(normalise(text))
            cand = Candidate(id=f"{ctx.prefix}c{i}", prompt=text, parent=prompt, origin="update",
                             gradient_id=grad.id, call=rec)
            if not closed or is_cut_off(u.finish_reason):
                cand.flags.append("cut off")
            prop.candidates.append(cand)
        if not prop.candidates:
            if problems and problems[0].startswith("The update returned the prompt unchanged") and k == 1:
                prop.note = "The update returned the prompt unchanged. Regenerate, or edit the prompt by hand."
            else:
                prop.note = ("; ".join(dict.fromkeys(problems)) + ". Its raw reply is shown under the call; "
                             "edit a prompt by hand, or regenerate.")
        return prop


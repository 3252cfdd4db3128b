"""AutoMedPrompt / TextGrad: per-example feedback (the loss), one gradient on the system prompt,
one Textual Gradient Descent update under constraints, with a gradient memory.

A step is four dependent rounds: forward answers (done by the session), losses (concurrent),
gradient, update. TextGrad's own loop makes 13 sequential calls for a batch of 5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .engine import StepContext, normalise
from .evaluate import EvalReport
from .lineage import CallRecord, Candidate, Gradient, Proposal
from .llm import Request
from .meta_prompts import extract_tagged

AUTOMEDPROMPT_SEED = "You are a helpful, creative, and smart assistant."


@dataclass
class TextGradConfig:
    batch_size: int = 5
    constraints: list[str] = field(default_factory=list)
    memory: int = 3  # past prompts (with validation scores) and gradients shown to the update; 0 = off
    role: str = "system prompt to a language model that answers {task} questions"
    question_chars: int = 2000  # question text shown to the gradient call, per example
    max_tokens: int = 1024


PRESETS: dict[str, TextGradConfig] = {
    "AutoMedPrompt paper": TextGradConfig(batch_size=5),
    "quick": TextGradConfig(batch_size=3, memory=2, constraints=["Keep the prompt under 120 words."]),
    # the product's preset: the paper preset's method settings; sessions start with the adaptive gate
    "recommended": TextGradConfig(batch_size=5),
}


@dataclass
class MemoryItem:
    prompt: str
    val_accuracy: float | None
    gradient: str
    accepted: bool


def constraints_text(constraints: list[str]) -> str:
    items = [c.strip() for c in constraints if c.strip()]
    if not items:
        return ""
    body = "\n".join(f"- {c}" for c in items)
    return f"You must follow the following constraints:\n<CONSTRAINTS>\n{body}\n</CONSTRAINTS>\n\n"


def memory_text(ctx: StepContext, memory: list[MemoryItem], size: int) -> str:
    if size <= 0 or not memory:
        return ""
    lines = []
    for m in memory[-size:]:
        acc = "not scored" if m.val_accuracy is None else f"{m.val_accuracy:.1%}"
        verdict = "accepted" if m.accepted else "rejected"
        lines.append(f"<PROMPT validation_accuracy=\"{acc}\" {verdict}>\n{m.prompt}\n</PROMPT>\n"
                     f"<FEEDBACK>\n{m.gradient}\n</FEEDBACK>")
    return ctx.templates.text("textgrad.memory", past="\n".join(lines))


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
            prop.calls += [CallRecord.of("textgrad.gradient", gmsgs, g)]
            return prop
        parts = extract_tagged(g.text, "<FEEDBACK>", "</FEEDBACK>")
        grad = Gradient(id=f"{ctx.prefix}g1", text="\n\n".join(parts) if parts else g.text.strip(),
                        failure_ids=[r.id for r in rows if not r.correct], parent=prompt, flagged=not parts,
                        call=CallRecord.of("textgrad.gradient", gmsgs, g), feedback=feedback)
        prop.gradients.append(grad)

        # 3. the TGD update
        umsgs = tpl.messages("textgrad.update", role=self.role(ctx), prompt=prompt, gradient=grad.text,
                             memory=memory_text(ctx, memory or [], cfg.memory),
                             constraints=constraints_text(cfg.constraints))
        u = (await ctx.backward([Request(messages=umsgs, temperature=0.0 if ctx.attempt == 0 else 0.7,
                                         max_tokens=cfg.max_tokens, sample=ctx.attempt, tag="textgrad.update")],
                                phase="update"))[0]
        rec = CallRecord.of("textgrad.update", umsgs, u)
        new = extract_tagged(u.text, "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>") if u.ok else []
        new = [t for t in new if "the improved variable" not in t.lower()]
        if not new:
            prop.calls.append(rec)
            prop.note = ("The update model did not put a new prompt between <IMPROVED_VARIABLE> tags"
                         + (f" ({u.error})" if u.error else "") + ". Its raw reply is shown under the call; "
                         "edit a prompt by hand, or regenerate.")
            return prop
        if normalise(new[-1]) == normalise(prompt):
            prop.calls.append(rec)
            prop.note = "The update returned the prompt unchanged. Regenerate, or edit the prompt by hand."
            return prop
        prop.candidates.append(Candidate(id=f"{ctx.prefix}c1", prompt=new[-1], parent=prompt, origin="update",
                                         gradient_id=grad.id, call=rec))
        return prop


def dependent_rounds() -> int:
    """Forward, loss, gradient, update: the calls a step must wait for one after another."""
    return 4


"""A scripted fake ChatModel for unit and app tests (never used by core/).

Forward answers are right or wrong by a deterministic hash of (prompt, question) against a
"quality" that grows with how often the prompt says "evidence" — so edits that add the word
improve validation accuracy, and gates have something real to decide. Optimiser calls answer
in each meta-prompt's expected tags, unless `misbehave` says otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

from core.llm import Completion, ModelSpec, Request, register_provider

_GOLD: dict[str, tuple[str, list[str]]] = {}  # rendered question -> (gold, labels)


def learn_task(task) -> None:
    for split in task.splits.values():
        for ex in split:
            _GOLD[task.render(ex)] = (ex.label, list(task.labels))


_BUILTIN_LEARNT: list[bool] = []


def _builtin_gold() -> None:
    """Teach the fake every built-in question once (a custom task learnt earlier does not stand in for them)."""
    if _BUILTIN_LEARNT:
        return
    from core.tasks import load_task

    for name in ("pubmedqa", "medqa", "liar"):
        learn_task(load_task(name))
    _BUILTIN_LEARNT.append(True)


def _h(*parts: str) -> int:
    return int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:8], 16)


@dataclass
class FakeModel:
    spec: ModelSpec = field(default_factory=lambda: ModelSpec("fake", "scripted"))
    delay_s: float = 0.0
    base_quality: int = 45
    step_quality: int = 15
    hash_prompt: bool = True  # False: correctness ignores the prompt's wording (exact ties)
    misbehave: set[str] = field(default_factory=set)  # e.g. {"no-tags", "refuse", "empty-update"}
    calls: Counter = field(default_factory=Counter)
    closed: int = 0

    async def acomplete(self, req: Request) -> Completion:
        self.calls[req.tag or "other"] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = self.reply(req)
        tin = sum(len(c) for _, c in req.messages) // 4
        tout = len(text) // 4
        return Completion(text=text, input_tokens=tin, output_tokens=tout, cost_usd=(tin + 2 * tout) * 1e-6,
                          model=str(self.spec))

    async def aclose(self) -> None:
        self.closed += 1

    # ---- scripted replies ----
    def quality(self, prompt: str) -> int:
        return min(95, self.base_quality + self.step_quality * prompt.lower().count("evidence"))

    def reply(self, req: Request) -> str:
        system = next((c for r, c in req.messages if r == "system"), "")
        user = next((c for r, c in reversed(req.messages) if r == "user"), "")
        tag = req.tag
        if "refuse" in self.misbehave and tag != "forward":
            return "I'm sorry, but I can't help with that."
        if tag == "forward":
            return self.forward(system, user)
        if tag == "protegi.gradient":
            if "no-tags" in self.misbehave:
                return "The prompt is too vague about evidence."
            return "<START>The prompt does not tell the model to weigh the evidence.<END>"
        if tag == "protegi.edit":
            prompt = _between(user, 'My current prompt is:\n"', '"\n\nBut')
            if "no-tags" in self.misbehave:
                return f"{prompt} Weigh the evidence."
            reason = _between(user, "problem with this prompt is that ", "\n")
            return f"<START>{prompt} Weigh the evidence.{follows(reason)}<END>"
        if tag == "protegi.paraphrase":
            prompt = _between(user, "Input: ", "\n\nOutput:")
            return f"Output: {prompt} Think it through (variant {req.sample})."
        if tag == "textgrad.loss":
            return "The final answer is wrong: the model ignored the evidence in the context."
        if tag == "textgrad.gradient":
            return "<FEEDBACK>Tell the model to weigh the evidence before answering.</FEEDBACK>"
        if tag == "textgrad.update":
            if "empty-update" in self.misbehave:
                return "Here is a better prompt: be careful."
            prompt = _between(user, "<VARIABLE> ", " </VARIABLE>")
            suffix = "" if req.sample == 0 else f" (try {req.sample})"
            gradient = (re.findall(r"<FEEDBACK>(.*?)</FEEDBACK>", user, re.S) or [""])[-1]
            return f"<IMPROVED_VARIABLE>{prompt} Weigh the evidence.{follows(gradient)}{suffix}</IMPROVED_VARIABLE>"
        return "OK."

    def forward(self, system: str, user: str) -> str:
        _builtin_gold()
        gold, labels = _GOLD.get(user, (None, []))
        if gold is None:
            return "I am not sure."
        h = _h(system if self.hash_prompt else "", user)
        if h % 17 == 0:
            return "Hmm, it is hard to say from this abstract."  # unparsed
        if h % 100 < self.quality(system):
            return f"Looking at the study design and results.\nAnswer: {gold}"
        wrong = [lab for lab in labels if lab != gold]
        return f"The data point one way.\nAnswer: {wrong[h % len(wrong)]}"


FOLLOWS = {"p-value": "Quote the p-value before answering."}  # a reason naming the word -> the edit adds the sentence


def follows(reason: str) -> str:
    """What an edit or update adds for a reason (a gradient) that names one of FOLLOWS' words: how a person's
    gradient ("the answer ignored the p-value") gets candidates of its own; the fake's own gradients name none."""
    return "".join(f" {v}" for k, v in FOLLOWS.items() if k in reason.lower())


def _between(text: str, start: str, end: str) -> str:
    m = re.search(re.escape(start) + r"(.*?)" + re.escape(end), text, re.S)
    return m.group(1) if m else ""


def register() -> None:
    """`fake:<anything>` specs build a FakeModel. Called by tests/conftest.py, and in subprocesses by the
    test-only entry point in tests/plugins (group prompt_gradient_studio.providers)."""
    import os

    delay = float(os.environ.get("PGS_FAKE_DELAY", "0") or 0)
    register_provider("fake", lambda spec: FakeModel(spec=spec, delay_s=delay), price=(1.0, 2.0))  # as acomplete charges


def infer_tag(messages: list[dict]) -> str:
    """Which meta-prompt a raw chat request came from (for stub servers that reply like FakeModel)."""
    system = " ".join(m.get("content", "") for m in messages if m.get("role") == "system")
    user = " ".join(m.get("content", "") for m in messages if m.get("role") == "user")
    if "zero-shot classifier prompt" in user:
        return "protegi.gradient"
    if "improved prompts" in user and "zero-shot classifier" in user:
        return "protegi.edit"
    if user.startswith("Generate a variation of the following instruction"):
        return "protegi.paraphrase"
    if "meticulous evaluator" in system:
        return "textgrad.loss"
    if "gradient (feedback) engine" in system:
        return "textgrad.gradient"
    if "IMPROVED_VARIABLE" in system:
        return "textgrad.update"
    return "forward"


def stub_responder(fake: "FakeModel | None" = None):
    """A responder for tests/stub_server.py that answers every request as FakeModel would."""
    fake = fake or FakeModel()

    def respond(body: dict) -> str:
        msgs = list(body.get("messages", []))
        if body.get("system"):  # Anthropic puts the system prompt at the top level
            sys_text = body["system"] if isinstance(body["system"], str) else " ".join(
                b.get("text", "") for b in body["system"])
            msgs = [{"role": "system", "content": sys_text}] + msgs
        msgs = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else " ".join(
            b.get("text", "") for b in m["content"])} for m in msgs]
        req = Request(messages=tuple((m["role"], m["content"]) for m in msgs), tag=infer_tag(msgs),
                      sample=0, temperature=float(body.get("temperature", 0) or 0))
        return fake.reply(req)

    return respond


@dataclass
class TableModel(FakeModel):
    """Forward answers right exactly on the question ids listed for the system prompt (`table[prompt]`),
    wrong elsewhere; `answered` counts forward calls per (prompt, question id). Optimiser calls as FakeModel."""

    table: dict[str, set[str]] = field(default_factory=dict)
    answered: Counter = field(default_factory=Counter)
    _ids: dict[str, str] = field(default_factory=dict)

    def learn(self, task) -> "TableModel":
        learn_task(task)
        self._ids.update({task.render(ex): ex.id for split in task.splits.values() for ex in split})
        return self

    def forward(self, system: str, user: str) -> str:
        qid = self._ids.get(user)
        gold, labels = _GOLD.get(user, (None, []))
        if qid is None or gold is None:
            return "I am not sure."
        self.answered[system, qid] += 1
        if qid in self.table.get(system, set()):
            return f"Answer: {gold}"
        return f"Answer: {next(lab for lab in labels if lab != gold)}"


@dataclass
class MinibatchFake(FakeModel):
    """FakeModel whose critique and rewrite carry a hash of what they were shown, so seeds (other minibatches)
    give other prompts; which prompt scores better is left to the fake's hash, not rigged."""

    def reply(self, req):
        user = next((c for r, c in reversed(req.messages) if r == "user"), "")
        if req.tag == "textgrad.gradient":
            return f"<FEEDBACK>Weigh the evidence (case {_h(user) % 997}).</FEEDBACK>"
        if req.tag == "textgrad.update":
            prompt = _between(user, "<VARIABLE> ", " </VARIABLE>")
            return f"<IMPROVED_VARIABLE>{prompt} Weigh the evidence, note {_h(user) % 997}.</IMPROVED_VARIABLE>"
        return super().reply(req)

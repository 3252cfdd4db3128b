"""What a proposal is made of, with lineage: failures → gradients → candidates."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .llm import Completion


@dataclass
class CallRecord:
    """One optimiser call exactly as sent and as answered, for teaching and for the bundle."""

    template: str
    messages: list[list[str]]
    reply: str
    key: str = ""
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False
    finish_reason: str = ""  # "length" / "max_tokens": the reply was cut off

    @staticmethod
    def of(template: str, messages, c: Completion) -> "CallRecord":
        return CallRecord(template, [list(m) for m in messages], c.text, c.key, c.error,
                          c.input_tokens, c.output_tokens, c.cost_usd, c.cached, c.finish_reason)


@dataclass
class Gradient:
    id: str
    text: str
    failure_ids: list[str]  # the examples it came from
    parent: str  # the prompt it criticises
    flagged: bool = False  # the reply had no tags: the whole text was used
    call: CallRecord | None = None
    feedback: dict[str, str] = field(default_factory=dict)  # textgrad: per-example loss text by id


@dataclass
class Candidate:
    id: str
    prompt: str
    parent: str  # the prompt it was derived from
    origin: str  # "edit" | "paraphrase" | "update" | "manual" | "beam"
    gradient_id: str | None = None
    source_id: str | None = None  # paraphrase: the candidate it rephrases
    flagged: bool = False
    call: CallRecord | None = None
    score: float | None = None  # bandit mean on train samples
    pulls: int = 0
    flags: list[str] = field(default_factory=list)  # "cut off", "breaks constraint: ...", "leaks ... data"
    leaks: list[str] = field(default_factory=list)  # splits whose question text it contains ("train", "val", "test")


@dataclass
class Proposal:
    gradients: list[Gradient] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)  # other calls (textgrad losses)
    bandit: dict | None = None  # algorithm, spent, ranking, rounds
    note: str | None = None  # e.g. "no failures in this minibatch"

    def candidate(self, cid: str) -> Candidate:
        for c in self.candidates:
            if c.id == cid:
                return c
        raise KeyError(f"No candidate '{cid}' in this step.")

    def all_calls(self) -> list[CallRecord]:
        out = list(self.calls)
        out += [g.call for g in self.gradients if g.call]
        out += [c.call for c in self.candidates if c.call]
        return out

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "Proposal":
        def call(x):
            return CallRecord(**x) if x else None

        return Proposal(
            gradients=[Gradient(**{**g, "call": call(g.get("call"))}) for g in d.get("gradients", [])],
            candidates=[Candidate(**{**c, "call": call(c.get("call"))}) for c in d.get("candidates", [])],
            calls=[CallRecord(**c) for c in d.get("calls", [])],
            bandit=d.get("bandit"), note=d.get("note"))

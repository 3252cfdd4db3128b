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
    origin: str  # "edit" | "paraphrase" | "update" | "manual" | "beam" | "person" (from the person's gradient)
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


CALL_NAMES = {
    "protegi.gradient": "gradient (why the prompt failed)", "protegi.edit": "edit (a prompt fixing one reason)",
    "protegi.paraphrase": "paraphrase (a variation of an edit)", "textgrad.loss": "per-question feedback (the loss)",
    "textgrad.gradient": "gradient (feedback on the prompt)", "textgrad.update": "update (the improved prompt)",
}


def call_name(template: object) -> str:
    """What an optimiser call is for, in words ("gradient (why the prompt failed)"), not its template id."""
    return CALL_NAMES.get(str(template), str(template))


@dataclass
class Verdict:
    """Who decided a step: the gate's verdict, the final outcome, and whether the person overrode the gate."""

    step: int
    action: str | None = None  # the person's decision: accept | edit | reject | skip
    gate_verdict: bool | None = None  # None: no gate recorded (not validated, or rejected before it)
    accepted: bool | None = None
    override: bool = False
    validated: bool = False

    def text(self) -> str:
        """'rejected by the gate, accepted by you', 'accepted by the gate', 'rejected by you', …"""
        if self.gate_verdict is not None and self.accepted is not None:
            gate_word = "accepted" if self.gate_verdict else "rejected"
            if self.override:
                return f"{gate_word} by the gate, {'accepted' if self.accepted else 'rejected'} by you"
            return f"{gate_word} by the gate"
        if self.action == "reject":
            return "rejected by you (no candidate taken)"
        if self.action == "skip":
            return "skipped by you"
        if self.action in ("accept", "edit"):
            return "validated, waiting for you to confirm the gate" if self.validated else "chosen, not yet validated"
        return "no decision yet"


def verdicts(events: list[dict]) -> dict[int, Verdict]:
    """Per step index, from a session's events: the last decision and gate (a regenerated attempt replaces both)."""
    out: dict[int, Verdict] = {}
    for ev in events:
        t, step = ev.get("type"), ev.get("step")
        if not isinstance(step, int):
            continue
        if t == "step_started":
            out[step] = Verdict(step)
        elif t == "decision":
            out[step] = Verdict(step, action=ev.get("action"))
        elif t == "validation":
            out.setdefault(step, Verdict(step)).validated = True
        elif t == "gate":
            v = out.setdefault(step, Verdict(step))
            v.gate_verdict, v.accepted = bool(ev.get("verdict")), bool(ev.get("accepted"))
            v.override = bool(ev.get("override"))
    return out

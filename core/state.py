"""What a session's events add up to: `fold(events, task) -> SessionState`, pure (no files, no models).

States of the current step: (none) -> proposed -> decided -> validated -> (gate) -> done. The live session
applies each event it writes with `apply`, so its state always equals the fold of its log.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from . import candidate_checks as checks
from . import events as E
from . import person_marks as marks
from .bundle_schema import SchemaError
from .config import SessionConfig, SessionError
from .engine import Spend, normalise
from .evaluate import EvalReport
from .gate import GateResult
from .lineage import Proposal
from .tasks import Example, Task
from .textgrad import MemoryItem


@dataclass
class Version:
    number: int
    prompt: str
    step: int
    report: EvalReport
    origin: str  # "seed" | "candidate" | "edit" | "revert"
    reverted_to: int | None = None  # origin "revert": the version whose prompt this one takes

    @property
    def accuracy(self) -> float:
        return self.report.accuracy


@dataclass
class Step:
    index: int
    attempt: int
    parent_version: int
    beam: list[str]
    minibatch_ids: list[str]
    forward: list[EvalReport] = field(default_factory=list)
    proposal: Proposal | None = None
    decision: dict | None = None  # {"action", "candidate", "prompt"}
    candidate_report: EvalReport | None = None
    current_report: EvalReport | None = None
    gate: GateResult | None = None
    outcome: str | None = None  # "accepted" | "rejected" | "skipped"
    spend: Spend = field(default_factory=Spend)
    retries: int = 0  # 'proposal_retried' events of this attempt

    @property
    def failed_calls(self) -> list:
        """The proposal's optimiser calls that failed (what "Retry failed calls" sends again)."""
        return [c for c in self.proposal.all_calls() if c.error] if self.proposal else []

    @property
    def status(self) -> str:
        if self.outcome:
            return "done"
        if self.gate is not None:
            return "validated"
        if self.decision is not None:
            return "decided"
        if self.proposal is not None:
            return "proposed"
        return "started"


class EventDoesNotFit(ValueError):
    """Event `n` (1-based) is malformed or does not fit the events before it."""

    def __init__(self, n: int, type_: str, why: str):
        super().__init__(f"event {n} ('{type_}') {why}")
        self.n, self.type, self.why = n, type_, why


@dataclass
class SessionState:
    """A session as its events describe it; `task` is the one its config names, loaded by the caller."""

    config: SessionConfig | None = None
    task: Task | None = field(default=None, compare=False, repr=False)
    versions: list[Version] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    spend: Spend = field(default_factory=Spend)
    stopped: str | None = None
    auto: dict | None = None  # the automatic run in progress: {"steps", "policy"}
    bundle_events: int | None = None  # imported: how many of the events came from the bundle
    servers_confirmed: bool = True  # False for an imported session until the user names its servers
    events: list[dict] = field(default_factory=list)
    disputes: list[marks.Dispute] = field(default_factory=list)  # every 'label_disputed' event, in order
    locked: list[str] = field(default_factory=list)  # locked sentences, whitespace-normalised
    _inputs: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    # ---------- where the session is ----------
    @property
    def current(self) -> Version:
        if not self.versions:
            raise SessionError("Score the seed prompt first (the baseline).")
        return self.versions[-1]

    @property
    def step(self) -> Step | None:
        """The open step (not yet done), if any."""
        return self.steps[-1] if self.steps and self.steps[-1].outcome is None else None

    @property
    def status(self) -> str:
        if not self.versions:
            return "new"
        if self.stopped:
            return "stopped"
        return self.step.status if self.step else "ready"

    @property
    def next_step_index(self) -> int:
        """The index of the step to start or continue: the open one, else one past the last."""
        if self.step is not None:
            return self.step.index
        return self.steps[-1].index + 1 if self.steps else 1

    @property
    def finished_steps(self) -> int:
        return sum(1 for s in self.steps if s.outcome)

    def rejections_in_a_row(self) -> int:
        n = 0
        for st in reversed(self.steps):
            if st.outcome == "accepted":
                break
            if st.outcome in ("rejected", "skipped"):
                n += 1
        return n

    # ---------- what the next phase works on ----------
    def val_examples(self) -> list[Example]:
        """The validation questions a gate asks: the session's slice, without the excluded questions."""
        val = self.task.split("val")
        limit = self.config.val_limit or getattr(self.config.engine_config(), "val_questions", None)
        val = val[:limit] if limit else val
        val = val[: self.config.gate_cap] if self.config.policy == "adaptive" else val
        out = self.excluded()
        return [e for e in val if e.id not in out] if out else val

    def train_examples(self) -> list[Example]:
        """The training questions minibatches and the bandit sample from, without the excluded questions."""
        train, out = self.task.split("train"), self.excluded()
        return [e for e in train if e.id not in out] if out else train

    def excluded(self) -> set[str]:
        return marks.excluded_ids(self.disputes)

    def active_locks(self) -> list[str]:
        """The locked sentences the current prompt holds, in its order (a lock on a sentence gone is moot)."""
        if not self.locked or not self.versions:
            return []
        return [s for _, s in marks.active_locks(self.locked, self.current.prompt)]

    def beam(self) -> list[str]:
        """Prompts to expand next: the current prompt, then (ProTeGi) the best other screened prompts."""
        cur = self.current.prompt
        beam = [cur]
        if self.config.method != "protegi":
            return beam
        size = self.config.engine_config().beam
        last = next((s for s in reversed(self.steps) if s.outcome and s.proposal and s.proposal.bandit), None)
        if last is not None and last.decision and last.decision.get("action") != "reject":
            for p in last.proposal.bandit.get("ranking", []):
                if len(beam) >= size:
                    break
                if normalise(p) not in {normalise(b) for b in beam}:
                    beam.append(p)
        return beam

    def memory(self) -> list[MemoryItem]:
        out = []
        for st in self.steps:
            if st.proposal and st.proposal.gradients and st.decision and st.decision.get("prompt"):
                acc = st.candidate_report.accuracy if st.candidate_report else None
                g = st.proposal.gradients[0]  # the feedback on the step's parent, from which the revision came
                out.append(MemoryItem(st.decision["prompt"], acc, g.text, st.outcome == "accepted", parent=g.parent))
        return out

    def known_current(self) -> dict[str, Any]:
        """The current prompt's validation answers already recorded (its own and earlier gates' reports)."""
        prompt, known = self.current.prompt, {}
        reports = [self.current.report] + [r for st in self.steps for r in (st.current_report, st.candidate_report) if r]
        for rep in reports:
            if rep.prompt == prompt:
                known.update({r.id: r for r in rep.rows if not r.error})
        return known

    def heldout_leaks(self, prompt: str) -> list[str]:
        """Validation/test splits whose question text the prompt contains: such a prompt fails the gate
        unless the person overrides it."""
        return [s for s in checks.leaked_splits(prompt, self.task) if s in ("val", "test")]

    def servers_when(self, kind: str, step: int | None = None, attempt: int | None = None) -> tuple[tuple, tuple]:
        """((forward, url), (backward, url)) in effect when the last recorded `kind` event (of this step and
        attempt) was written; the current ones when there is none. Replay keys its responses with them."""
        c = self.events[0]["config"]
        now = ((c["forward"], c.get("forward_base_url")), (c["backward"], c.get("backward_base_url")))
        found = None
        for ev in self.events[1:]:
            if ev["type"] == E.REPOINTED:
                now = ((ev["forward"], ev.get("forward_base_url")), (ev["backward"], ev.get("backward_base_url")))
            elif ev["type"] == kind and (step is None or ev.get("step") == step) and (
                    attempt is None or ev.get("attempt") == attempt):
                found = now
        cfg = self.config
        return found or ((cfg.forward, cfg.forward_base_url), (cfg.backward, cfg.backward_base_url))

    # ---------- reports as recorded ----------
    def report(self, d: dict) -> EvalReport:
        """A recorded report with each row's question filled in from the task."""
        rep = EvalReport.from_json({**d, "rows": [{"input": "", **r} for r in d["rows"]]})
        if self.task is not None:
            for row in rep.rows:
                if not row.input:
                    try:
                        row.input = self._rendered(row.id)
                    except KeyError:
                        pass
        return rep

    def _rendered(self, eid: str) -> str:
        """A question as the model saw it, rendered once and shared by every report that shows it (50 steps
        of validation would otherwise keep 5,000 copies of the same 50 texts alive)."""
        text = self._inputs.get(eid)
        if text is None:
            text = self._inputs[eid] = self.task.render(self.task.example(eid))
        return text


def compact_report(r: EvalReport) -> dict:
    """A report as an event stores it: without the question texts (derivable from the task)."""
    d = r.to_json()
    for row in d["rows"]:
        row.pop("input", None)
    return d


def fold(events: list[dict], task: Task | None, *, checked: bool = False) -> SessionState:
    """The state the events add up to (events in the current schema, see events.upgrade). Pure: the same
    events and task give an equal state. EventDoesNotFit names the first event that does not fit; `checked`
    skips the field-type checks (events already checked, or a reader's look at odd ones)."""
    state = SessionState(task=task)
    for ev in events:
        apply(state, ev, checked=checked)
    return state


def apply(state: SessionState, ev: dict, *, checked: bool = False) -> None:
    """Add one event to the state (in place); its fields are checked against the registry unless `checked`."""
    n = len(state.events) + 1
    t = ev.get("type") if isinstance(ev, dict) else None
    try:
        if not checked:
            E.check(ev)
        _apply(state, E.parse(ev), ev)
    except SchemaError as exc:
        raise EventDoesNotFit(n, str(t)[:40], f"is malformed: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise EventDoesNotFit(n, str(t)[:40], f"is malformed or does not fit the events before it "
                                              f"({type(exc).__name__})") from None


def _apply(s: SessionState, e: E.Event, raw: dict) -> None:
    if isinstance(e, E.Created):
        if s.events:
            raise ValueError("a second 'created' event")
        s.config = SessionConfig.from_json(e.config)
        if e.imported:  # written by import_bundle, never by the bundle: events before its count are the bundle's
            n = e.imported.get("events") if isinstance(e.imported, dict) else None
            s.bundle_events = n if isinstance(n, int) and n > 0 else 1
            s.servers_confirmed = False
    elif s.config is None:
        raise ValueError("an event before 'created'")
    s.events.append(raw)
    if isinstance(e, E.Repointed):
        if not (isinstance(e.forward, str) and isinstance(e.backward, str)):
            raise ValueError("repointed: specs and base URLs must be text")
        s.config = replace(s.config, forward=e.forward, backward=e.backward, forward_base_url=e.forward_base_url,
                           backward_base_url=e.backward_base_url,
                           prices=e.prices if isinstance(e.prices, dict) else s.config.prices)
        if s.bundle_events is None or len(s.events) > s.bundle_events:
            s.servers_confirmed = True  # the user named them here, after the import
    elif isinstance(e, E.Baseline):
        s.versions = [Version(0, e.prompt, 0, s.report(e.report), "seed")]
    elif isinstance(e, E.StepStarted):
        step = Step(e.step, e.attempt, e.parent_version, e.beam, e.minibatch_ids)
        if s.steps and s.steps[-1].index == step.index and s.steps[-1].outcome is None:
            step.spend = s.steps[-1].spend  # a regenerated attempt keeps what the step spent so far
            s.steps[-1] = step
        else:
            s.steps.append(step)
    elif isinstance(e, E.Forward):
        s.steps[-1].forward = [s.report(r) for r in e.reports]
    elif isinstance(e, E.ProposalMade):
        s.steps[-1].proposal = Proposal.from_json(e.proposal)
    elif isinstance(e, E.ProposalRetried):
        st = s.steps[-1]
        if st.outcome is not None or st.index != e.step or st.attempt != e.attempt or st.proposal is None:
            raise ValueError("a retry of a step that is not open with a proposal")
        st.proposal = Proposal.from_json(e.proposal)
        st.retries += 1
    elif isinstance(e, E.Reverted):
        if s.step is not None or not 0 <= e.to_version < len(s.versions):
            raise ValueError("a revert during a step, or to a version that does not exist")
        old = s.versions[e.to_version]
        s.versions.append(Version(len(s.versions), old.prompt, s.steps[-1].index if s.steps else 0, old.report,
                                  "revert", reverted_to=old.number))
    elif isinstance(e, E.Decision):
        s.steps[-1].decision = {"action": e.action, "candidate": e.candidate, "prompt": e.prompt}
        if e.override:
            s.steps[-1].decision["override"] = True
        if e.action in ("reject", "skip"):
            s.steps[-1].outcome = "rejected" if e.action == "reject" else "skipped"
    elif isinstance(e, E.Validation):
        st = s.steps[-1]
        st.candidate_report = s.report(e.candidate_report)
        st.current_report = s.report(e.current_report)
        st.gate = GateResult.from_json(e.gate)
    elif isinstance(e, E.Gate):
        st = s.steps[-1]
        st.outcome = "accepted" if e.accepted else "rejected"
        if e.accepted:
            d = st.decision or {}
            s.versions.append(Version(len(s.versions), d["prompt"], st.index, st.candidate_report,
                                      "edit" if d.get("action") == "edit" else "candidate"))
    elif isinstance(e, E.Auto):
        s.auto = {"steps": e.steps, "policy": e.policy} if e.steps else None
    elif isinstance(e, E.Stopped):
        s.stopped = e.reason
        s.auto = None
    elif isinstance(e, E.LabelDisputed):
        s.disputes.append(marks.Dispute(e.question, e.reason, e.exclude, s.next_step_index, e.ts))
    elif isinstance(e, E.SentencesUnlocked):  # before SentencesLocked: it is a subclass
        gone = {marks.normalise_sentence(x) for x in e.sentences}
        s.locked = [x for x in s.locked if x not in gone]
    elif isinstance(e, E.SentencesLocked):
        s.locked += [k for k in dict.fromkeys(marks.normalise_sentence(x) for x in e.sentences) if k not in s.locked]
    if e.spend is not None:
        sp = Spend(**e.spend)
        s.spend.merge(sp)
        if s.steps and (isinstance(e, (E.Forward, E.ProposalMade, E.ProposalRetried, E.Validation)) or (
                isinstance(e, E.SpendOnly) and e.step == s.steps[-1].index and s.steps[-1].outcome is None)):
            s.steps[-1].spend.merge(sp)

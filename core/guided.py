"""A person at every node of a step (issue 12): continue a step paused after its forward pass, write feedback on
a minibatch answer (the loss), and apply a gradient of one's own (edited from the model's, or from scratch).

Each action is one event ('paused' is written by the step runner; 'feedback', 'proposal', 'person_gradient'
here), so resume, export, import and offline replay reproduce it. `replay_person_actions` is replay's half.
"""

from __future__ import annotations

from typing import Any

from . import candidate_checks as checks
from . import estimate
from . import events as E
from .config import SessionError
from .engine import PhaseProgress, normalise
from .lineage import Candidate, Gradient
from .protegi import ProtegiEngine
from .runner import CancelToken
from .state import Step
from .textgrad import TextGradEngine

FEEDBACK_CHARS = 4000  # the longest feedback on one answer
GRADIENT_CHARS = 8000  # the longest gradient a person may write


def _engine(cfg) -> ProtegiEngine | TextGradEngine:
    ec = cfg.engine_config()
    return ProtegiEngine(ec) if cfg.method == "protegi" else TextGradEngine(ec)


def _open_step(runner: Any, allowed: tuple[str, ...], what: str) -> Step:
    st = runner.state.step
    if st is None or st.status not in allowed:
        now = f"step {st.index} is {st.status}" if st is not None else "no step is open"
        raise SessionError(f"Cannot {what}: {now}.")
    return st


def continue_step(runner: Any, *, models: Any = None, progress: PhaseProgress | None = None,
                  cancel: CancelToken | None = None) -> Step:
    """Run the proposal of a step paused after its forward pass, from the recorded answers and the person's
    feedback; logged as the usual 'proposal' event."""
    s = runner.state
    st = _open_step(runner, ("answered",), "continue")
    m = runner.models(models)
    runner.check_budget(estimate.step(s, cached=m.cached, price_overrides=m.price_overrides), m)
    ctx = runner.context(m, st.index, st.attempt, cancel, progress)
    engine, cfg = _engine(s.config), s.config.engine_config()
    beam, reports, feedback = list(st.beam), list(st.forward), dict(st.feedback)

    async def go():
        if isinstance(engine, TextGradEngine):
            return await engine.propose(ctx, beam, reports, memory=s.memory(), feedback=feedback)
        return await engine.propose(ctx, beam, reports, feedback=feedback)

    prop = runner.run(m, go, ctx, "step")
    checks.review(prop, s.task, getattr(cfg, "constraints", []))
    with runner.s.lock:
        if runner.state.step is not st or st.proposal is not None:
            raise SessionError(f"Step {st.index} changed while its proposal was being made; look at it again.")
        runner.s.emit(E.ProposalMade(step=st.index, proposal=prop.to_json(), spend=ctx.spend.to_json(),
                                     keys=ctx.keys))
    return s.steps[-1]


def add_feedback(runner: Any, question_id: str, text: str) -> Step:
    """The person's feedback on one minibatch answer; empty text withdraws it. Used by the proposal (or the
    person's gradient) that runs after it."""
    with runner.s.lock:
        st = _open_step(runner, ("answered", "proposed"), "give feedback")
        if question_id not in st.minibatch_ids:
            raise SessionError(f"Question '{str(question_id)[:60]}' is not in step {st.index}'s minibatch "
                               f"({', '.join(st.minibatch_ids[:5])}{', …' if len(st.minibatch_ids) > 5 else ''}).")
        text = (text or "").strip()
        if len(text) > FEEDBACK_CHARS:
            raise SessionError(f"The feedback is {len(text)} characters; the limit is {FEEDBACK_CHARS}.")
        if not text and question_id not in st.feedback:
            raise SessionError("The feedback is empty.")
        runner.s.emit(E.Feedback(step=st.index, question=question_id, text=text))
        return st


def apply_gradient(runner: Any, text: str, replace: str | None = None, *, models: Any = None,
                   progress: PhaseProgress | None = None, cancel: CancelToken | None = None) -> list[Candidate]:
    """The person's gradient (`replace`: the gradient it edits) through the edit call, paraphrases and bandit
    (ProTeGi) or the update call (TextGrad); returns the new candidates, whose origin is 'person'."""
    s = runner.state
    text = (text or "").strip()
    if not text:
        raise SessionError("The gradient is empty: write what is wrong with the prompt.")
    if len(text) > GRADIENT_CHARS:
        raise SessionError(f"The gradient is {len(text)} characters; the limit is {GRADIENT_CHARS}.")
    st = _open_step(runner, ("answered", "proposed"), "apply a gradient")
    base: Gradient | None = None
    if replace:
        base = next((g for g in (st.proposal.gradients if st.proposal else []) if g.id == replace), None)
        if base is None:
            raise SessionError(f"No gradient '{replace[:60]}' in step {st.index}.")
    parent = base.parent if base else st.beam[0]
    report = next((r for p, r in zip(st.beam, st.forward) if p == parent), st.forward[0])
    m = runner.models(models)
    n = len(st.person_gradients) + 1
    cfg = s.config.engine_config()
    runner.check_budget({"calls": 1 + getattr(cfg, "paraphrases", 0), "cost_usd": estimate.cost(
        s, 1 + getattr(cfg, "paraphrases", 0), forward=False, price_overrides=m.price_overrides)}, m)
    ctx = runner.context(m, st.index, st.attempt, cancel, progress)
    ctx.prefix = f"s{st.index}.h{n}."  # the person's n-th gradient of this step: its own ids
    engine = _engine(s.config)
    known = list(st.beam) + [c.prompt for c in (st.proposal.candidates if st.proposal else [])]
    feedback = dict(st.feedback)

    async def go():
        if isinstance(engine, TextGradEngine):
            return await engine.propose(ctx, [parent], [report], memory=s.memory(), feedback=feedback,
                                        gradient_text=text)
        by_id = {r.id: r for r in report.rows if not r.error}
        errors = ([by_id[i] for i in base.failure_ids if i in by_id] if base else  # the group it edits, in order
                  [r for r in by_id.values() if not r.correct][: engine.cfg.errors_per_group])
        return await engine.apply_gradient(ctx, list(st.beam), parent, errors, text, known, feedback, repeat=n)

    prop = runner.run(m, go, ctx, "step")
    if isinstance(engine, TextGradEngine):
        seen = {normalise(p) for p in known}
        prop.candidates = [c for c in prop.candidates if normalise(c.prompt) not in seen]
        checks.review(prop, s.task, getattr(cfg, "constraints", []))
        if not prop.candidates:
            prop.note = "The update made no new prompt from your gradient. Reword it, or edit the prompt by hand."
    with runner.s.lock:
        if runner.state.step is not st or st.status not in ("answered", "proposed"):
            raise SessionError(f"Step {st.index} changed while your gradient was being applied; look at it again.")
        runner.s.emit(E.PersonGradient(step=st.index, text=text, replace=replace, proposal=prop.to_json(),
                                       spend=ctx.spend.to_json(), keys=ctx.keys))
    ids = {c.id for c in prop.candidates}
    return [c for c in s.steps[-1].proposal.candidates if c.id in ids]


def person_events(events: list[dict], step: int, attempt: int) -> list[dict]:
    """The recorded 'paused', 'feedback', 'proposal' and 'person_gradient' events of one attempt of a step,
    in order (up to its decision)."""
    out, here = [], False
    for ev in events:
        t = ev.get("type")
        if t == E.STEP_STARTED:
            here = (ev.get("step"), ev.get("attempt")) == (step, attempt)
            if here:
                out = []  # a crash-restarted attempt keeps only its last run
        elif here and t == E.DECISION:
            here = False
        elif here and t in (E.PAUSED, E.FEEDBACK, E.PROPOSAL_MADE, E.PERSON_GRADIENT):
            out.append(ev)
    return out


def replay_person_actions(session: Any, recorded_events: list[dict], step: int, attempt: int,
                          before_call: Any = None) -> Step:
    """Start one attempt of a step in `session` as the recording did: paused if it paused, then the person's
    feedback, the continued proposal and the person's gradients, in the recorded order."""
    evs = person_events(recorded_events, step, attempt)
    paused = any(ev["type"] == E.PAUSED for ev in evs)
    st = session.folded.step
    if st is None or st.attempt != attempt or st.status not in ("answered", "proposed"):
        regenerate = st is not None and st.index == step and st.status in ("answered", "proposed")
        st = session.start_step(pause_after_forward=paused, regenerate=regenerate)
    for ev in evs:
        t = ev["type"]
        if t == E.FEEDBACK:
            session.add_feedback(ev["question"], ev["text"])
        elif t == E.PROPOSAL_MADE and paused:
            session.continue_step()
        elif t == E.PERSON_GRADIENT:
            session.apply_gradient(ev["text"], replace=ev.get("replace"))
    return session.folded.steps[-1]

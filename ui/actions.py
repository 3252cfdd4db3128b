"""What the buttons do: start session jobs (baseline, step, validation, auto-run, evaluation)."""

from __future__ import annotations

import streamlit as st

from core.session import Models, Session, Step
from core.testlock import Entry, score_split, version_entries

from . import state
from .jobs import Job, JobBusy, registry
from .render import md_escape


class _JobSession:
    """The shared session as one job sees it: every read and write goes to the session, but `models` are the
    job's own (for code that reads `session.models`, e.g. core/testlock.py); the session is not changed."""

    def __init__(self, session: Session, models: Models):
        self._session, self.models = session, models

    def __getattr__(self, name: str):
        return getattr(self._session, name)


def _start(s: Session, kind: str, label: str, work) -> Job | None:
    """Run work(job, models) as a job with fresh models of its own; errors shown with st.error."""
    if not s.servers_confirmed:
        st.error("Confirm the servers of this imported session on the Optimize page first.", icon=":material/shield:")
        return None
    problems = state.missing_for(s.config)
    if problems:
        st.error("Cannot run models: " + md_escape("; ".join(problems)) + ".", icon=":material/key:")
        return None
    running: dict[str, Job] = {}  # the job, once it exists: SDK retries and streamed text are shown with it
    try:
        models = state.models_for(s.config, on_retry=lambda n: running["job"].on_retry(n) if running else None,
                                  on_text=lambda t: running["job"].progress.show_text(t) if running else None)
    except Exception as exc:  # noqa: BLE001 - a bad spec or provider is the user's to fix
        st.error(f"Cannot build the models: {md_escape(exc)}", icon=":material/error:")
        return None

    def run(job: Job):
        running["job"] = job
        return work(job, models)

    try:
        job = registry().start(kind, label, state.owner(s), run, secrets=state.secrets())
    except JobBusy as exc:
        st.warning(md_escape(exc), icon=":material/hourglass_top:")
        return None
    st.session_state.setdefault("jobs", {})[s.id] = job.id
    return job


def start_baseline(s: Session) -> Job | None:
    n = len(s.val_examples())
    return _start(s, "baseline", f"Baseline: seed prompt on {n} validation questions",
                  lambda job, m: s.run_baseline(models=m, progress=job.progress, cancel=job.cancel))


def start_step(s: Session, regenerate: bool = False, pause: bool = False) -> Job | None:
    """A step's minibatch and proposal; `pause`: only the minibatch answers, until the person continues."""
    label = f"Step {s.next_step_index}: {'regenerate' if regenerate else 'minibatch and proposal'}"
    if pause:
        label = f"Step {s.next_step_index}: {'regenerate' if regenerate else 'the minibatch'} (the answers only)"
    return _start(s, "step", label, lambda job, m: s.start_step(models=m, progress=job.progress, cancel=job.cancel,
                                                               regenerate=regenerate, pause_after_forward=pause))


def start_continue(s: Session) -> Job | None:
    """The gradients and candidates of a step paused after its answers."""
    return _start(s, "step", f"Step {s.next_step_index}: gradients and candidates",
                  lambda job, m: s.continue_step(models=m, progress=job.progress, cancel=job.cancel))


def start_person_gradient(s: Session, text: str, replace: str | None) -> Job | None:
    """The person's gradient through the edit (ProTeGi) or update (TextGrad) call."""
    return _start(s, "step", f"Step {s.next_step_index}: candidates from your gradient",
                  lambda job, m: s.apply_gradient(text, replace, models=m, progress=job.progress,
                                                  cancel=job.cancel))


def start_retry(s: Session) -> Job | None:
    st_ = s.step
    n = len(st_.failed_calls) if st_ else 0
    return _start(s, "step", f"Step {st_.index if st_ else '?'}: retry {n} failed call{'s' if n != 1 else ''}",
                  lambda job, m: s.retry_failed(models=m, progress=job.progress, cancel=job.cancel))


def start_validate(s: Session) -> Job | None:
    st_ = s.step
    n = len(s.val_examples())
    return _start(s, "validate", f"Step {st_.index if st_ else '?'}: validation on {n} questions",
                  lambda job, m: s.validate(models=m, progress=job.progress, cancel=job.cancel))


def prevalidate_label(s: Session) -> str:
    """The label of the open proposal's validate-ahead job (one per step attempt)."""
    st_ = s.step
    return f"Step {st_.index} (attempt {st_.attempt + 1}): validating the candidates ahead" if st_ else ""


def start_prevalidate(s: Session) -> Job | None:
    """Validate the open proposal's candidates in the background while the person reads them."""
    return _start(s, "prevalidate", prevalidate_label(s),
                  lambda job, m: s.prevalidate(models=m, progress=job.progress, cancel=job.cancel))


def stop_prevalidate(s: Session, timeout_s: float = 30.0) -> None:
    """Before a decision: stop a validate-ahead job still running (its finished calls stay cached and logged)."""
    job = registry().active(state.owner(s))
    if job is not None and job.kind == "prevalidate":
        job.cancel.cancel()
        if job.thread is not None:
            job.thread.join(timeout_s)


def start_auto(s: Session, steps: int) -> Job | None:
    def work(job: Job, models: Models):
        def on_step(sess: Session, step: Step) -> None:
            job.partial.append({"step": step.index, "outcome": step.outcome,
                                "val": step.gate.new_accuracy if step.gate else None})
        return s.run_auto(steps, models=models, on_step=on_step, progress=job.progress, cancel=job.cancel)

    return _start(s, "auto", f"Auto-run ({s.config.policy} gate)", work)


def start_evaluate(s: Session, entries: list[Entry], limit: int | None) -> Job | None:
    """Score entries on the sealed test split: the person has confirmed the reveal, which is logged."""
    n = min(limit or len(s.task.split("test")), len(s.task.split("test")))
    if not n:
        st.error("This task has no test questions.", icon=":material/error:")
        return None

    def work(job: Job, models: Models):
        return score_split(_JobSession(s, models), entries, "test", limit=limit, reveal=True,
                           on_progress=job.progress, cancel=job.cancel)

    return _start(s, "evaluate", f"Evaluate {len(entries)} prompt(s) on {n} test questions (revealed)", work)


def start_confirmation(s: Session) -> Job | None:
    """Score every version on the held-out confirmation slice (never used by a gate); logged."""
    entries = version_entries(s, [v.number for v in s.versions])
    n = len(s.task.splits.get("confirmation", []))

    def work(job: Job, models: Models):
        return score_split(_JobSession(s, models), entries, "confirmation", on_progress=job.progress,
                           cancel=job.cancel)

    return _start(s, "confirmation", f"Confirmation: {len(entries)} version(s) on {n} held-out questions", work)

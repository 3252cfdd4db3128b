"""The sealed test split in the app: the reveal button with its warning (Evaluate), the "chosen after looking at
test" marks and the overfitting view (History). State changes happen in the button callbacks."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.session import Session
from core.testlock import AFTER_TEST, Entry, confirmation_rows, reveals, steps_after_reveal

from . import actions, state
from .jobs import job_panel
from .render import md_escape, pct

_PENDING = "reveal_pending"  # st.session_state: the session id whose reveal awaits confirmation


def _ask(sid: str) -> None:
    st.session_state[_PENDING] = sid


def _cancel() -> None:
    st.session_state.pop(_PENDING, None)


def _reveal(s: Session, entries: list[Entry], limit: int | None) -> None:
    st.session_state.pop(_PENDING, None)
    actions.start_evaluate(s, entries, limit)


def reveal_controls(s: Session, readonly: str | None, entries: list[Entry], limit: int | None, can_run: bool) -> None:
    """'Evaluate on test' asks first; the warning's 'Reveal and record' button runs and logs the reveal."""
    looked = len(reveals(s))
    if readonly:
        st.caption("Read-only: a look at test must be recorded in the session's log, so scoring on test is off here.")
    st.button("Evaluate on test", type="primary", key="run_eval", disabled=not can_run or bool(readonly),
              on_click=_ask, args=(s.id,))
    if st.session_state.get(_PENDING) != s.id or not can_run or readonly:
        return
    versions = ", ".join(e.name for e in entries if e.version is not None) or "no version (baselines only)"
    st.warning(f"**The test split is sealed.** Scoring on it reveals how {md_escape(versions)} do on test. The look "
               "is recorded in the session's log and the report, and every step decided after it is marked "
               f"“{AFTER_TEST}” in History. This session has looked at test {looked} time(s) so far. Choose between "
               "versions on validation (and the confirmation slice in History), not on test.",
               icon=":material/visibility:")
    c = st.columns([1, 1, 3])
    c[0].button("Reveal and record", type="primary", key="reveal_test", on_click=_reveal, args=(s, entries, limit))
    c[1].button("Cancel", key="reveal_cancel", on_click=_cancel)


def after_test_steps_note(s: Session) -> None:
    """A caption naming the steps decided after a look at test (nothing when test is still sealed)."""
    after = sorted(steps_after_reveal(s))
    n = len(reveals(s))
    if n:
        st.warning(f"Test was looked at {n} time(s). " + (
            f"Steps {', '.join(map(str, after))}: {AFTER_TEST}." if after else "No step was decided after that."),
            icon=":material/visibility:")


def _score_confirmation(s: Session) -> None:
    actions.start_confirmation(s)


def confirmation_figure(rows) -> go.Figure:
    """Validation and confirmation accuracy per version: lines that drift apart show overfitting."""
    fig = go.Figure()
    xs = [f"v{r.version}" for r in rows]
    fig.add_scatter(x=xs, y=[r.val_accuracy for r in rows], mode="lines+markers", name="validation")
    fig.add_scatter(x=xs, y=[r.confirmation_accuracy for r in rows], mode="lines+markers", name="confirmation")
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(tickformat=".0%", title="accuracy"),
                      title="Validation vs held-out confirmation")
    return fig


def confirmation_panel(s: Session, readonly: str | None) -> None:
    """Per version: validation accuracy beside the confirmation slice's, scored on demand (logged)."""
    n = len(s.task.splits.get("confirmation", []))
    if not n:
        st.info("This task has no confirmation slice (sessions created before split version 2, and custom files, "
                "have none).", icon=":material/info:")
        return
    rows = confirmation_rows(s)
    st.caption(f"The confirmation slice: {n} questions carved like validation but never used by any gate. "
               "A gap between the two that widens over versions means the gate is being fitted, not the task.")
    job = state.active_job(s)
    last = state.reg().latest(state.owner(s), ("confirmation",))
    if last is not None and (last.running or not last.seen):
        job_panel(last, key="confirmation")
    stale = [r.version for r in rows if r.confirmation_accuracy is None]
    st.button(f"Score {len(rows)} version(s) on the confirmation slice", key="score_confirmation",
              disabled=bool(readonly) or job is not None or bool(state.missing_for(s.config)),
              on_click=_score_confirmation, args=(s,),
              help="recorded in the session's log; cached answers are free" + (
                  f"; not scored yet: {', '.join(f'v{v}' for v in stale)}" if stale else ""))
    table = pd.DataFrame([{"version": f"v{r.version}", "step": r.step, "origin": r.origin,
                           "validation": r.val_accuracy, "validation n": r.val_n,
                           "confirmation": r.confirmation_accuracy, "confirmation n": r.confirmation_n or None,
                           "gap (pts)": None if r.gap is None else 100 * r.gap} for r in rows])
    st.dataframe(table, hide_index=True, column_config={
        "validation": st.column_config.NumberColumn(format="percent"),
        "confirmation": st.column_config.NumberColumn(format="percent"),
        "gap (pts)": st.column_config.NumberColumn(format="%+.1f")})
    if any(r.confirmation_accuracy is not None for r in rows):
        st.plotly_chart(confirmation_figure(rows), key="confirmation_chart", config={"displaylogo": False})
        last = rows[-1]
        if last.gap is not None:
            st.caption(f"Current version v{last.version}: validation {pct(last.val_accuracy)}, confirmation "
                       f"{pct(last.confirmation_accuracy)}.")

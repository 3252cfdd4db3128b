"""The shipped demo in the app: the Overview's "Open the demo session" button, the caption naming its model and
date, and the recorded steps (Optimize) and scores (Evaluate) of a session that can be browsed, never run."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.bundle import BundleError
from core.demo import DEMO_BUNDLE, is_demo, open_demo, recording
from core.session import Session
from core.testlock import reveal_summary

from .explain import explain
from .render import ci, md_escape, pct

_ERROR = "demo_error"


def is_open(s: Session | None) -> bool:
    return s is not None and is_demo(s.events)


def demo_is_open() -> bool:
    """The browser's current session is the demo (read from the registry; no session is opened here)."""
    from .jobs import registry, session_key
    from .state import sessions_root

    sid = st.session_state.get("sid")
    if not sid:
        return False
    key = session_key(sessions_root(), sid)
    opened = registry().sessions.get(key) or (registry().readonly.get(key) or (None,))[0]
    return is_open(opened)


def _open() -> None:
    """Callback: import the demo (or reuse an untouched earlier import) and make it the current session."""
    from . import state
    from .jobs import registry, session_key

    try:
        sid = open_demo(state.sessions_root(), state.response_cache())
    except (BundleError, OSError) as exc:
        st.session_state[_ERROR] = str(exc)
        return
    st.session_state.pop(_ERROR, None)
    state.ss("imported", set()).add(sid)
    registry().imported.add(session_key(state.sessions_root(), sid))
    state.set_current(sid)


def open_button() -> None:
    """The Overview's offer: the recorded demo, with no key and no network."""
    if not DEMO_BUNDLE.is_file():
        return
    with st.container(border=True):
        st.markdown("**Try it with no key:** open a session recorded from a real model and browse every step — "
                    "the minibatches, gradients, candidates, gates and scores. Nothing is sent anywhere.")
        st.button("Open the demo session", key="open_demo", type="primary", icon=":material/school:", on_click=_open)
        try:
            st.caption(md_escape(recording().line()))
        except (OSError, ValueError):
            pass
    if st.session_state.get(_ERROR):
        st.error(f"Cannot open the demo: {md_escape(st.session_state[_ERROR])}", icon=":material/error:")


def caption(s: Session | None, *, short: bool = False) -> None:
    """On every page while the demo is open: which model recorded it, when, and that its output is as recorded."""
    if not is_open(s):
        return
    try:
        rec = recording()
    except (OSError, ValueError):
        st.caption(":material/school: the shipped demo session (its recording notes cannot be read)")
        return
    text = f"the demo, recorded {rec.recorded} with {rec.model}" if short else rec.line()
    st.caption(":material/school: " + md_escape(text))


def hints(s: Session, by_state: dict[str, str]) -> dict[str, str]:
    """The Overview's next-step hints; for the demo, where to look instead of what to run."""
    if not is_open(s):
        return by_state
    where = ("This is the recorded demo: read its steps in Optimize, the chart, lineage and question grid in "
             "History, and its scores in Evaluate. Turn on Explain in the sidebar for what each panel means.")
    return dict.fromkeys(list(by_state) + [s.state], where)


def no_acceptance_note(s: Session) -> None:
    """Said plainly when the recording has no accepted step (a weak model's honest result)."""
    if any(x.outcome == "accepted" for x in s.steps):
        return
    decided = sum(1 for x in s.steps if x.outcome)
    if decided:
        text = (f"No step of this recording was accepted: none of the {decided} decided step(s) passed the "
                f"{s.config.policy} gate, so the seed prompt stayed the current one. That is the recorded result "
                "of a weak model, shown as it happened.")
    else:
        text = "No step of this recording was accepted: the recording ends before any step was decided."
    st.info(md_escape(text), icon=":material/info:")


def recorded_steps(s: Session) -> bool:
    """Optimize for the demo: every recorded step, read-only; True when it drew them (the page stops there)."""
    from . import step_view

    if not is_open(s):
        return False
    st.subheader("The recorded steps")
    no_acceptance_note(s)
    steps = s.steps
    if not steps:
        st.caption("The recording has no step.")
        return True
    rows = [{"step": x.index, "outcome": x.outcome or x.status, "current": pct(x.gate.old_accuracy) if x.gate else "",
             "chosen": pct(x.gate.new_accuracy) if x.gate else "",
             "McNemar p": x.gate.p_value if x.gate else None,
             "candidates": len(x.proposal.candidates) if x.proposal else 0} for x in steps]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="demo_steps", placeholder="—",
                 column_config={"McNemar p": st.column_config.NumberColumn(format="%.3g")})
    labels = {i: f"step {x.index} — {x.outcome or x.status}" for i, x in enumerate(steps)}
    last = max((i for i, x in enumerate(steps) if x.proposal is not None), default=len(steps) - 1)
    idx = st.selectbox("Step", list(labels), index=last, format_func=labels.__getitem__, key="demo_step")
    chosen = steps[idx]
    step_view.step_record(s, chosen, key=f"d{chosen.index}_{chosen.attempt}")
    return True


def recorded_scores(s: Session) -> bool:
    """Evaluate for the demo: the recorded validation scores of every version and step (test stays sealed);
    True when it drew them (the page stops there)."""
    if not is_open(s):
        return False
    st.subheader("The recorded scores")
    st.caption(md_escape(reveal_summary(s)) + " Scoring on test needs a model, so it is off for the demo; these are "
               "the validation scores the recording measured.")
    st.dataframe(pd.DataFrame([{"version": f"v{v.number}", "step": v.step, "origin": v.origin,
                                "validation": v.accuracy, "95% CI": ci(v.report.interval), "n": v.report.n}
                               for v in s.versions]), hide_index=True, key="demo_versions",
                 column_config={"validation": st.column_config.NumberColumn(format="percent")})
    explain("interval")
    gated = [x for x in s.steps if x.gate is not None]
    if gated:
        st.dataframe(pd.DataFrame([{"step": x.index, "current": x.gate.old_accuracy, "chosen": x.gate.new_accuracy,
                                    "McNemar p": x.gate.p_value, "fixed": len(x.gate.fixed),
                                    "broke": len(x.gate.broke), "outcome": x.outcome or ""} for x in gated]),
                     hide_index=True, key="demo_gates", column_config={
                         "current": st.column_config.NumberColumn(format="percent"),
                         "chosen": st.column_config.NumberColumn(format="percent"),
                         "McNemar p": st.column_config.NumberColumn(format="%.3g")})
        explain("mcnemar")
    no_acceptance_note(s)
    return True

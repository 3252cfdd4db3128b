"""Retry a proposal's failed calls (Optimize) and revert to an earlier version (History); state changes happen
in the callbacks here, the pages only draw the controls."""

from __future__ import annotations

import streamlit as st

from core.lineage import call_name
from core.session import Session, SessionError, Step

from . import actions
from .render import md_escape


def _retry(s: Session) -> None:
    actions.start_retry(s)


def retry_panel(s: Session, step: Step, *, enabled: bool) -> None:
    """The open proposal's failed calls (phase and error) and a button that sends only those again."""
    failed = step.failed_calls
    if not failed:
        return
    lines = "\n".join(f"- {md_escape(call_name(c.template))}: {md_escape((c.error or '')[:200])}" for c in failed[:6])
    more = f"\n- and {len(failed) - 6} more" if len(failed) > 6 else ""
    with st.container(border=True):
        st.warning(f"{len(failed)} optimiser call{'s' if len(failed) != 1 else ''} of this step failed:\n{lines}{more}"
                   "\n\nRetry sends only these again, on the same minibatch and samples (the calls that succeeded "
                   "come from the cache).", icon=":material/sync_problem:")
        st.button("Retry failed calls", key="retry_failed", type="primary", disabled=not enabled, on_click=_retry,
                  args=(s,), help="re-send the failed calls only; the proposal is rebuilt from their answers")


def _revert(s: Session) -> None:
    n = st.session_state.get("revert_to")
    try:
        v = s.revert(int(n))
    except (SessionError, TypeError, ValueError) as exc:
        st.session_state["revert_flash"] = ("error", str(exc))
        return
    st.session_state["revert_flash"] = ("success", f"v{v.number} is v{v.reverted_to}'s prompt again; the next step "
                                                   "starts from it (nothing was erased).")


def revert_control(s: Session, *, enabled: bool) -> None:
    """Pick an earlier version and make its prompt current again, as a new version (a 'reverted' event)."""
    kind, msg = st.session_state.pop("revert_flash", (None, None))
    if kind:
        getattr(st, kind)(md_escape(msg))
    others = [v.number for v in s.versions if v.number != s.current.number]
    if not others:
        return
    open_step = s.step is not None
    c = st.columns([2, 1], vertical_alignment="bottom")
    c[0].selectbox("Revert to this version", others, index=len(others) - 1, key="revert_to",
                   format_func=lambda n: f"v{n}")
    c[1].button("Revert", key="revert", disabled=not enabled or open_step, on_click=_revert, args=(s,),
                width="stretch", help=("finish or skip the open step first" if open_step else
                                       "a new version with that prompt; the history is kept"))

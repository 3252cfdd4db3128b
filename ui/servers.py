"""The imported-session gate: show the servers a bundle names and let the person confirm or change them."""

from __future__ import annotations

import streamlit as st

from core.session import Session, SessionError, server_text

from .demo_view import is_open as is_demo
from .render import md_escape


def _confirm(s: Session) -> None:
    """Callback: record the servers as typed (a 'repointed' event); errors go to the flash."""
    ss = st.session_state
    try:
        s.repoint(ss.get("repoint_forward_url"), ss.get("repoint_backward_url"),
                  forward=ss.get("repoint_forward"), backward=ss.get("repoint_backward"),
                  price_overrides=ss.get("price_overrides") or {})
    except SessionError as exc:
        ss["flash"] = [("error", f"Cannot use these servers: {md_escape(exc)}")]
        return
    ss["flash"] = [("success", "Servers confirmed; calls for this session go to them.")]


def server_gate(s: Session, *, enabled: bool) -> bool:
    """True when the session's servers are confirmed; else draws the confirmation form and returns False."""
    if s.servers_confirmed:
        return True
    if is_demo(s):
        return False  # the shipped demo is browsed, never run: no servers to confirm
    c = s.config
    with st.container(border=True):
        st.warning("This session came from a bundle. The bundle names the servers below; nothing is sent and no "
                   "key is used until you confirm or change them.", icon=":material/shield:")
        st.text(f"forward model {c.forward} at {server_text(c.forward, c.forward_base_url)}\n"
                f"backward model {c.backward} at {server_text(c.backward, c.backward_base_url)}")
        for key, value in (("repoint_forward", c.forward), ("repoint_forward_url", c.forward_base_url or ""),
                           ("repoint_backward", c.backward), ("repoint_backward_url", c.backward_base_url or "")):
            st.session_state.setdefault(key, value)
        col = st.columns(2)
        col[0].text_input("Forward model", key="repoint_forward")
        col[0].text_input("Forward base URL (empty: the provider's own endpoint)", key="repoint_forward_url")
        col[1].text_input("Backward model", key="repoint_backward")
        col[1].text_input("Backward base URL (empty: the provider's own endpoint)", key="repoint_backward_url")
        st.button("Confirm these servers", key="confirm_servers", type="primary", disabled=not enabled,
                  on_click=_confirm, args=(s,), help="recorded in the session log; the first call waits for this")
    return False

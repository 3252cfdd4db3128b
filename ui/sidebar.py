"""The sidebar: providers (never a key), the current session with a picker, spend so far."""

from __future__ import annotations

import re

import streamlit as st

from core.session import list_sessions

from . import saved_settings, state
from . import demo_view, explain
from .render import md_code, md_escape, money


def _how(text: str) -> str:
    """Provider detail for Markdown: URLs as code (not links), the rest escaped."""
    parts = re.split(r"(https?://\S+)", text)
    return " ".join(md_code(p) if p.startswith(("http://", "https://")) else md_escape(p) for p in parts if p.strip())


def _session_label(row: dict) -> str:
    title = f" · {row['title']}" if row.get("title") else ""
    return f"{row['id']} ({row.get('task') or '?'}, {row.get('method') or '?'}){title}"


def _pick() -> None:
    state.set_current(st.session_state.get("sidebar_session"))


def render(on_setup: bool = False) -> None:
    """The sidebar; first the saved provider settings are loaded (once) and Setup's form is put back."""
    from .setup_helpers import restore_setup_form

    saved_settings.load_once()
    if on_setup:
        restore_setup_form()
    with st.sidebar:
        explain.toggle()
        st.markdown("#### Providers")
        lines = []
        for name, ok, how in state.provider_status():
            lines.append(f"{':green[:material/check_circle:]' if ok else ':gray[:material/radio_button_unchecked:]'} **{md_escape(name)}** — {_how(how)}")
        st.markdown("  \n".join(lines))
        if not state.any_provider():
            st.caption("No model provider yet: add a key or probe a local server in Settings.")
        if st.session_state.get("_settings_error"):
            st.caption(f":orange[:material/warning:] {md_escape(st.session_state['_settings_error'])}")

        st.markdown("#### Session")
        rows = list_sessions(state.sessions_root())
        ids = [r["id"] for r in rows]
        labels = {r["id"]: _session_label(r) for r in rows}
        sid = state.current_sid()
        if sid and sid not in ids:
            ids.insert(0, sid)
        if ids:
            options = [None] + ids
            if st.session_state.get("sidebar_session") != sid:
                st.session_state["sidebar_session"] = sid if sid in ids else None
            st.selectbox("Current session", options, format_func=lambda x: "— none —" if x is None else labels.get(x, x),
                         key="sidebar_session", on_change=_pick)
        else:
            st.caption("No session yet — create one in Setup.")
        s, readonly = state.current_session()
        state.sync_url()
        if s is None:
            return
        cfg = s.config
        task = cfg.task.get("name") or cfg.task.get("file")
        st.markdown(f"**{md_escape(task)}** · {md_escape(cfg.method)} ({md_escape(cfg.preset)})  \n"
                    f"state: **{md_escape(s.state)}** · versions {len(s.versions)} · steps {len(s.steps)}")
        demo_view.caption(s, short=True)
        if readonly and not demo_view.is_open(s):
            st.caption(":material/lock: read-only here (another process is writing it)")
        if state.is_replay(s):
            st.caption(":material/replay: imported bundle (replay)")
        job = state.active_job(s)
        if job is not None:
            st.caption(f":material/hourglass_top: {md_escape(job.label)} running…")

        st.markdown("#### Spend")
        sp = s.spend
        st.markdown(f"**{sp.calls:,}** calls · **{sp.input_tokens + sp.output_tokens:,}** tokens  \n"
                    f"**{money(sp.cost_usd)}** spent · **{money(sp.saved_usd)}** saved by the cache "
                    f"({sp.cached:,} cached answers)")
        if sp.failed:
            st.caption(f"{sp.failed} call(s) failed")

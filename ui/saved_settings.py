"""The settings file in the app: loaded once per browser session, saved when a provider setting changes.

What is kept: the models and base URLs typed in Setup, the servers probed in Settings, and the call
options (timeout, retries, concurrency). Keys are never kept (`core.settings_file` refuses them too).
"""

from __future__ import annotations

import streamlit as st

from core.settings_file import ProviderSettings, SettingsError, load, save

from . import state
from .probe import ProbeError, probe_models

LOADED = "_settings_loaded"
SPEC_KEYS = ("forward_spec", "backward_spec", "forward_url", "backward_url")


def load_once() -> None:
    """On the first run of a browser session: the saved options and models, and a fresh probe of saved servers."""
    if st.session_state.get(LOADED):
        return
    st.session_state[LOADED] = True
    saved = load()
    st.session_state["client_options"] = {"concurrency": saved.concurrency, "timeout_s": saved.timeout_s,
                                          "max_retries": saved.max_retries, "stream": saved.stream}
    for k in SPEC_KEYS:
        if getattr(saved, k) and k not in st.session_state:
            st.session_state[k] = getattr(saved, k)
    st.session_state["_probe_urls"] = list(saved.probe_urls)
    for url in saved.probe_urls:
        try:
            state.probed()[url] = probe_models(url, timeout=0.5)
        except ProbeError:
            pass


def current() -> ProviderSettings:
    """The provider settings of this browser session, as they would be saved."""
    o = state.options()
    ss = st.session_state
    return ProviderSettings(**{k: str(ss.get(k) or "").strip() for k in SPEC_KEYS},
                            probe_urls=list(dict.fromkeys(ss.get("_probe_urls", []))),
                            timeout_s=float(o.get("timeout_s") or 0.0), max_retries=int(o.get("max_retries", 4)),
                            concurrency=int(o.get("concurrency", 8)), stream=bool(o.get("stream", True)))


def save_now() -> None:
    """Write the settings file (a callback); a failure is shown once, the app keeps working."""
    try:
        save(current(), secrets=state.secrets())
    except SettingsError as exc:
        st.session_state["_settings_error"] = str(exc)
    else:
        st.session_state.pop("_settings_error", None)

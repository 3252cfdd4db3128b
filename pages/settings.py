"""Settings: keys (this browser session only), local servers, concurrency, prices, cache, meta-prompts."""

import pandas as pd
import streamlit as st

from core.llm import DATED_PRICES, PRICES, PRICES_DATE
from core.meta_prompts import TEMPLATES
from ui import boot, saved_settings, state
from ui import setup_helpers as H
from ui.probe import OLLAMA, ProbeError, probe_models
from ui.render import md_escape, plain
from ui.explain import explain

boot.page_guard()
st.title("Settings")

# ---------- keys ----------
st.subheader("API keys")
st.caption("Keys typed here stay in this browser session's memory only: never written to disk, a log, the cache, a "
           "session or an export. Keys from the environment (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`) or "
           "`.streamlit/secrets.toml` are used when nothing is typed.")
keys = state.ss("api_keys", {})


def _set_key(provider: str) -> None:
    value = (st.session_state.get(f"key_{provider}") or "").strip()
    if value:
        keys[provider] = value
    st.session_state[f"key_{provider}"] = ""  # the field never keeps the key on screen


kc = st.columns(2)
for col, provider in zip(kc, ("openai", "anthropic")):
    with col:
        src = state.key_source(provider)
        st.text_input(f"{provider} key", type="password", key=f"key_{provider}", on_change=_set_key, args=(provider,),
                      placeholder="paste a key and press Enter", help=f"currently: {src or 'none'}")
        st.caption(f"{':green[:material/check_circle:]' if src else ':gray[:material/radio_button_unchecked:]'} {md_escape(src or 'no key')}")
        if provider in keys and st.button(f"Forget the {provider} key", key=f"forget_{provider}"):
            keys.pop(provider, None)
            st.rerun()

# ---------- local servers ----------
st.subheader("Local and OpenAI-compatible servers")
st.caption("Ollama, vLLM, llama.cpp or LM Studio: the app lists the models the server serves (GET base-URL/models, with no key sent) "
           "and offers them in Setup's model pickers.")


def _probe() -> None:
    """Callback (before the page and the sidebar draw): list the server's models, keep its URL for next time."""
    base = (st.session_state.get("probe_url") or "").strip().rstrip("/")
    try:
        found = probe_models(base)
    except ProbeError as exc:
        st.session_state["_probe_result"] = ("error", str(exc))
        return
    state.probed()[base] = found
    urls = st.session_state.setdefault("_probe_urls", [])
    if base not in urls:
        urls.append(base)
    saved_settings.save_now()
    st.session_state["_probe_result"] = ("success", f"{len(found)} model(s) at {base}; Setup's quick picks offer them.")


state.ss("probe_url", (st.session_state.get("_probe_urls") or [OLLAMA])[-1])
pc = st.columns([3, 1], vertical_alignment="bottom")
pc[0].text_input("Base URL", key="probe_url")
pc[1].button("Probe", key="probe", width="stretch", on_click=_probe)
result = st.session_state.pop("_probe_result", None)
if result:
    (st.error if result[0] == "error" else st.success)(
        md_escape(result[1]), icon=":material/error:" if result[0] == "error" else ":material/check_circle:")
for url, models in list(state.probed().items()):
    st.markdown(f"**{md_escape(url)}** — {len(models)} model(s)")
    if models:
        st.text(", ".join(models[:50]))

# ---------- running ----------
st.subheader("Calls")
st.caption("Kept for your next visit (in the data folder's settings.json, with the models and base URLs you chose; "
           "never a key).")
oc = st.columns(4)
H.option_control(oc[0], "Concurrent calls per provider", "concurrency", "opt_concurrency", 1, 64,
                 "calls in flight at once, per server")
H.timeout_control(oc[1], "opt_timeout")
H.option_control(oc[2], "Retries (by the SDK, with backoff)", "max_retries", "opt_retries", 0, 10,
                 "on a timeout, a dropped connection, HTTP 429 or 5xx; shown on the progress line while they happen")


def _stream_changed() -> None:
    state.options()["stream"] = bool(st.session_state["opt_stream"])
    saved_settings.save_now()


st.session_state["opt_stream"] = bool(state.options().get("stream", True))
oc[3].toggle("Stream replies", key="opt_stream", on_change=_stream_changed,
             help="keeps a long reply alive: the timeout counts between chunks. A server that refuses streaming "
                  "is asked plainly once and remembered.")

# ---------- prices ----------
st.subheader("Prices")
st.caption(f"USD per 1M tokens, as published on {PRICES_DATE}. Edit a row or add a model name to override "
           "(applies to this browser session only, and to sessions it creates: a session keeps the prices it was "
           "created with; local servers cost $0).")
saved = state.ss("price_overrides", {})
table = {**PRICES, **DATED_PRICES}
base_rows = dict(table)
base_rows.update(saved)
version = state.ss("price_version", 0)
edited = st.data_editor(pd.DataFrame([{"model": k, "input": v[0], "output": v[1]} for k, v in base_rows.items()]),
                        num_rows="dynamic", key=f"prices_editor_{version}", hide_index=True,
                        column_config={"input": st.column_config.NumberColumn(min_value=0.0, format="$%.2f"),
                                       "output": st.column_config.NumberColumn(min_value=0.0, format="$%.2f")})
pb = st.columns([1, 1, 3])
if pb[0].button("Apply prices", key="apply_prices"):
    overrides = {}
    for row in edited.to_dict("records"):
        name = str(row.get("model") or "").strip()
        try:
            pin, pout = float(row.get("input")), float(row.get("output"))
        except (TypeError, ValueError):
            continue
        if name and table.get(name) != (pin, pout):
            overrides[name] = (pin, pout)
    st.session_state["price_overrides"] = overrides
    st.session_state["price_version"] = version + 1
    st.rerun()
if pb[1].button("Reset prices", key="reset_prices", disabled=not saved):
    st.session_state["price_overrides"] = {}
    st.session_state["price_version"] = version + 1
    st.rerun()
if saved:
    pb[2].caption("Overrides in use: " + md_escape(", ".join(f"{k} ${v[0]}/{v[1]}" for k, v in saved.items())))

# ---------- cache ----------
st.subheader("Response cache")
explain("cache")
cache = state.response_cache()
if cache is not None:
    cc = st.columns([1, 1, 2])
    cc[0].metric("Entries", f"{len(cache):,}")
    cc[1].metric("Size", f"{cache.volume() / 2**20:.1f} MB")
    with cc[2]:
        st.caption(f"Folder: {md_escape(str(cache.directory))}. Clearing makes re-runs and replays call the "
                   "models again.")
        sure = st.checkbox("Yes, clear the cache", key="confirm_clear")
        if st.button("Clear cache", key="clear_cache", disabled=not sure):
            n = cache.clear()
            st.session_state["confirm_clear"] = False
            st.success(f"Removed {n:,} entries.", icon=":material/delete_sweep:")

# ---------- meta-prompts ----------
st.subheader("Meta-prompts")
st.caption("Every prompt the optimiser sends. Overrides apply to sessions **created afterwards** in this browser "
           "session (they are stored in the new session's config); existing sessions keep theirs.")
overrides_t = state.ss("template_overrides", {})
name = st.selectbox("Template", list(TEMPLATES), key="tpl_pick",
                    format_func=lambda n: f"{n} — {TEMPLATES[n].purpose}")
t = TEMPLATES[name]
st.caption("Placeholders: " + md_escape(", ".join("{" + p + "}" for p in t.placeholders)))
cur = overrides_t.get(name, {})
tc = st.columns(2)
with tc[0]:
    st.markdown("**Default**")
    if t.system:
        st.caption("system")
        plain(t.system, box=True)
    st.caption("user")
    plain(t.user, box=True)
with tc[1]:
    st.markdown("**Override**" + (" (active)" if cur else ""))
    sys_txt = st.text_area("system", value=cur.get("system", t.system), key=f"tpl_sys_{name}", height=150)
    user_txt = st.text_area("user", value=cur.get("user", t.user), key=f"tpl_user_{name}", height=250)
    b = st.columns(2)
    if b[0].button("Save override", key="tpl_save"):
        missing = [p for p in t.placeholders if "{" + p + "}" not in sys_txt + user_txt]
        if missing:
            st.warning("Missing placeholders: " + ", ".join(missing) + " (saved anyway).", icon=":material/warning:")
        overrides_t[name] = {"system": sys_txt, "user": user_txt}
        st.success("Saved: sessions you create next use it.", icon=":material/check_circle:")
    if b[1].button("Reset to default", key="tpl_reset", disabled=not cur):
        overrides_t.pop(name, None)
        for k in (f"tpl_sys_{name}", f"tpl_user_{name}"):
            st.session_state.pop(k, None)
        st.rerun()

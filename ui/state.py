"""Per-browser state (st.session_state) and access to the open session, models, cache and runner.

Keys typed in Settings live only in st.session_state for this browser session: never written to
disk, a log, the cache, a session or an export.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core import paths
from core.cache import CacheError, ResponseCache
from core.demo import READONLY_REASON, is_demo
from core.engine import task_text
from core.events import CREATED
from core.llm import ClientOptions, LLMError, parse_spec, price_for, registered_providers
from core.runner import Runner
from core.session import Models, Session, SessionConfig, SessionError
from core.tasks import Example

from .demo_view import caption as demo_caption
from .jobs import Job, Registry, registry, session_key
from .render import md_escape

KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
DEFAULT_OPTIONS = {"concurrency": 8, "timeout_s": 0.0, "max_retries": 4, "stream": True}  # timeout 0: chosen per server


def ss(name: str, default):
    """st.session_state[name], set to default the first time."""
    if name not in st.session_state:
        st.session_state[name] = default
    return st.session_state[name]


# ---------- paths ----------
def sessions_root() -> Path:
    """PGS_SESSIONS_DIR, else $PGS_HOME/sessions, else ./sessions where the app was started."""
    return paths.sessions_dir()


# ---------- keys and providers ----------
def _secret(name: str) -> str | None:
    try:
        value = st.secrets.get(name)
    except Exception:  # noqa: BLE001 - no secrets.toml is the normal case
        return None
    return str(value) if value else None


def api_keys() -> dict[str, str]:
    """Keys for Models.from_config: typed in Settings (this browser session), else st.secrets.
    Environment keys are read by the SDK clients themselves."""
    typed = ss("api_keys", {})
    out = {}
    for provider, env in KEY_ENV.items():
        value = typed.get(provider) or _secret(env)
        if value:
            out[provider] = value
    return out


def key_source(provider: str) -> str | None:
    """Where a provider's key comes from (never the key itself)."""
    if ss("api_keys", {}).get(provider):
        return "entered in Settings"
    env = KEY_ENV.get(provider)
    if env and os.environ.get(env):
        return f"environment ({env})"
    if env and _secret(env):
        return "st.secrets"
    return None


def probed() -> dict[str, list[str]]:
    """Model ids found on OpenAI-compatible servers: {base_url: [model ids]}."""
    return ss("probed_models", {})


def provider_status() -> list[tuple[str, bool, str]]:
    """(provider, usable, how) for the sidebar and Setup."""
    rows = []
    for p in ("openai", "anthropic"):
        src = key_source(p)
        rows.append((p, bool(src), src or "no key"))
    found = probed()
    ollama = [u for u in found if ":11434" in u]
    rows.append(("ollama", bool(ollama), f"{len(found[ollama[0]])} model(s) at {ollama[0]}" if ollama
                 else "not found on localhost:11434"))
    other = [u for u in found if u not in ollama]
    base = os.environ.get("OPENAI_BASE_URL")
    typed = [u for u in typed_base_urls() if u not in found]
    if other or base or typed:
        how = f"{other[0]}" if other else "OPENAI_BASE_URL" if base else f"{typed[0]} (base URL in use)"
        rows.append(("openai-compatible", True, how))
    plugins = registered_providers()
    if plugins:
        rows.append(("plugins", True, ", ".join(plugins) + " (registered providers)"))
    return rows


def typed_base_urls() -> list[str]:
    """Base URLs of OpenAI-compatible servers typed in Setup (this browser session) or used by the
    current session: such a server needs no key, so it counts as a configured provider."""
    urls = [st.session_state.get("forward_url"), st.session_state.get("backward_url")]
    sid = st.session_state.get("sid")
    s = registry().sessions.get(session_key(sessions_root(), sid)) if sid else None
    if s is not None and s.config is not None and not is_demo(s.events):  # the demo's servers are not this machine's
        urls += [s.config.forward_base_url, s.config.backward_base_url]
    out: list[str] = []
    for u in urls:
        u = (u or "").strip().rstrip("/")
        if u.startswith(("http://", "https://")) and u not in out:
            out.append(u)
    return out


def any_provider() -> bool:
    return any(ok for _, ok, _ in provider_status())


def missing_for(cfg: SessionConfig) -> list[str]:
    """Why this config's models cannot run in this browser session (empty when they can)."""
    problems = []
    for what, spec, url in (("forward", cfg.forward, cfg.forward_base_url),
                            ("backward", cfg.backward, cfg.backward_base_url)):
        try:
            s = parse_spec(spec, url)
        except LLMError as exc:
            problems.append(f"{what} model: {exc}")
            continue
        if s.provider in KEY_ENV and not s.base_url and not key_source(s.provider):
            problems.append(f"the {what} model {spec} needs an {s.provider} key: set {KEY_ENV[s.provider]} "
                            f"or enter it in Settings")
    return problems


def options() -> dict:
    return ss("client_options", dict(DEFAULT_OPTIONS))


def client_options(on_retry=None, on_text=None) -> ClientOptions:
    o = options()
    return ClientOptions(timeout_s=float(o["timeout_s"] or 0) or None, max_retries=int(o["max_retries"]),
                         stream=bool(o.get("stream", True)), on_retry=on_retry, on_text=on_text)


# ---------- cache, runner, models ----------
def response_cache() -> ResponseCache | None:
    """The shared response cache, or None (with a warning) when its folder cannot be used."""
    try:
        cache = registry().cache()
    except CacheError as exc:
        st.warning(f"Running without the response cache: {md_escape(exc)}", icon=":material/warning:")
        return None
    if cache.write_error:  # answers are not being saved: repeated calls will be paid again
        st.warning(md_escape(cache.write_error[:1].upper() + cache.write_error[1:]), icon=":material/warning:")
    return cache


def runner() -> Runner:
    return Runner(cache=response_cache(), concurrency=int(options()["concurrency"]))


def models_for(cfg: SessionConfig, on_retry=None, on_text=None) -> Models:
    """Fresh models for one job (SDK clients are created inside the job's event loop), priced by the
    session's snapshot (this browser's overrides for a model it lacks); `on_retry` sees each SDK retry,
    `on_text` the backward model's streamed replies as they are written."""
    return Models.from_config(cfg, runner(), keys=api_keys(), options=client_options(on_retry, on_text),
                              price_overrides=price_overrides())


def price_overrides() -> dict[str, tuple[float, float]]:
    """Prices set in Settings, for this browser session only: {model name: (input, output) USD per 1M}."""
    return ss("price_overrides", {})


def model_price(spec) -> tuple[float, float] | None:
    """A parsed spec's price as this browser session sees it (its overrides, then the table)."""
    return price_for(spec, price_overrides())


def secrets() -> list[str]:
    """Values to redact from any error shown."""
    return [v for v in api_keys().values() if v]


# ---------- the current session ----------
def current_sid() -> str | None:
    """This browser's current session; kept in the URL (?session=) so a reload keeps it."""
    if "sid" not in st.session_state:
        st.session_state["sid"] = st.query_params.get("session") or None
    return st.session_state["sid"]


def set_current(sid: str | None) -> None:
    st.session_state["sid"] = sid
    sync_url()


def sync_url() -> None:
    sid = st.session_state.get("sid")
    if sid and st.query_params.get("session") != sid:
        st.query_params["session"] = sid
    elif not sid and "session" in st.query_params:
        del st.query_params["session"]


def current_session() -> tuple[Session | None, str | None]:
    """(session, read-only reason) for this browser's current session; (None, None) when none.
    A session that cannot be loaded is reported with st.error and forgotten."""
    sid = current_sid()
    if not sid:
        return None, None
    try:
        s, readonly = registry().session(sessions_root(), sid)
        return s, readonly or (READONLY_REASON if is_demo(s.events) else None)  # the demo is browsed, never run
    except (SessionError, OSError) as exc:
        st.error(f"Cannot open session {md_escape(sid)}: {md_escape(exc)}", icon=":material/error:")
        set_current(None)
        return None, None


def owner(s: Session) -> str:
    return session_key(s.root, s.id)


def active_job(s: Session) -> Job | None:
    return registry().active(owner(s))


def reg() -> Registry:
    return registry()


def example(s: Session, example_id: str) -> Example | None:
    """The session's example with this id (the task's one id -> Example map), or None."""
    try:
        return s.task.example(example_id)
    except KeyError:
        return None


def question_text(s: Session, example_id: str) -> str:
    ex = example(s, example_id)
    return task_text(s.task, ex) if ex is not None else ""


def is_replay(s: Session) -> bool:
    """An imported bundle (replayable offline from its recorded responses)."""
    if s.id in ss("imported", set()) or owner(s) in registry().imported:
        return True
    first = s.events[0] if s.events else {}
    return first.get("type") == CREATED and bool(first.get("imported"))  # the marker import_bundle writes


def unpriced(cfg: SessionConfig) -> list[str]:
    """Model specs of this config with no known price (their cost shows as $0): its snapshot, else this
    browser's overrides and the table."""
    return cfg.unpriced(price_overrides())


def cost_text(cfg: SessionConfig, usd: float) -> str:
    """An estimated cost, saying when a model has no known price."""
    from .render import money

    missing = unpriced(cfg)
    if missing:
        return f"{money(usd)} (no price known for {', '.join(missing)}; set one in Settings)"
    return money(usd)


def banners(s: Session, readonly: str | None, missing: list[str] | None = None) -> None:
    """The notices every session page starts with: replay mode, read-only, load warnings, missing keys."""
    demo_caption(s)
    if is_replay(s):
        extra = (" Continuing it needs: " + md_escape("; ".join(missing)) + ".") if missing else ""
        st.info("Replay mode — an imported session: every recorded step can be browsed (here, in History and on "
                "the Overview) with no key." + extra, icon=":material/replay:")
    elif missing:
        st.warning("Browse-only: " + md_escape("; ".join(missing)) + ".", icon=":material/key:")
    if readonly:
        st.warning(f"Read-only: {md_escape(readonly)}", icon=":material/lock:")
    for w in s.warnings:
        st.warning(md_escape(w), icon=":material/warning:")

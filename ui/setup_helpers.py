"""Setup glue: cached task loading, custom-file mapping guesses, preset fields, model quick picks."""

from __future__ import annotations

from dataclasses import asdict, fields

import pandas as pd
import streamlit as st

from core.bandits import ALGORITHMS
from core.checks import COUNT, SETTING_RANGES
from core.llm import PRICES
from core.session import PRESETS
from core.tasks import Task, TaskError, list_tasks, load_custom, load_task, read_table

from . import state
from .demo_view import demo_is_open
from .probe import ProbeError, probe_models, spec_for, OLLAMA

# The preset numbers a person is most likely to change, with help text.
EDITABLE = {
    "protegi": {
        "beam": "prompts kept per round (beam search)",
        "minibatch": "training questions answered per beam prompt",
        "n_groups": "error groups: one gradient call each",
        "errors_per_group": "wrong examples shown per gradient call",
        "reasons_per_group": "reasons asked per gradient call",
        "edits_per_reason": "edited prompts per reason",
        "paraphrases": "Monte-Carlo paraphrases per edit",
        "max_successors": "candidates kept per parent",
        "bandit_budget": "forward calls for the bandit pre-screen",
        "samples_per_eval": "training questions per bandit pull",
        "max_tokens": "output-token limit of each optimiser reply (gradients, edits, paraphrases)",
    },
    "textgrad": {
        "batch_size": "training questions per step (the loss batch)",
        "memory": "past iterations (prompt, the feedback it got, the revision) shown to the update (0 = off)",
        "candidates": "update samples drawn at once (distinct, cached), de-duplicated: you choose among them",
        "max_tokens": "output-token limit of each optimiser reply (feedback, gradient, update)",
    },
}


@st.cache_resource(show_spinner=False, max_entries=32)
def builtin_task(name: str, seed: int, val_size: int | None, train_size: int | None, test_size: int | None) -> Task:
    return load_task(name, seed=seed, val_size=val_size, train_size=train_size, test_size=test_size)


@st.cache_resource(show_spinner=False)
def task_infos():
    return list_tasks()


@st.cache_data(show_spinner=False, max_entries=8)
def table(data: bytes, filename: str, header: bool | None = True) -> pd.DataFrame:
    return read_table(data, filename, header=header)


def header_guess(data: bytes, filename: str) -> bool:
    """Whether row 1 of a CSV/TSV looks like column names (True for JSON, or when the file does not read)."""
    try:
        return bool(table(data, filename).attrs["format"].header_guess)
    except TaskError:
        return True


@st.cache_resource(show_spinner=False, max_entries=16)
def custom_task(data: bytes, filename: str, inputs: tuple[str, ...], label: str, id_col: str | None,
                choices: str | None, labels: tuple[str, ...] | None, val_size: int, test_size: int, seed: int,
                header: bool = True, option_cols: tuple[str, ...] = (), threshold: float | None = None) -> Task:
    return load_custom(data, filename, input_cols=list(inputs), label_col=label, id_col=id_col, choices_col=choices,
                       labels=list(labels) if labels else None, val_size=val_size, test_size=test_size, seed=seed,
                       header=header, option_cols=list(option_cols) or None, label_threshold=threshold)


def guess_columns(cols: list[str]) -> dict:
    low = {c.lower(): c for c in cols}
    label = next((low[n] for n in ("label", "answer", "gold", "target", "class", "final_decision", "answer_idx")
                  if n in low), cols[-1] if cols else None)
    id_col = next((low[n] for n in ("id", "qid", "pmid", "uid") if n in low), None)
    choices = next((low[n] for n in ("options", "choices") if n in low), None)
    inputs = [c for c in cols if c not in (label, id_col, choices)]
    return {"label": label, "id": id_col, "choices": choices, "inputs": inputs}


def question_preview(task: Task) -> str:
    """The user message the forward model sees for the first validation question (the engine's own request)."""
    from core.evaluate import forward_request

    pool = task.split("val") or task.split("train")
    return forward_request("", task, pool[0]).messages[-1][1] if pool else task.template


def preset_rows(method: str, preset: str, task: Task | None = None) -> pd.DataFrame:
    """The preset's settings as they apply to `task`: its batch size and role, `{task}` filled in with its title."""
    cfg = PRESETS[method][preset]
    if task is not None and hasattr(cfg, "for_task"):
        cfg = cfg.for_task(task.name)
    values = asdict(cfg)
    per_task = {k for k in values if k.endswith("_by_task")}  # already applied above
    title = task.title if task is not None else "the task's"
    rows = []
    for k, v in values.items():
        if k in per_task:
            continue
        text = str(v).replace("{task}", title) if isinstance(v, str) else str(v)
        rows.append({"setting": k, "value": text})
    return pd.DataFrame(rows)


# ---------- call options: one control on Setup and Settings ----------
def _apply_option(name: str, widget_key: str, cast) -> None:
    """Callback: a call option changed on either page; saved for the next visit."""
    from . import saved_settings

    state.options()[name] = cast(st.session_state[widget_key])
    saved_settings.save_now()


def timeout_control(col, key: str) -> None:
    """'Timeout per call (s)', 0 = chosen for the server; the same value on Setup and Settings."""
    from core.llm import HOSTED_TIMEOUT_S, LOCAL_TIMEOUT_S

    st.session_state[key] = float(state.options().get("timeout_s") or 0.0)
    col.number_input("Timeout per call (s)", min_value=0.0, max_value=86_400.0, step=30.0, key=key, format="%.0f",
                     on_change=_apply_option, args=("timeout_s", key, float),
                     help=f"0 = chosen for the server: {LOCAL_TIMEOUT_S:g} s for local and OpenAI-compatible servers, "
                          f"{HOSTED_TIMEOUT_S:g} s for api.openai.com and api.anthropic.com. Replies are streamed, so "
                          "it is the longest wait for the first word or between two chunks, not for the whole reply.")
    col.caption(f"0 = chosen per server: {LOCAL_TIMEOUT_S:g} s local or compatible, {HOSTED_TIMEOUT_S:g} s "
                "OpenAI / Anthropic" if not st.session_state[key] else "per call, for every server")


def option_control(col, label: str, name: str, key: str, low: int, high: int, help_: str) -> None:
    st.session_state[key] = int(state.options().get(name))
    col.number_input(label, min_value=low, max_value=high, step=1, key=key, on_change=_apply_option,
                     args=(name, key, int), help=help_)


def timeout_caption(spec_text: str, url: str | None) -> str:
    """What timeout a model's calls get, in words, for under its spec."""
    from core.llm import LLMError, default_timeout, parse_spec

    try:
        ms = parse_spec(spec_text, url)
    except LLMError:
        return ""
    chosen = float(state.options().get("timeout_s") or 0.0)
    if chosen:
        return f"timeout: {chosen:g} s per call (set below)"
    t = default_timeout(ms)
    where = "a local or compatible server" if t > 60 else "a hosted API"
    return f"timeout: {t:g} s per call ({where}; change it below)"


# ---------- Setup's form survives a visit to another page ----------
KEEP_KEYS = ("task_source", "task_name", "split_seed", "forward_spec", "backward_spec", "forward_url", "backward_url",
             "forward_max_tokens", "method", "seed_prompt", "seed_strategy", "seed_k", "policy", "alpha", "patience",
             "budget_kind", "budget_usd", "budget_calls", "gate_batch", "gate_cap", "session_title",
             "map_use_threshold", "map_threshold", "map_labels", "custom_val", "custom_test")
KEEP_PREFIXES = ("val_size_", "train_size_", "test_size_", "preset_", "p_textgrad_", "p_protegi_", "constraints_",
                 "map_inputs", "map_label", "map_id", "map_choices", "map_option_cols", "has_header_")
UPLOAD_KEPT = "_setup_upload"  # (name, bytes) of the last file uploaded in Setup


FORM_COPY = "_setup_form"  # a plain copy of Setup's widget values: Streamlit drops a widget's own state
# once a run does not draw it (another page, the other data source), so Setup puts them back from here


def _kept(k: str) -> bool:
    return k in KEEP_KEYS or k.startswith(KEEP_PREFIXES)


def remember_setup_form() -> None:
    """At the end of a Setup run: copy the values of the widgets it drew."""
    copy = st.session_state.setdefault(FORM_COPY, {})
    for k in list(st.session_state.keys()):
        if _kept(k):
            copy[k] = st.session_state[k]


def restore_setup_form() -> None:
    """Before Setup draws: put back each value Streamlit has dropped since, so the form is as it was left."""
    for k, v in dict(st.session_state.get(FORM_COPY, {})).items():
        if k not in st.session_state:
            try:
                st.session_state[k] = v
            except Exception:  # noqa: BLE001 - a widget type that cannot be set this way is left alone
                pass


def preset_params(method: str, preset: str, key: str, task: Task | None = None) -> dict:
    """Number inputs for the editable numbers (and the bandit), starting from the values the run uses for
    `task` (a paper preset's per-task batch size); returns the overrides of the preset."""
    base = PRESETS[method][preset]
    if task is not None and hasattr(base, "for_task"):
        base = base.for_task(task.name)
    values = asdict(base)
    out: dict = {}
    names = list(EDITABLE[method])
    cols = st.columns(4)
    for i, name in enumerate(names):
        with cols[i % 4]:
            rng = SETTING_RANGES.get(name, COUNT)  # the same bounds SessionConfig.validate checks
            v = st.number_input(name, min_value=int(rng.low), max_value=int(rng.high), value=int(values[name]),
                                step=64 if name == "max_tokens" else 1,
                                key=f"{key}_{name}", help=EDITABLE[method][name])
            if int(v) != int(values[name]):
                out[name] = int(v)
    if method == "protegi":
        with cols[len(names) % 4]:
            options = ["none", *ALGORITHMS]
            b = st.selectbox("bandit", options, index=options.index(base.bandit) if base.bandit in options else 0,
                             key=f"{key}_bandit", help="pre-screen candidates on training samples")
            if b != base.bandit:
                out["bandit"] = b
    return out


def known_specs() -> list[str]:
    """Specs for the quick pick: probed local models first, then the priced hosted models."""
    out = []
    for base, models in state.probed().items():
        for m in models:
            spec, url = spec_for(base, m)
            out.append(spec if url is None else f"{spec} @ {url}")
    for name in PRICES:
        out.append(("anthropic:" if name.startswith("claude") else "openai:") + name)
    return out


def auto_probe_ollama() -> None:
    """Look for Ollama on localhost once per browser session (short timeout)."""
    if st.session_state.get("_ollama_probed"):
        return
    if demo_is_open():
        return  # a class watching the demo: no network, not even localhost
    st.session_state["_ollama_probed"] = True
    try:
        state.probed()[OLLAMA] = probe_models(OLLAMA, timeout=0.5)
    except ProbeError:
        pass


def field_names(method: str) -> set[str]:
    cls = type(PRESETS[method][next(iter(PRESETS[method]))])
    return {f.name for f in fields(cls)}


def task_error(exc: Exception) -> str:
    return str(exc) if isinstance(exc, TaskError) else f"{type(exc).__name__}: {exc}"


def anthropic_note() -> str:
    """What Anthropic calls send, for the Setup page (the installed SDK decides whether temperature goes)."""
    from core.llm import anthropic_sends_temperature

    if anthropic_sends_temperature():
        return "Anthropic models: calls send temperature 0 (temperature 0.7 for sampled optimiser calls)."
    return ("Anthropic models: the installed anthropic SDK takes no temperature, so none is sent and the model "
            "uses its own default; repeated calls may differ, and the cache keys them without a temperature.")


# ---------- the sessions table (Setup's Sessions tab, the Overview) ----------
SESSION_COLUMNS = {
    "id": st.column_config.TextColumn("session", width="medium"),
    "created": st.column_config.TextColumn("created", width="medium"),
    "task": st.column_config.TextColumn("task", width="small"),
    "method": st.column_config.TextColumn("method", width="small"),
    "title": st.column_config.TextColumn("title", width="large"),
    "size": st.column_config.TextColumn("size", width="small"),
}


def sessions_frame(rows: list[dict]) -> pd.DataFrame:
    """list_sessions rows as a table: every column present from the first draw (never one bare id column)."""
    import time

    out = [{"id": r["id"], "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.get("created") or 0)),
            "task": r.get("task") or "", "method": r.get("method") or "", "title": r.get("title") or "",
            "size": f"{(r.get('size') or 0) / 1024:.0f} KB"} for r in rows]
    return pd.DataFrame(out, columns=list(SESSION_COLUMNS))

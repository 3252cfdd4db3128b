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


def preset_rows(method: str, preset: str) -> pd.DataFrame:
    cfg = PRESETS[method][preset]
    return pd.DataFrame([{"setting": k, "value": str(v)} for k, v in asdict(cfg).items()])


def preset_params(method: str, preset: str, key: str) -> dict:
    """Number inputs for the editable numbers (and the bandit); returns the overrides of the preset."""
    base = PRESETS[method][preset]
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

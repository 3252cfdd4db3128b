"""Scoring several prompts on the test split at once, and the head-to-head comparison (no streamlit)."""

from __future__ import annotations

from typing import Callable

from core.evaluate import EvalReport
from core.llm import ChatModel
from core.metrics import mcnemar_exact, paired_outcomes
from core.runner import CancelToken, Progress, Runner
from core.tasks import Example, Task
from core.testlock import Entry, evaluate_entries

__all__ = ["Entry", "evaluate_many", "head_to_head", "long_csv"]


def evaluate_many(entries: list[Entry], examples: list[Example], model: ChatModel, *, task: Task, runner: Runner,
                  on_progress: Callable[[str, Progress], None] | None = None,
                  cancel: CancelToken | None = None) -> dict[str, EvalReport]:
    """Every prompt on the same examples, concurrently; one combined progress (not logged: see score_split)."""
    return evaluate_entries(entries, examples, model, task=task, runner=runner, on_progress=on_progress, cancel=cancel)


def head_to_head(reports: dict[str, EvalReport], reference: str) -> list[dict]:
    """One row per prompt: scores over answered questions with interval, and the paired exact McNemar test vs
    the reference on the questions both answered (`dropped_pairs`: either call failed)."""
    ref = reports.get(reference)
    ref_map = ref.outcome_by_id() if ref is not None else {}
    rows = []
    for name, rep in reports.items():
        s = rep.summary()
        row = {"prompt": name, "accuracy": s["accuracy"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
               "macro_f1": s["macro_f1"], "n": s["n"], "answered": s["answered"], "unparsed": s["unparsed"],
               "errors": s["errors"],
               "calls": s["calls"], "cached": s["cached"], "cost_usd": s["cost_usd"], "cancelled": s["cancelled"],
               "delta_vs_ref": None, "p_vs_ref": None, "only_ref_right": None, "only_this_right": None,
               "pairs": None, "dropped_pairs": None}
        if ref is not None and name != reference:
            pair = paired_outcomes(ref_map, rep.outcome_by_id())
            t = mcnemar_exact(pair.a, pair.b)
            acc_ref = sum(pair.a) / len(pair.ids) if pair.ids else 0.0
            acc_me = sum(pair.b) / len(pair.ids) if pair.ids else 0.0
            row.update(delta_vs_ref=acc_me - acc_ref, p_vs_ref=t.p_value, only_ref_right=t.b, only_this_right=t.c,
                       pairs=len(pair.ids), dropped_pairs=pair.dropped)
        rows.append(row)
    return rows


def failed_calls_note(rows: list[dict]) -> str | None:
    """One line when some calls failed: per prompt "n answered, k failed", and the pairs the paired test dropped."""
    hit = [r for r in rows if r["errors"]]
    if not hit:
        return None
    parts = "; ".join(f"{r['prompt']}: {r['answered']} answered, {r['errors']} failed" for r in hit)
    dropped = sum(r["dropped_pairs"] or 0 for r in rows)
    return (f"Some calls failed ({parts}). Failed calls are not wrong answers: accuracy is over the answered "
            f"questions" + (f", and the paired test dropped {dropped} pair(s) where either call failed." if dropped
                            else ".") + " Run again to retry them (answers received are cached).")


def long_csv(reports: dict[str, EvalReport]) -> str:
    """Per-question results of every prompt, one row per (prompt, question)."""
    import pandas as pd

    frames = []
    for name, rep in reports.items():
        df = rep.to_dataframe()
        if df.empty:
            continue
        df.insert(0, "prompt_name", name)
        frames.append(df.drop(columns=["key"], errors="ignore"))
    if not frames:
        return ""
    return pd.concat(frames, ignore_index=True).to_csv(index=False)

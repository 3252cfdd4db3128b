"""A study's tables and figure (pandas and plotly; no streamlit): its runs, its settings' statistics, and final
validation (and test, when revealed) per setting with each run a point and the 95 % t-interval drawn."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from core.study import RunResult, SettingSummary, summarise_study, varying_axes

from .charts import ACCEPT, SEED, esc

TEST = "#6a1b9a"


AXIS_COLUMNS = {"backward": "backward", "val_size": "val size", "bandit": "bandit", "preset": "preset"}


def runs_table(results: list[RunResult]) -> pd.DataFrame:
    """One row per run, in grid order; of the study's axes only those it varies (the rest are the same for all)."""
    varying = varying_axes(results)
    rows = []
    for n, r in enumerate(results, 1):
        axes = {"backward": r.settings.backward, "val_size": r.settings.val_size or "default",
                "bandit": r.settings.bandit or "preset's", "preset": r.settings.preset}
        rows.append({"run": n, "session": r.session, "seed": r.settings.seed,
                     **{AXIS_COLUMNS[a]: axes[a] for a in varying}, "status": r.status, "baseline val": r.baseline_val,
                     "final val": r.final_val, "test": r.test, "steps": r.steps, "accepted": r.accepted,
                     "calls": r.calls, "cost_usd": round(r.cost_usd, 6)})
    return pd.DataFrame(rows)


def settings_table(per: list[SettingSummary], overall: SettingSummary) -> pd.DataFrame:
    """Per setting and overall: finished runs, final validation mean, sd and 95 % interval, test mean, calls, cost."""
    rows = []
    for p in per + [overall]:
        fv, t = p.final_val, p.test
        rows.append({"setting": p.label, "runs": fv.n, "final val mean": fv.mean, "sd": fv.sd,
                     "95% interval": (f"{fv.ci95[0]:.3f} – {fv.ci95[1]:.3f}" if fv.ci95 else "–"),
                     "test mean": t.mean, "calls": p.calls, "cost_usd": round(p.cost_usd, 6)})
    return pd.DataFrame(rows)


def _jitter(i: int, n: int) -> float:
    return 0.0 if n <= 1 else -0.12 + 0.24 * i / (n - 1)


def study_figure(results: list[RunResult]) -> go.Figure:
    """Final validation per setting: each run a point, the mean with its 95 % t-interval; test beside it."""
    per, _ = summarise_study(results)
    groups: dict[tuple, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.settings.setting(), []).append(r)
    labels = [esc(p.label, 50) for p in per]
    fig = go.Figure()
    for kind, offset, color, symbol in (("final val", -0.15, ACCEPT, "circle"), ("test", 0.2, TEST, "diamond")):
        xs, ys, hover = [], [], []
        for gi, rs in enumerate(groups.values()):
            done = [r for r in rs if (r.final_val if kind == "final val" else r.test) is not None]
            for i, r in enumerate(done):
                xs.append(gi + offset + _jitter(i, len(done)) * 0.5)
                ys.append(r.final_val if kind == "final val" else r.test)
                hover.append(f"{html.escape(r.session)} · seed {r.settings.seed}")
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"{kind}, one run each",
                                     marker=dict(color=color, symbol=symbol, size=9, opacity=0.75),
                                     text=hover, hovertemplate="%{text}: %{y:.1%}<extra>" + kind + "</extra>"))
        mx, my, up, down = [], [], [], []
        for gi, p in enumerate(per):
            s = p.final_val if kind == "final val" else p.test
            if s.mean is None:
                continue
            mx.append(gi + offset + 0.1)
            my.append(s.mean)
            lo, hi = s.ci95 if s.ci95 else (s.mean, s.mean)
            lo, hi = max(0.0, lo), min(1.0, hi)  # drawn within 0-100 %; the table keeps the interval as computed
            up.append(hi - s.mean)
            down.append(s.mean - lo)
        if mx:
            fig.add_trace(go.Scatter(x=mx, y=my, mode="markers", name=f"{kind} mean, 95% t-interval",
                                     marker=dict(color=color, symbol="line-ew-open", size=18, line=dict(width=3)),
                                     error_y=dict(type="data", symmetric=False, array=up, arrayminus=down,
                                                  color=color, thickness=2, width=8),
                                     hovertemplate="mean %{y:.1%}<extra>" + kind + "</extra>"))
    fig.update_layout(yaxis_title="accuracy", yaxis_tickformat=".0%", yaxis_range=[-0.04, 1.06], height=420,
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.14),
                      xaxis=dict(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels,
                                 range=[-0.6, len(labels) - 0.4], gridcolor="rgba(0,0,0,0)"),
                      plot_bgcolor="white")
    fig.update_yaxes(gridcolor="#eceff1", zerolinecolor=SEED)
    return fig

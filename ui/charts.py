"""Figures and tables built from a session (plotly and pandas; no streamlit).

Every label that may hold dataset or model text goes through `esc`: plotly reads a subset of HTML
in labels and hover text, so text is escaped before it gets there.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from core.session import Session, Step

ACCEPT, REJECT, SEED = "#2e7d32", "#c62828", "#546e7a"


def esc(text: object, limit: int = 60) -> str:
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s)


def history_points(s: Session) -> pd.DataFrame:
    """One row per validated step: the candidate's validation accuracy with its interval and outcome."""
    rows = []
    for st in s.steps:
        if st.gate is None:
            continue
        g = st.gate
        rows.append({"step": st.index, "accuracy": g.new_accuracy, "ci_low": g.new_ci[0], "ci_high": g.new_ci[1],
                     "before": g.old_accuracy, "p_value": g.p_value, "outcome": st.outcome or "pending",
                     "action": (st.decision or {}).get("action"), "fixed": len(g.fixed), "broke": len(g.broke)})
    return pd.DataFrame(rows)


def history_figure(s: Session) -> go.Figure:
    """Validation accuracy per step: accepted and rejected markers with Wilson error bars, the seed
    baseline as a horizontal line and the current-prompt accuracy as a step line."""
    fig = go.Figure()
    pts = history_points(s)
    if s.versions:
        v0 = s.versions[0]
        lo, hi = v0.report.interval
        last = max([st.index for st in s.steps] + [1])
        fig.add_trace(go.Scatter(x=[0, last], y=[v0.accuracy, v0.accuracy], mode="lines", name="seed baseline",
                                 line=dict(color=SEED, dash="dash"),
                                 hovertemplate=f"seed baseline {v0.accuracy:.1%} (95% CI {lo:.0%}–{hi:.0%})<extra></extra>"))
        xs, ys = [0], [v0.accuracy]
        for v in s.versions[1:]:
            xs.append(v.step)
            ys.append(v.accuracy)
        xs.append(last)
        ys.append(s.current.accuracy)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="current prompt", line=dict(color=ACCEPT, shape="hv",
                                 width=1), opacity=0.5, hoverinfo="skip"))
    for outcome, color, symbol in (("accepted", ACCEPT, "circle"), ("rejected", REJECT, "x"),
                                   ("pending", "#f9a825", "diamond")):
        part = pts[pts["outcome"] == outcome] if not pts.empty else pts
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["step"].tolist(), y=part["accuracy"].tolist(), mode="markers", name=outcome,
            marker=dict(color=color, symbol=symbol, size=12),
            error_y=dict(type="data", symmetric=False, array=(part["ci_high"] - part["accuracy"]).tolist(),
                         arrayminus=(part["accuracy"] - part["ci_low"]).tolist(), color=color, thickness=1.2),
            customdata=part[["before", "p_value", "fixed", "broke", "action"]].values.tolist(),
            hovertemplate=("step %{x}: %{y:.1%} (was %{customdata[0]:.1%})<br>McNemar p=%{customdata[1]:.3g}"
                           "<br>fixed %{customdata[2]}, broke %{customdata[3]} · %{customdata[4]}<extra>"
                           + outcome + "</extra>")))
    fig.update_layout(xaxis_title="step", yaxis_title="validation accuracy", yaxis_tickformat=".0%",
                      yaxis_range=[0, 1.06], height=380, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.12),
                      xaxis=dict(dtick=1, range=[-0.3, max([st.index for st in s.steps] + [1]) + 0.3]))
    return fig


def spend_table(s: Session) -> pd.DataFrame:
    """Per step and cumulative calls, tokens and cost (step 0 = baseline)."""
    rows = []
    base = next((ev.get("spend") for ev in s.events if ev["type"] == "baseline"), None)
    if base:
        rows.append({"step": 0, "outcome": "baseline", "calls": base["calls"], "cached": base["cached"],
                     "tokens": base["input_tokens"] + base["output_tokens"], "cost_usd": base["cost_usd"]})
    for st in s.steps:
        sp = st.spend
        rows.append({"step": st.index, "outcome": st.outcome or st.status, "calls": sp.calls, "cached": sp.cached,
                     "tokens": sp.input_tokens + sp.output_tokens, "cost_usd": sp.cost_usd})
    df = pd.DataFrame(rows)
    if not df.empty:
        for c in ("calls", "tokens", "cost_usd"):
            df[f"cumulative_{c}"] = df[c].cumsum()
    return df


def correctness_grid(s: Session) -> pd.DataFrame:
    """Rows = validation questions, columns = versions and rejected candidates.
    Cells: ✓ right, ✗ wrong, ✓+ fixed (wrong under its parent), ✗− broke (right under its parent)."""
    if not s.versions:
        return pd.DataFrame()
    cols: dict[str, dict[str, str]] = {}
    base = s.versions[0].report.correct_by_id()
    cols["v0 seed"] = {i: "✓" if ok else "✗" for i, ok in base.items()}
    for st in s.steps:
        if st.candidate_report is None:
            continue
        old = st.current_report.correct_by_id() if st.current_report else {}
        new = st.candidate_report.correct_by_id()
        if st.outcome == "accepted":
            vnum = next((v.number for v in s.versions if v.step == st.index), None)
            name = f"v{vnum} (step {st.index})"
        else:
            name = f"step {st.index} {st.outcome or 'pending'}"
        cells = {}
        for i, ok in new.items():
            was = old.get(i)
            cells[i] = ("✓+" if was is False else "✓") if ok else ("✗−" if was else "✗")
        cols[name] = cells
    df = pd.DataFrame(cols)
    df.index.name = "question id"
    return df


GRID_STYLE_CELLS = 1500  # pandas' Styler costs ~50 µs a cell on every rerun: colour small grids only


def grid_style(df: pd.DataFrame):
    colors = {"✓": "background-color:#e8f5e9", "✗": "background-color:#ffebee",
              "✓+": "background-color:#81c784;font-weight:bold", "✗−": "background-color:#e57373;font-weight:bold"}
    return df.style.map(lambda v: colors.get(v, ""))


def lineage_figure(s: Session, st: Step) -> go.Figure | None:
    """Failures → gradients → candidates → the decision, with the validation change, as a Sankey."""
    prop = st.proposal
    if prop is None:
        return None
    labels: list[str] = []
    hovers: list[str] = []
    colors: list[str] = []
    layers: list[float] = []
    index: dict[str, int] = {}

    def node(key: str, label: str, color: str, layer: float, hover: str = "") -> int:
        if key not in index:
            index[key] = len(labels)
            labels.append(label)
            hovers.append(hover or label)
            colors.append(color)
            layers.append(layer)
        return index[key]

    src, dst, val = [], [], []

    def link(a: int, b: int, v: float = 1.0) -> None:
        src.append(a)
        dst.append(b)
        val.append(v)

    # short labels (they sit between the columns), the full text on hover
    for n, g in enumerate(prop.gradients, 1):
        gi = node(f"g:{g.id}", f"gradient {n}", "#7e57c2", 0.3, f"gradient {n}: {esc(g.text, 160)}")
        for fid in g.failure_ids:
            fi = node(f"f:{fid}", f"failed {esc(fid, 24)}", "#ef9a9a", 0.01)
            link(fi, gi)
    d = st.decision or {}
    chosen = d.get("candidate")
    if st.gate is not None:
        change = f"{st.gate.old_accuracy:.0%} → {st.gate.new_accuracy:.0%}"
    else:
        change = "not validated"
    outcome = st.outcome or st.status
    if d.get("action") in ("accept", "edit"):
        final = node("final", f"{'hand edit' if d['action'] == 'edit' else 'chosen'}: {outcome} ({change})",
                     ACCEPT if outcome == "accepted" else REJECT, 0.99)
    else:
        final = node("final", f"{d.get('action') or 'undecided'}: {outcome}", REJECT if outcome == "rejected" else SEED, 0.99)
    for k, c in enumerate(prop.candidates, 1):
        ci = node(f"c:{c.id}", f"candidate {k}" + (f" ({c.score:.2f})" if c.score is not None else ""),
                  "#42a5f5", 0.78 if c.source_id else 0.56, f"candidate {k} ({esc(c.origin, 20)}): {esc(c.prompt, 160)}")
        if c.source_id and f"c:{c.source_id}" in index:
            link(index[f"c:{c.source_id}"], ci)
        elif c.gradient_id and f"g:{c.gradient_id}" in index:
            link(index[f"g:{c.gradient_id}"], ci)
        if chosen == c.id:
            link(ci, final)
    if d.get("action") == "edit":
        ed = node("edit", "your edit", "#ffb300", 0.78)
        for g in prop.gradients:
            link(index[f"g:{g.id}"], ed, 0.5)
        link(ed, final)
    if not src:
        return None
    ys: list[float] = []
    for i, layer in enumerate(layers):
        same = [j for j, x in enumerate(layers) if x == layer]
        ys.append(0.01 + 0.98 * (same.index(i) + 0.5) / len(same))
    rows = max(layers.count(x) for x in set(layers))
    fig = go.Figure(go.Sankey(arrangement="snap", node=dict(label=labels, color=colors, pad=12, thickness=14,
                                                            x=layers, y=ys, customdata=hovers,
                                                            hovertemplate="%{customdata}<extra></extra>"),
                              link=dict(source=src, target=dst, value=val, color="rgba(120,120,120,0.25)")))
    fig.update_layout(height=max(220, min(900, 40 * rows + 60)), margin=dict(l=10, r=10, t=10, b=10))
    return fig


def eval_figure(rows: list[dict]) -> go.Figure:
    """Test accuracy per prompt with Wilson intervals."""
    names = [esc(r["prompt"], 40) for r in rows]
    acc = [r["accuracy"] for r in rows]
    fig = go.Figure(go.Bar(x=names, y=acc, marker_color="#42a5f5",
                           error_y=dict(type="data", symmetric=False,
                                        array=[r["ci_high"] - r["accuracy"] for r in rows],
                                        arrayminus=[r["accuracy"] - r["ci_low"] for r in rows]),
                           hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    fig.update_layout(yaxis_title="test accuracy", yaxis_tickformat=".0%", yaxis_range=[0, 1.02], height=360,
                      margin=dict(l=10, r=10, t=10, b=10), bargap=0.6 if len(rows) < 3 else 0.25)
    return fig

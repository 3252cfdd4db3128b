"""Figures and tables built from a session (plotly and pandas; no streamlit).

Every label that may hold dataset or model text goes through `esc`: plotly reads a subset of HTML
in labels and hover text, so text is escaped before it gets there.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go

from core.lineage import verdicts
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


# ---------- the lineage of a step, drawn as a tree ----------

LINEAGE_MIN_WIDTH = 600  # px of plot area the labels are cut for: the page at 700 px is wider than this
LINEAGE_FONT_PX = 12
CHAR_PX = 7.6  # a conservative average glyph width at 12 px (measured in Chromium: ~6.5 px)
LABEL_PAD_PX = 4
ROW_PX = 26
SPINE = 0.06  # the connector's vertical line sits this fraction of a column before the child column
FAIL, GRAD, CAND, EDIT = "#ef9a9a", "#b39ddb", "#90caf9", "#ffe082"


@dataclass
class LineageNode:
    key: str
    label: str  # plain text, already cut to fit its column (escaped when drawn)
    hover: str  # plain text, the whole story of the node
    column: int
    row: float
    color: str


@dataclass
class LineageLayout:
    columns: list[str]  # column headers
    nodes: list[LineageNode] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)  # (parent key, child key)
    rows: int = 0

    def node(self, key: str) -> LineageNode:
        return next(n for n in self.nodes if n.key == key)


def _cut(text: str, chars: int) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= chars else s[: max(1, chars - 1)] + "…"


def label_chars(n_columns: int, width_px: int = LINEAGE_MIN_WIDTH, *, last: bool = False) -> int:
    """How many characters a label may have so its box stays inside its column, clear of the connector
    before the next one (the last column has none)."""
    col = width_px / max(1, n_columns)
    return max(4, int((col * (1 - (1 if last else 2) * SPINE) - 2 * LABEL_PAD_PX) // CHAR_PX))


def label_boxes(layout: LineageLayout, width_px: float) -> list[tuple[float, float, float, float]]:
    """Each label's box (x0, y0, x1, y1) in px when the plot area is `width_px` wide: positions scale with
    the width, text does not."""
    col = width_px / max(1, len(layout.columns))
    half = LINEAGE_FONT_PX / 2 + LABEL_PAD_PX
    return [(n.column * col, n.row * ROW_PX - half,
             n.column * col + len(n.label) * CHAR_PX + 2 * LABEL_PAD_PX, n.row * ROW_PX + half)
            for n in layout.nodes]


def _answer(r) -> str:
    return "(call failed)" if r.error else r.parsed if r.parsed is not None else "(unparsed)"


def lineage_layout(s: Session, st: Step, width_px: int = LINEAGE_MIN_WIDTH) -> LineageLayout | None:
    """The step as a tree, left to right: every failure → its gradient → the candidates it led to (a
    paraphrase beside the edit it rephrases) → the decision. One row per leaf; a parent centred on its rows."""
    prop = st.proposal
    if prop is None:
        return None
    names = _names(prop)
    verdict = verdicts(s.events).get(st.index)
    d = st.decision or {}
    has_para = any(c.source_id for c in prop.candidates)
    cols = ["failed question", "gradient", "candidate"] + (["paraphrase"] if has_para else []) + ["decision"]
    c_fail, c_grad, c_cand, c_para, c_dec = 0, 1, 2, 3 if has_para else 2, len(cols) - 1
    chars, chars_last = label_chars(len(cols), width_px), label_chars(len(cols), width_px, last=True)
    out = LineageLayout(cols)
    rows = {r.id: r for rep in st.forward for r in rep.rows}
    row = 0

    def add(key, label, hover, column, at, color):
        out.nodes.append(LineageNode(key, _cut(label, chars_last if column == c_dec else chars), hover, column, at,
                                     color))

    def failures(key, ids, start):
        for k, fid in enumerate(ids):
            r = rows.get(fid)
            said = f"gold {r.gold}, answered {_answer(r)}" if r else ""
            add(f"{key}/f:{fid}", f"✗ {fid}", f"failed {fid}: {said}".strip(": "), c_fail, start + k, FAIL)
            out.edges.append((f"{key}/f:{fid}", key))

    def candidate(c, at):
        k = names[c.id]
        score = f" · {c.score:.2f}" if c.score is not None else ""
        flags = f" · {', '.join(c.flags)}" if c.flags else ""
        add(f"c:{c.id}", f"{k}{score}", f"{k} ({c.origin}){score}{flags}: {c.prompt}",
            c_para if c.source_id and c.origin == "paraphrase" else c_cand, at, CAND)

    placed: set[str] = set()
    for n, g in enumerate(prop.gradients, 1):
        start = row
        kids = [c for c in prop.candidates if c.gradient_id == g.id and c.id not in placed]
        edits = [c for c in kids if not c.source_id or c.source_id not in {x.id for x in kids}]
        r = start
        for e in edits:
            paras = [c for c in kids if c.source_id == e.id]
            candidate(e, r + (len(paras) - 1) / 2 if paras else r)
            out.edges.append((f"g:{g.id}", f"c:{e.id}"))
            placed.add(e.id)
            for j, p in enumerate(paras):
                candidate(p, r + j)
                out.edges.append((f"c:{e.id}", f"c:{p.id}"))
                placed.add(p.id)
            r += max(1, len(paras))
        band = max(1, len(g.failure_ids), r - start)
        add(f"g:{g.id}", f"gradient {n}", f"gradient {n}: {g.text}", c_grad, start + (band - 1) / 2, GRAD)
        failures(f"g:{g.id}", g.failure_ids, start + (band - len(g.failure_ids)) / 2)
        row = start + band
    for c in prop.candidates:  # no gradient of this step (e.g. a beam prompt carried over)
        if c.id not in placed:
            candidate(c, row)
            row += 1
    if d.get("action") == "edit":
        add("edit", "your edit", f"your own prompt: {d.get('prompt') or ''}", c_cand, row, EDIT)
        row += 1
    used = {f for g in prop.gradients for f in g.failure_ids}
    unused = [r.id for rep in st.forward for r in rep.failures if r.id not in used]
    unused = list(dict.fromkeys(unused))
    if unused:
        add("unused", "no gradient", "failures no error group was built from", c_grad, row + (len(unused) - 1) / 2, SEED)
        failures("unused", unused, row)
        row += len(unused)
    chosen = "edit" if d.get("action") == "edit" else f"c:{d['candidate']}" if d.get("candidate") else None
    short, color = _decision_label(st, verdict)
    if chosen and any(n.key == chosen for n in out.nodes):
        add("decision", short, _decision_hover(st, verdict), c_dec, out.node(chosen).row, color)
        out.edges.append((chosen, "decision"))
    else:
        add("decision", short, _decision_hover(st, verdict), c_dec, max(0, row - 1) / 2, color)
    out.rows = max(1, row)
    return out


def _names(prop) -> dict[str, str]:
    out = {c.id: f"candidate {k}" for k, c in enumerate(prop.candidates, 1)}
    return out


def _decision_label(st: Step, v) -> tuple[str, str]:
    """A short label for the decision node and its colour."""
    if st.outcome == "accepted":
        return ("✓ you accepted" if v and v.override else "✓ accepted"), ACCEPT
    if st.outcome == "rejected":
        return ("✕ you rejected" if (v and v.override) or (st.decision or {}).get("action") == "reject"
                else "✕ rejected"), REJECT
    if st.outcome == "skipped":
        return "skipped", SEED
    return ("validated" if st.gate else "chosen" if st.decision else "open"), SEED


def _decision_hover(st: Step, v) -> str:
    change = (f" · validation {st.gate.old_accuracy:.1%} → {st.gate.new_accuracy:.1%}, McNemar p="
              f"{st.gate.p_value:.3g}" if st.gate else "")
    return (v.text() if v else st.outcome or st.status) + change


def lineage_figure(s: Session, st: Step, width_px: int = LINEAGE_MIN_WIDTH) -> go.Figure | None:
    """The lineage tree of a step (see `lineage_layout`); labels escaped, the full texts on hover."""
    lay = lineage_layout(s, st, width_px)
    if lay is None or len(lay.nodes) <= 1:
        return None
    pos = {n.key: n for n in lay.nodes}
    xs: list = []
    ys: list = []
    for a, b in lay.edges:
        pa, pb = pos[a], pos[b]
        spine = pb.column - SPINE
        xs += [pa.column, spine, spine, pb.column, None]
        ys += [pa.row, pa.row, pb.row, pb.row, None]
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="rgba(120,120,120,0.6)", width=1),
                               hoverinfo="skip", showlegend=False))
    for n in lay.nodes:
        fig.add_annotation(x=n.column, y=n.row, text=html.escape(n.label), hovertext=esc(n.hover, 300),
                           showarrow=False, xanchor="left", yanchor="middle", bgcolor=n.color,
                           borderpad=LABEL_PAD_PX - 1, borderwidth=0, font=dict(size=LINEAGE_FONT_PX, color="#212121"))
    for k, name in enumerate(lay.columns):
        fig.add_annotation(x=k, y=-1, text=f"<b>{html.escape(name)}</b>", showarrow=False, xanchor="left",
                           yanchor="middle", font=dict(size=LINEAGE_FONT_PX, color="#616161"))
    fig.update_layout(height=ROW_PX * (lay.rows + 1) + 30, margin=dict(l=10, r=10, t=10, b=10),
                      plot_bgcolor="rgba(0,0,0,0)", showlegend=False,
                      xaxis=dict(range=[0, len(lay.columns)], visible=False, fixedrange=True),
                      yaxis=dict(range=[lay.rows - 0.4, -1.6], visible=False, fixedrange=True))
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

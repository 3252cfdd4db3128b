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
    story = verdicts(s.events)
    for st in s.steps:
        if st.gate is None:
            continue
        g = st.gate
        v = story.get(st.index)
        rows.append({"step": st.index, "accuracy": g.new_accuracy, "ci_low": g.new_ci[0], "ci_high": g.new_ci[1],
                     "before": g.old_accuracy, "p_value": g.p_value, "outcome": st.outcome or "pending",
                     "override": bool(v and v.override), "who": v.text() if v else "",
                     "action": (st.decision or {}).get("action"), "fixed": len(g.fixed), "broke": len(g.broke)})
    return pd.DataFrame(rows)


def steps_table(s: Session) -> pd.DataFrame:
    """One row per step, the whole story: what was chosen, the validation change and who decided."""
    story = verdicts(s.events)
    names = {}
    rows = []
    for st in s.steps:
        d, g, v = st.decision or {}, st.gate, story.get(st.index)
        if st.proposal is not None:
            names = _names(st.proposal)
        action = d.get("action")
        chosen = (names.get(d.get("candidate"), "a candidate") if action == "accept" else
                  "your edit" if action == "edit" else "nothing (all rejected)" if action == "reject" else
                  "skipped" if action == "skip" else "")
        rows.append({"step": st.index, "chosen": chosen, "decided": v.text() if v else st.outcome or st.status,
                     "validation": f"{g.old_accuracy:.1%} → {g.new_accuracy:.1%}" if g else "",
                     "p": g.p_value if g else None})
    return pd.DataFrame(rows, columns=["step", "chosen", "decided", "validation", "p"])


REPLAY_HEADERS = {"step": "step", "action": "decision", "recorded_outcome": "recorded outcome",
                  "replayed_outcome": "replayed outcome", "recorded_val": "recorded validation accuracy",
                  "replayed_val": "replayed validation accuracy", "error": "error"}


def replay_table(steps: list[dict]) -> pd.DataFrame:
    """A replay's per-step rows with human headers, and whether each step came out the same."""
    df = pd.DataFrame(steps)
    if df.empty:
        return df
    if "recorded_outcome" in df.columns:
        same = df["recorded_outcome"] == df.get("replayed_outcome")
        if "recorded_val" in df.columns:
            same &= (df["recorded_val"].isna() & df["replayed_val"].isna()) | (df["recorded_val"] == df["replayed_val"])
        df["same"] = same.map({True: "yes", False: "no"})
    return df.rename(columns=REPLAY_HEADERS)


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
    for outcome, override, name, color, symbol in (
            ("accepted", False, "accepted", ACCEPT, "circle"),
            ("accepted", True, "accepted by you (gate rejected)", ACCEPT, "star"),
            ("rejected", False, "rejected", REJECT, "x"),
            ("rejected", True, "rejected by you (gate accepted)", REJECT, "x-open"),
            ("pending", False, "pending", "#f9a825", "diamond")):
        part = pts[(pts["outcome"] == outcome) & (pts["override"] == override)] if not pts.empty else pts
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["step"].tolist(), y=part["accuracy"].tolist(), mode="markers", name=name,
            marker=dict(color=color, symbol=symbol, size=12),
            error_y=dict(type="data", symmetric=False, array=(part["ci_high"] - part["accuracy"]).tolist(),
                         arrayminus=(part["accuracy"] - part["ci_low"]).tolist(), color=color, thickness=1.2),
            customdata=part[["before", "p_value", "fixed", "broke", "who"]].values.tolist(),
            hovertemplate=("step %{x}: %{y:.1%} (was %{customdata[0]:.1%})<br>McNemar p=%{customdata[1]:.3g}"
                           "<br>fixed %{customdata[2]}, broke %{customdata[3]} · %{customdata[4]}<extra>"
                           + html.escape(name) + "</extra>")))
    fig.update_layout(xaxis_title="step", yaxis_title="validation accuracy", yaxis_tickformat=".0%",
                      yaxis_range=[-0.04, 1.06], height=380, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=1.12),
                      xaxis=dict(dtick=1, range=[-0.3, max([st.index for st in s.steps] + [1]) + 0.3]))
    return fig


SPEND_PART_NAMES = {"baseline": "baseline (seed prompt on validation)", "test": "Evaluate (test split)",
                    "confirmation": "confirmation slice", "other": "other (unattributed)"}


def spend_table(s: Session) -> pd.DataFrame:
    """The session's spend ledger, one row per part (baseline, each step, Evaluate on test, confirmation),
    with running totals: its last row's totals are the session's spend (the sidebar's figures)."""
    outcomes = {f"step {st.index}": st.outcome or st.status for st in s.steps}
    order = ["baseline"] + [f"step {st.index}" for st in s.steps] + ["test", "confirmation", "other"]
    rows = []
    for part in order + [p for p in s.ledger if p not in order]:
        sp = s.ledger.get(part)
        if sp is None:
            continue
        rows.append({"part": SPEND_PART_NAMES.get(part, part), "outcome": outcomes.get(part, ""), "calls": sp.calls,
                     "cached": sp.cached, "tokens": sp.input_tokens + sp.output_tokens, "cost_usd": sp.cost_usd})
    df = pd.DataFrame(rows)
    if not df.empty:
        for c in ("calls", "tokens", "cost_usd"):
            df[f"cumulative_{c}"] = df[c].cumsum()
    return df


def grid_columns(s: Session) -> list[tuple[str, object, object]]:
    """(column name, its validation report, the report of the prompt it was compared with) for the seed and
    every validated step: accepted ones as their version, the others by step and outcome."""
    if not s.versions:
        return []
    cols = [("v0 seed", s.versions[0].report, None)]
    for st in s.steps:
        if st.candidate_report is None:
            continue
        if st.outcome == "accepted":
            vnum = next((v.number for v in s.versions if v.step == st.index), None)
            name = f"v{vnum} (step {st.index})"
        else:
            name = f"step {st.index} {st.outcome or 'pending'}"
        cols.append((name, st.candidate_report, st.current_report))
    return cols


def current_column(s: Session) -> str | None:
    """The grid column of the current prompt."""
    if not s.versions:
        return None
    cur = s.current
    return "v0 seed" if cur.number == 0 else f"v{cur.number} (step {cur.step})"


def correctness_grid(s: Session) -> pd.DataFrame:
    """Rows = validation questions, columns = versions and rejected candidates.
    Cells: ✓ right, ✗ wrong, ✓+ fixed (wrong under its parent), ✗− broke (right under its parent)."""
    cols: dict[str, dict[str, str]] = {}
    for name, rep, parent in grid_columns(s):
        old = parent.correct_by_id() if parent is not None else {}
        cols[name] = {i: ("✓+" if old.get(i) is False else "✓") if ok else ("✗−" if old.get(i) else "✗")
                      for i, ok in rep.correct_by_id().items()}
    df = pd.DataFrame(cols)
    df.index.name = "question id"
    return df


GRID_FILTERS = ("changed", "failing now", "fixed", "broken", "all")


def filter_grid(grid: pd.DataFrame, how: str, current: str | None) -> pd.DataFrame:
    """Questions that changed somewhere, fail under the current prompt, were fixed or broken by an edit, or all."""
    if grid.empty or how == "all":
        return grid
    if how == "failing now":
        col = grid[current] if current in grid.columns else grid.iloc[:, -1]
        return grid[col.isin(("✗", "✗−"))]
    marks = {"changed": ("✓+", "✗−"), "fixed": ("✓+",), "broken": ("✗−",)}[how]
    return grid[grid.isin(marks).any(axis=1)]


def question_answers(s: Session, qid: str) -> pd.DataFrame:
    """One question across the grid's columns: each version's (or candidate's) answer, its status, and the
    answer of the prompt it was compared with."""
    rows = []
    for name, rep, parent in grid_columns(s):
        r = next((x for x in rep.rows if x.id == qid), None)
        if r is None:
            continue
        p = next((x for x in parent.rows if x.id == qid), None) if parent is not None else None
        rows.append({"prompt": name, "answer": _answer(r), "status": r.status, "gold": r.gold,
                     "compared with": "" if p is None else f"{_answer(p)} ({p.status})",
                     "raw output": r.error or r.raw_output})
    return pd.DataFrame(rows, columns=["prompt", "answer", "status", "gold", "compared with", "raw output"])


GRID_STYLE_CELLS = 1500  # pandas' Styler costs ~50 µs a cell on every rerun: colour small grids only


def grid_style(df: pd.DataFrame):
    colors = {"✓": "background-color:#e8f5e9", "✗": "background-color:#ffebee",
              "✓+": "background-color:#81c784;font-weight:bold", "✗−": "background-color:#e57373;font-weight:bold"}
    return df.style.map(lambda v: colors.get(v, ""))


# ---------- the lineage of a step, drawn as a tree ----------

LINEAGE_MIN_WIDTH = 600  # px of plot area the labels are cut for: the page at 700 px is wider than this
LINEAGE_FONT_PX = 12
CHAR_PX = 6.8  # glyph width at 12 px with room to spare: Chromium measured 5.6 px on average, 6.0 at most
LABEL_PAD_PX = 4
ROW_PX = 26
SPINE = 0.06  # the connector's vertical line sits this fraction of a column before the child column
FAIL, GRAD, CAND, EDIT = "#ef9a9a", "#b39ddb", "#90caf9", "#ffe082"
DECIDED = {"accepted": "#a5d6a7", "rejected": "#e57373", "other": "#cfd8dc"}  # light: the label text is dark


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
        label = f"{k}{score}" if len(k + score) <= chars else k  # the score only where it fits whole
        add(f"c:{c.id}", label, f"{k} ({c.origin}){score}{flags}: {c.prompt}",
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
        add("unused", "no gradient", "failures no error group was built from", c_grad, row + (len(unused) - 1) / 2,
            "#cfd8dc")
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
        return ("✓ you accepted" if v and v.override else "✓ accepted"), DECIDED["accepted"]
    if st.outcome == "rejected":
        return ("✕ you rejected" if (v and v.override) or (st.decision or {}).get("action") == "reject"
                else "✕ rejected"), DECIDED["rejected"]
    if st.outcome == "skipped":
        return "skipped", DECIDED["other"]
    return ("validated" if st.gate else "chosen" if st.decision else "open"), DECIDED["other"]


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


def delta_text(delta: float | None) -> str:
    """A head-to-head accuracy change as text: "reference" for the reference itself, "±0.0 pts" for none."""
    if delta is None:
        return "reference"
    pts = 100 * delta
    return "±0.0 pts" if round(pts, 1) == 0 else f"{pts:+.1f} pts"


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

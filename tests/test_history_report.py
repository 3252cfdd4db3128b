"""History's story, the lineage tree layout, the whole-step report, and the small numbers on History/Evaluate.

The session's decisions are constructed (tests/story.py: a table of right answers per prompt), so each step's
gate outcome and override are known before the test looks at them."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from core.evaluate import EvalReport, EvalRow
from core.lineage import Candidate, Gradient, Proposal, verdicts
from core.llm import ModelSpec
from core.report import markdown_report
from core.session import Session, Step
from tests.fake_model import FakeModel
from tests.story import BETTER, WORSE, story_session
from tests.test_bundle_integrity import outside_fences
from ui import charts


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> Session:
    s = story_session(tmp_path_factory.mktemp("story") / "sessions")
    yield s
    s.close()


# ---------- who decided ----------

def test_verdicts_name_the_override_and_every_other_decision(story):
    v = verdicts(story.events)
    assert [st.outcome for st in story.steps] == ["accepted", "accepted", "rejected", "rejected"]
    assert v[1].override and v[1].gate_verdict is False and v[1].accepted is True
    assert v[1].text() == "rejected by the gate, accepted by you"
    assert (v[2].text(), v[3].text()) == ("accepted by the gate", "rejected by the gate")
    assert not v[2].override and not v[3].override
    assert v[4].text() == "rejected by you (no candidate taken)" and v[4].gate_verdict is None


def test_steps_table_and_chart_show_the_override(story):
    table = charts.steps_table(story)
    assert table["decided"].tolist() == ["rejected by the gate, accepted by you", "accepted by the gate",
                                         "rejected by the gate", "rejected by you (no candidate taken)"]
    assert table["chosen"].tolist() == ["candidate 1", "your edit", "your edit", "nothing (all rejected)"]
    g = story.steps[0].gate
    assert table["validation"][0] == f"{g.old_accuracy:.1%} → {g.new_accuracy:.1%}"
    names = {tr.name: list(tr.x) for tr in charts.history_figure(story).data if tr.mode == "markers"}
    assert names == {"accepted by you (gate rejected)": [1], "accepted": [2], "rejected": [3]}


# ---------- the lineage tree ----------

def test_lineage_tree_lists_every_failure_and_hangs_paraphrases_beside_their_edit(story):
    for st in story.steps:
        lay = charts.lineage_layout(story, st)
        fails = {n.hover.split(":")[0].removeprefix("failed ") for n in lay.nodes if n.column == 0}
        assert fails == {r.id for r in st.forward[0].failures}  # every minibatch failure, used by a gradient or not
        by_key = {n.key: n for n in lay.nodes}
        for c in st.proposal.candidates:
            node = by_key[f"c:{c.id}"]
            parent = next(a for a, b in lay.edges if b == f"c:{c.id}")
            if c.source_id and f"c:{c.source_id}" in by_key:
                assert parent == f"c:{c.source_id}" and node.column == by_key[parent].column + 1
            else:
                assert parent == f"g:{c.gradient_id}"
    first = charts.lineage_layout(story, story.steps[0])
    dec = first.node("decision")
    assert dec.label == "✓ you accepted" and "rejected by the gate, accepted by you" in dec.hover
    assert dec.row == first.node(f"c:{story.steps[0].decision['candidate']}").row  # drawn beside the chosen one


def _synthetic_step(i: int, n_cands: int = 4) -> Step:
    """A step with long ids and texts: 2 gradients, 4 candidates (edits, a paraphrase, an orphan), extra failures."""
    ids = [f"question-{i}-{k}-with-a-long-identifier" for k in range(7)]
    rows = [EvalRow(q, "", "yes", "Answer: no", "no", False) for q in ids]
    grads = [Gradient(f"g{i}.{k}", "<b>why</b> " * 30, ids[k * 3: k * 3 + 3], "seed") for k in (0, 1)]
    cands = [Candidate(f"g{i}.0.e1", "edit " * 40, "seed", "edit", gradient_id=f"g{i}.0", score=0.5),
             Candidate(f"g{i}.0.e1.p1", "para " * 40, "seed", "paraphrase", gradient_id=f"g{i}.0",
                       source_id=f"g{i}.0.e1", score=0.25, flags=["cut off"]),
             Candidate(f"g{i}.1.e1.p1", "orphan " * 40, "seed", "paraphrase", gradient_id=f"g{i}.1",
                       source_id="dropped"),
             Candidate(f"b{i}", "beam " * 40, "seed", "beam")][:n_cands]
    st = Step(i, 0, 0, ["seed"], ids, forward=[EvalReport("seed", rows, ["yes", "no"])],
              proposal=Proposal(gradients=grads, candidates=cands))
    st.decision = {"action": "accept", "candidate": cands[i % len(cands)].id, "prompt": "x"}
    st.outcome = "accepted" if i % 2 else "rejected"
    return st


def _overlaps(boxes):
    return [(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:]
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]


@pytest.mark.parametrize("plot_width", [600, 660, 1000, 1340])  # the plot area at 700 px and at 1400 px
def test_lineage_labels_never_overlap(story, plot_width):
    events = [{"type": "gate", "step": i, "verdict": i % 3 == 0, "accepted": bool(i % 2), "override": True}
              for i in range(1, 7)]
    s = SimpleNamespace(events=events)
    steps = [_synthetic_step(i) for i in range(1, 7)] + list(story.steps)
    for st in steps:
        lay = charts.lineage_layout(story if st in story.steps else s, st)
        assert len([n for n in lay.nodes if n.key.startswith("c:")]) == len(st.proposal.candidates)
        boxes = charts.label_boxes(lay, plot_width)
        assert not _overlaps(boxes), (st.index, plot_width)
        assert all(b[2] <= plot_width for b in boxes)
    cut = charts.lineage_layout(s, steps[0])
    assert any(n.label.endswith("…") for n in cut.nodes)  # long ids were cut to fit, not left to collide


def test_lineage_figure_escapes_labels_and_hover(story):
    st = _synthetic_step(1)
    fig = charts.lineage_figure(SimpleNamespace(events=[]), st)
    texts = [a.text for a in fig.layout.annotations] + [a.hovertext or "" for a in fig.layout.annotations]
    assert not any("<b>why" in t for t in texts) and any("&lt;b&gt;why" in t for t in texts)


# ---------- the question grid ----------

def test_grid_filters_and_every_versions_answer(story):
    grid = charts.correctness_grid(story)
    current = charts.current_column(story)
    assert current == "v2 (step 2)" and current in grid.columns
    failing = charts.filter_grid(grid, "failing now", current)
    assert failing.empty  # BETTER answers every validation question right
    fixed = charts.filter_grid(grid, "fixed", current)
    broken = charts.filter_grid(grid, "broken", current)
    assert set(fixed.index) == set(story.steps[1].gate.fixed)
    assert set(broken.index) == set(story.steps[0].gate.broke) | set(story.steps[2].gate.broke)
    qid = next(q for q in story.steps[0].gate.broke if q in story.steps[2].gate.broke)
    ans = charts.question_answers(story, qid)
    assert ans["prompt"].tolist() == list(grid.columns)
    assert ans["status"].tolist() == ["correct", "wrong", "correct", "wrong"]  # seed, override, BETTER, WORSE


# ---------- small numbers ----------

def test_no_change_reads_as_no_change():
    from ui.step_view import points_delta

    assert points_delta(0.0) == {"delta": "±0.0 pts", "delta_color": "off", "delta_arrow": "off"}
    assert points_delta(0.04)["delta_arrow"] == "off" and points_delta(-2.5) == {"delta": "-2.5 pts"}
    assert [charts.delta_text(x) for x in (None, 0.0, 0.031, -0.1)] == ["reference", "±0.0 pts", "+3.1 pts",
                                                                         "-10.0 pts"]


def test_replay_table_has_human_headers():
    df = charts.replay_table([{"step": 1, "action": "accept", "recorded_outcome": "accepted", "recorded_val": 0.5,
                               "replayed_val": 0.5, "replayed_outcome": "accepted"},
                              {"step": 2, "action": "reject", "recorded_outcome": "rejected",
                               "replayed_outcome": "accepted"}])
    assert not [c for c in df.columns if "_" in c]
    assert df["same"].tolist() == ["yes", "no"]


# ---------- the report ----------

def test_report_tells_the_whole_step(story):
    md = markdown_report(story)
    text, blocks = outside_fences(md)
    assert "accepted: rejected by the gate, accepted by you" in text  # the validation table
    steps = text.split("### Step ")[1:]
    assert len(steps) == 4
    one = steps[0]
    assert "Outcome: **accepted**, an override: rejected by the gate, accepted by you" in one
    g = story.steps[0].gate
    assert f"current prompt {g.old_accuracy:.3f}" in one and f"chosen {g.new_accuracy:.3f}" in one
    assert f"broke {len(g.broke)} (" in one and f"p = {g.p_value:.3g}" in one
    for r in story.steps[0].forward[0].failures:
        assert f"| {r.id} | {r.gold} |" in one
    prop = story.steps[0].proposal
    for grad in prop.gradients:
        assert grad.text in blocks
    assert sum(b.startswith("--- parent") for b in blocks) >= len(prop.candidates)
    assert "**chosen**" in one and "rephrasing candidate 1" in one
    assert "Decision: accept a hand edit" in steps[1] and "Decision: reject every candidate" in steps[3]
    assert any(f"+{BETTER}" in b for b in blocks) and any(f"+{WORSE}" in b for b in blocks)
    assert "## Meta-prompts used" in text and any("{errors}" in b for b in blocks)  # the templates as used


HOSTILE = "<img src=x onerror=alert(1)> **bold** [click](javascript:alert(2)) | a | b |\n# Heading\n````\n<script>x</script>"


class HostileGradient(FakeModel):
    def reply(self, req):
        if req.tag == "protegi.gradient":
            return f"<START>{HOSTILE}<END>"
        return super().reply(req)


def test_report_renders_a_hostile_gradient_inert(tmp_path):
    s = story_session(tmp_path / "sessions", bwd=HostileGradient(spec=ModelSpec("fake", "bwd")))
    md = markdown_report(s)
    s.close()
    text, blocks = outside_fences(md)
    assert HOSTILE in blocks  # byte for byte, inside a fence longer than its own backticks
    assert not re.search(r"<\s*(script|img)", text, re.I)
    assert not re.search(r"(?<!\\)\]\(javascript", text) and "\n# Heading" not in text
    assert "**bold**" not in text


# ---------- the pages (AppTest) ----------

def test_history_and_evaluate_pages_tell_the_story(app_test_env):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, check, goto

    s = story_session(app_test_env / "sessions", val=12)
    sid, gate1 = s.id, s.steps[0].gate
    s.close()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["sid"] = sid
    check(at.run())
    goto(at, "history")
    story = next(df.value for df in at.dataframe if "decided" in df.value.columns)
    assert story["decided"].tolist()[0] == "rejected by the gate, accepted by you"
    label = at.selectbox(key="hist_step")
    assert label.options[-1] == "step 1 — accepted (rejected by the gate, accepted by you)"
    label.set_value(len(label.options) - 1)  # step 1, the override
    check(at.run())
    assert any("Outcome: accepted — rejected by the gate, accepted by you" in w.value.replace("\\", "")
               for w in at.warning)
    at.segmented_control(key="grid_filter").set_value("broken")
    check(at.run())
    qid = next(q for q in gate1.broke)
    at.selectbox(key="grid_q").set_value(qid)
    check(at.run())
    answers = next(df.value for df in at.dataframe if "compared with" in df.value.columns)
    assert answers["status"].tolist()[:2] == ["correct", "wrong"]  # the seed right, the overridden v1 wrong
    at.segmented_control(key="grid_filter").set_value("failing now")
    check(at.run())
    assert any("No questions match this filter." in c.value for c in at.caption)  # v2 answers every one right
    goto(at, "evaluate")
    at.number_input(key="eval_limit").set_value(10)
    check(at.run())
    check(at.button(key="run_eval").click().run())
    check(at.button(key="reveal_test").click().run())
    table = next(df.value for df in at.dataframe if "McNemar p" in df.value.columns)
    assert table["Δ vs reference"].tolist()[0] == "reference"
    assert re.fullmatch(r"[+-]\d+\.\d pts|±0\.0 pts", table["Δ vs reference"].tolist()[1])
    assert "errors" not in table.columns and "None" not in table.astype(str).to_numpy().ravel().tolist()[:3]

"""Per-sentence blame: attribution across accepted, rejected and hand-edited steps, the `pgs blame` verb, the
Markdown section and the app view. Decisions are the test's (decide / validate / confirm); the fake only writes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from core.blame import BlameError, Failure, SentenceBlame, blame, split_sentences
from core.blame_report import blame_markdown
from core.llm import ModelSpec
from core.runner import Runner
from core.session import Models, Session, SessionConfig
from tests.conftest import ROOT
from tests.fake_model import FakeModel, TableModel, _between
from tests.test_bundle_integrity import IMG, SCRIPT, outside_fences
from tests.test_cli import last_json, pgs

SEED = "You are a careful assistant. Answer yes, no or maybe."
HOSTILE = f"Say **why** {SCRIPT} [click](javascript:alert(3)) | cell ```` fence {IMG}"


@dataclass
class ScriptedWriter(FakeModel):
    """The backward model: the n-th gradient call says gradients[n-1], the n-th update appends additions[n-1]."""

    gradients: list[str] = field(default_factory=list)
    additions: list[str] = field(default_factory=list)

    def reply(self, req):
        user = next((c for r, c in reversed(req.messages) if r == "user"), "")
        if req.tag == "textgrad.gradient":
            return f"<FEEDBACK>{self.gradients[self.calls['textgrad.gradient'] - 1]}</FEEDBACK>"
        if req.tag == "textgrad.update":
            prompt = _between(user, "<VARIABLE> ", " </VARIABLE>")
            return f"<IMPROVED_VARIABLE>{prompt} {self.additions[self.calls['textgrad.update'] - 1]}</IMPROVED_VARIABLE>"
        return super().reply(req)


GRADIENTS = ["Step one's gradient: state a rule.", "Step two's gradient: add another rule.",
             "Step three's gradient (the person edits instead).", HOSTILE]
ADDITIONS = ["Rule one.", "Rule two.", "Rule three, never taken.", "Rule one. You are a careful assistant."]
EDIT = "You are a careful   assistant.\nAnswer yes, no or maybe.\nCheck the p-value."


def four_steps(root: Path) -> Session:
    """seed -> step 1 accepted (+Rule one) -> step 2 rejected at the gate (+Rule two) -> step 3 a hand edit that
    drops Rule one and adds a line -> step 4 accepted by override (re-adds Rule one, repeats the first sentence).
    The forward model answers every minibatch question wrong, and right on 5 of 10 validation questions only
    for the step-1 prompt, so step 1 passes the gate and the others do not."""
    fwd = TableModel(spec=ModelSpec("fake", "fwd"))
    bwd = ScriptedWriter(spec=ModelSpec("fake", "bwd"), gradients=GRADIENTS, additions=ADDITIONS)
    cfg = SessionConfig(task={"name": "pubmedqa"}, method="textgrad", preset="AutoMedPrompt paper",
                        forward="fake:fwd", backward="fake:bwd", seed_prompt=SEED, val_limit=10,
                        params={"batch_size": 3})
    s = Session.create(cfg, root=root, models=Models(fwd, bwd, Runner(concurrency=8)))
    fwd.learn(s.task)
    fwd.table[f"{SEED} Rule one."] = {e.id for e in s.val_examples()[:5]}
    s.run_baseline()
    for step in range(1, 5):
        st = s.start_step()
        if step == 3:
            s.decide("edit", prompt=EDIT)
        else:
            s.decide("accept", candidate=st.proposal.candidates[0].id)
        s.validate()
        s.confirm({1: None, 2: None, 3: True, 4: True}[step])
    assert [st.outcome for st in s.steps] == ["accepted", "rejected", "accepted", "accepted"]
    return s


@pytest.fixture
def session(tmp_path):
    s = four_steps(tmp_path / "sessions")
    yield s
    s.close()


def by_step(s: Session, index: int):
    return next(st for st in s.steps if st.index == index)


# ---------- sentences ----------

def test_split_sentences_on_punctuation_lines_abbreviations_and_nothing():
    assert split_sentences("Be brief. Use e.g. a table! Why? Yes.") == ["Be brief.", "Use e.g. a table!", "Why?", "Yes."]
    assert split_sentences("answer yes or no\n\n  cite the abstract  \nno guessing") == [
        "answer yes or no", "cite the abstract", "no guessing"]
    assert split_sentences("Steps:\n1. Read the question.\n2. Answer.") == ["Steps:", "1. Read the question.", "2. Answer."]
    assert split_sentences("") == [] and split_sentences(" \n\t\n") == []


def test_blame_of_an_empty_prompt_and_of_a_prompt_without_punctuation():
    versions = [SimpleNamespace(number=0, prompt="answer yes or no\ncite the abstract", step=0, origin="seed"),
                SimpleNamespace(number=1, prompt="", step=1, origin="edit")]
    steps = [SimpleNamespace(index=1, outcome="accepted", decision={"action": "edit", "prompt": ""}, proposal=None,
                             forward=[], gate=None)]
    state = SimpleNamespace(versions=versions, steps=steps)
    assert [(b.text, b.step, b.origin) for b in blame(state, 0)] == [
        ("answer yes or no", 0, "seed"), ("cite the abstract", 0, "seed")]
    assert blame(state) == []


# ---------- attribution on a real session ----------

def test_each_sentence_is_blamed_on_the_step_that_introduced_it(session):
    s = session
    assert [v.step for v in s.versions] == [0, 1, 3, 4]
    rows = blame(s)
    assert [(b.text, b.step, b.origin) for b in rows] == [
        ("You are a careful   assistant.", 0, "seed"),  # whitespace changed in the edit: still the seed's
        ("Answer yes, no or maybe.", 0, "seed"),
        ("Check the p-value.", 3, "person"),  # the hand edit
        ("Rule one.", 4, "update"),  # dropped by the edit, re-added by step 4: step 4's
        ("You are a careful assistant.", 4, "update"),  # a second copy of the seed's first sentence
    ]
    assert rows[2].gradient is None and rows[2].failures == []
    g4 = by_step(s, 4).proposal.gradients[0]
    assert rows[3].gradient == rows[4].gradient == g4.text == HOSTILE and rows[3].gradient_id == g4.id
    assert rows[3].override and rows[2].override and not any(b.override for b in blame(s, 1))
    for b, st in ((rows[2], by_step(s, 3)), (rows[3], by_step(s, 4))):
        assert b.delta_pts == round(100 * (st.gate.new_accuracy - st.gate.old_accuracy), 1)


def test_failures_are_the_minibatch_answers_the_gradient_came_from(session):
    s = session
    st1 = by_step(s, 1)
    v1 = blame(s, 1)
    assert [(b.text, b.step, b.origin) for b in v1] == [
        ("You are a careful assistant.", 0, "seed"), ("Answer yes, no or maybe.", 0, "seed"), ("Rule one.", 1, "update")]
    rule = v1[2]
    assert rule.gradient == GRADIENTS[0] and rule.candidate_id == st1.decision["candidate"]
    assert rule.delta_pts == 50.0 and not rule.override  # 5 of 10 right against 0 of 10, constructed above
    gold = {e.id: e.label for e in s.task.split("train")}
    # every minibatch answer was made wrong, so the gradient came from all three, each with its gold and answer
    assert sorted(f.id for f in rule.failures) == sorted(st1.minibatch_ids) and len(rule.failures) == 3
    for f in rule.failures:
        assert f.gold == gold[f.id] and f.answer is not None and f.answer != f.gold
        assert f.feedback  # the TextGrad loss text on that answer


def test_a_rejected_step_leaves_no_sentence_and_versions_are_checked(session):
    s = session
    every = [b for n in range(len(s.versions)) for b in blame(s, n)]
    assert not any("Rule two" in b.text or "Rule three" in b.text for b in every)
    assert not any(b.step == 2 for b in every)
    assert [b.text for b in blame(s, 3)] == [b.text for b in blame(s)]
    for bad in (4, -1, True, "1"):
        with pytest.raises(BlameError, match="versions 0 to 3"):
            blame(s, bad)
    with pytest.raises(BlameError, match="no prompt versions"):
        blame(SimpleNamespace(versions=[], steps=[]))


def test_an_edit_of_a_candidate_keeps_the_candidates_sentences_on_its_gradient(tmp_path):
    fwd = TableModel(spec=ModelSpec("fake", "fwd"))
    bwd = ScriptedWriter(spec=ModelSpec("fake", "bwd"), gradients=["Name the rule."], additions=["Rule A."])
    cfg = SessionConfig(task={"name": "pubmedqa"}, method="textgrad", preset="AutoMedPrompt paper",
                        forward="fake:fwd", backward="fake:bwd", seed_prompt=SEED, val_limit=4)
    with Session.create(cfg, root=tmp_path / "s", models=Models(fwd, bwd, Runner())) as s:
        fwd.learn(s.task)
        s.run_baseline()
        cand = s.start_step().proposal.candidates[0]
        s.decide("edit", candidate=cand.id, prompt=cand.prompt + " My own rule.")
        s.validate()
        s.confirm(True)
        rows = blame(s)
    assert [(b.text, b.origin, b.gradient) for b in rows[2:]] == [("Rule A.", "update", "Name the rule."),
                                                                  ("My own rule.", "person", None)]


def test_a_protegi_paraphrase_is_blamed_on_its_gradient_and_error_group(tmp_path):
    fwd = TableModel(spec=ModelSpec("fake", "fwd"))
    cfg = SessionConfig(task={"name": "pubmedqa"}, method="protegi", preset="quick", forward="fake:fwd",
                        backward="fake:bwd", seed_prompt=SEED, val_limit=4)
    with Session.create(cfg, root=tmp_path / "s", models=Models(fwd, FakeModel(spec=ModelSpec("fake", "bwd")),
                                                                  Runner())) as s:
        fwd.learn(s.task)
        s.run_baseline()
        st = s.start_step()
        para = next(c for c in st.proposal.candidates if c.origin == "paraphrase")
        s.decide("accept", candidate=para.id)
        s.validate()
        s.confirm(True)
        grad = next(g for g in st.proposal.gradients if g.id == para.gradient_id)
        new = [b for b in blame(s) if b.step == 1]
    assert new and all(b.origin == "paraphrase" and b.gradient == grad.text for b in new)
    assert [f.id for f in new[0].failures] == grad.failure_ids and grad.failure_ids
    answers = {r.id: r for r in st.forward[0].rows}
    assert all(f.gold == answers[f.id].gold and f.answer == answers[f.id].parsed for f in new[0].failures)


def test_override_is_the_recorded_verdict_not_just_a_failed_gate(tmp_path):
    """A prompt quoting a validation question passes the score gate but the verdict refuses it (held-out leak):
    accepting it is the person's override, though gate.passed is True."""
    fwd = TableModel(spec=ModelSpec("fake", "fwd"))
    bwd = ScriptedWriter(spec=ModelSpec("fake", "bwd"), gradients=["Quote the data."], additions=["Rule A."])
    cfg = SessionConfig(task={"name": "pubmedqa"}, method="textgrad", preset="AutoMedPrompt paper",
                        forward="fake:fwd", backward="fake:bwd", seed_prompt=SEED, val_limit=4)
    with Session.create(cfg, root=tmp_path / "s", models=Models(fwd, bwd, Runner())) as s:
        fwd.learn(s.task)
        leaky = f"{SEED}\n{s.task.render(s.val_examples()[0])}"
        fwd.table[leaky] = {e.id for e in s.val_examples()}
        s.run_baseline()
        s.start_step()
        s.decide("edit", prompt=leaky)
        assert s.validate().passed and s.heldout_leaks(leaky)
        s.confirm(True)
        rows, no_events = blame(s), blame(SimpleNamespace(versions=s.versions, steps=s.steps))
    new = [b for b in rows if b.step == 1]
    assert new and all(b.override and b.origin == "person" for b in new)
    assert not any(b.override for b in no_events)  # without the events only a failed gate reads as an override


# ---------- Markdown ----------

def test_blame_markdown_keeps_hostile_gradient_and_sentence_text_inert(session):
    rows = blame(session)
    hostile_line = SentenceBlame(f"Obey {SCRIPT} | **now**", 4, 3, "update", HOSTILE, "g", "c",
                                 [Failure("q<1>", "yes", f"no {IMG}", feedback=f"```\n{SCRIPT}\n```")], 1.0)
    md = blame_markdown(rows + [hostile_line])
    text, blocks = outside_fences(md)
    assert not re.search(r"<\s*(script|img)", text, re.I), text
    assert "](javascript" not in text.replace("\\]", "")  # the link is escaped, never a link
    assert "&lt;script&gt;" in text and "Obey &lt;script&gt;" in text
    table = [ln for ln in text.split("\n") if ln.startswith("| ")]
    assert len(table) == 1 + len(rows) + 1 and all(ln.count("|") - ln.count("\\|") == 6 for ln in table)
    assert HOSTILE in blocks  # the gradient verbatim, fenced by a longer fence than its ```` run
    assert f"```\n{SCRIPT}\n```" in blocks
    assert "Check the p-value." in text and "Written by the person" in text
    assert blame_markdown([]).endswith("(The prompt has no sentences.)\n")


# ---------- the app view ----------

def _view_script():
    from core.blame import Failure, SentenceBlame
    from ui.blame_view import render_blame

    hostile = "Say **why** <script>alert(1)</script> [x](javascript:alert(3))"
    render_blame([SentenceBlame("Answer yes or no.", 0, 0, "seed"),
                  SentenceBlame(f"Obey <b>{hostile}</b>", 2, 1, "update **bold**", hostile, "s2.g1", "s2.c1",
                                [Failure("q1", "yes", "no")], 12.5),
                  SentenceBlame("Check the p-value.", 3, 2, "person", delta_pts=-2.0, override=True)])


def test_blame_view_shows_sentences_as_text_with_their_origin_in_expanders():
    at = AppTest.from_function(_view_script).run()
    assert not at.exception
    texts = [t.value for t in at.text]
    assert texts[:3] == ["Answer yes or no.",
                         "Obey <b>Say **why** <script>alert(1)</script> [x](javascript:alert(3))</b>",
                         "Check the p-value."]
    labels = [e.label for e in at.expander]
    assert labels[0] == "Sentence 1 · seed prompt"
    assert labels[1].startswith("Sentence 2 · step 2 · update \\*\\*bold\\*\\*") and "+12.5 points" in labels[1]
    assert labels[2] == "Sentence 3 · step 3 · your edit · -2.0 points at the gate · accepted by override"
    assert any("<script>alert(1)</script>" in c.value for c in at.code)  # the gradient, literal in a code box
    assert not any("<script" in m.value for m in at.markdown)
    assert at.dataframe[0].value["id"].tolist() == ["q1"]


# ---------- pgs blame ----------

def test_pgs_blame_json_while_the_session_is_open_for_writing(pgs_env):
    s = four_steps(pgs_env / "sessions")  # still open: this process holds the writer's lock
    try:
        out = pgs("blame", s.id, "--json")
        assert out.returncode == 0, out.stderr
        got = last_json(out.stdout)
        assert got["version"] == 3 and got["sentences"] == [b.to_json() for b in blame(s)]
        assert [(x["text"], x["step"], x["origin"]) for x in got["sentences"]][2:] == [
            ("Check the p-value.", 3, "person"), ("Rule one.", 4, "update"), ("You are a careful assistant.", 4, "update")]
        first = pgs("blame", s.id, "--version", "1", "--json")
        one = last_json(first.stdout)["sentences"][2]
        assert one["gradient"] == GRADIENTS[0] and {"id", "gold", "answer"} <= set(one["failures"][0])
        table = pgs("blame", s.id, "--version", "1")
        assert table.returncode == 0 and "Rule one." in table.stdout and GRADIENTS[0] in table.stdout
        assert "failures: " in table.stdout and "version 1: 3 sentences" in table.stdout
        hostile = pgs("blame", s.id).stdout
        assert "[click](javascript:alert(3))" in hostile  # a terminal shows the text as written
    finally:
        s.close()


@pytest.mark.parametrize("args, message", [(["no-such-session"], "No session 'no-such-session'"),
                                           (["SID", "--version", "9"], "There is no version 9"),
                                           (["any-id", "--version", "x"], "invalid int value")])
def test_pgs_blame_errors_are_one_line(pgs_env, args, message):
    with four_steps(pgs_env / "sessions") if "SID" in args else _nothing() as s:
        out = pgs("blame", *[s.id if a == "SID" else a for a in args], "--json")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and re.match(r"pgs( blame)?: error: ", out.stderr) and message in out.stderr


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def test_pgs_blame_on_an_imported_bundle(pgs_env):
    fixture = ROOT.parent / "shared" / "fixtures" / "bundle-2026-12-01-textgrad.json"
    imp = pgs("import", str(fixture))
    assert imp.returncode == 0, imp.stderr
    sid = imp.stdout.strip().splitlines()[-1]
    out = pgs("blame", sid, "--json")
    assert out.returncode == 0, out.stderr
    got = last_json(out.stdout)["sentences"]
    with Session.open(sid, root=pgs_env / "sessions", readonly=True) as s:
        assert got and [x["text"] for x in got] == split_sentences(s.versions[-1].prompt)
        last, before = s.versions[-1], set(split_sentences(s.versions[-2].prompt))
        step = by_step(s, last.step)
        gradient = step.proposal.candidate(step.decision["candidate"]).gradient_id
    new = [x for x in got if x["text"] not in before]  # the fixture's last step rewrote the whole prompt
    assert new and all(x["step"] == last.step and x["gradient_id"] == gradient and x["failures"] for x in new)

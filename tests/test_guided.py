"""A person at every node (issue 12, items 1-3, 9): guided steps paused after the forward pass, the person's
feedback as the loss, the person's gradients, and their replay. Outcomes are constructed with TableModel."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from core.bundle import bundle_bytes, replay_bundle
from core.cache import ResponseCache
from core.engine import task_text
from core.llm import ModelSpec, Request
from core.runner import Runner
from core.session import Models, Session, SessionConfig, SessionError
from tests.fake_model import FakeModel, TableModel

SEED = "Answer the question."
REACTIONS = {"quote the p-value": "Quote the p-value first.", "asks for the p-value": "Ask for the p-value.",
             "evidence first": "Read the evidence first.", "which result": "Name the result you rely on."}


@dataclass
class RecordingModel(FakeModel):
    """FakeModel that keeps every request it was sent, to read what the meta-prompts said."""

    requests: list[Request] = field(default_factory=list)
    reacts_to: dict[str, str] = field(default_factory=lambda: dict(REACTIONS))

    async def acomplete(self, req: Request):
        self.requests.append(req)
        return await super().acomplete(req)

    def reply(self, req: Request) -> str:
        """Edits and updates add a sentence when the reason they were given contains one of `reacts_to`."""
        text = super().reply(req)
        user = next((c for r, c in reversed(req.messages) if r == "user"), "").lower()
        add = " ".join(v for k, v in self.reacts_to.items() if k in user)
        if add and req.tag in ("protegi.edit", "textgrad.update"):
            for end in ("<END>", "</IMPROVED_VARIABLE>"):
                text = text.replace(end, f" {add}{end}")
        return text

    def sent(self, tag: str) -> list[str]:
        return ["\n".join(c for _, c in r.messages) for r in self.requests if r.tag == tag]


def make(tmp_path, method="textgrad", preset="quick", cache=False, right=(), **kw):
    """A session whose forward model answers the seed prompt right exactly on the minibatch ids `right`
    picks (a function of the task), wrong elsewhere."""
    fwd, bwd = TableModel(spec=ModelSpec("fake", "fwd")), RecordingModel(spec=ModelSpec("fake", "bwd"))
    runner = Runner(cache=ResponseCache(tmp_path / "cache") if cache else None, concurrency=8)
    cfg = SessionConfig(task={"name": "pubmedqa"}, method=method, preset=preset, forward="fake:fwd",
                        backward="fake:bwd", seed_prompt=SEED, val_limit=8, policy="strict", **kw)
    s = Session.create(cfg, root=tmp_path / "sessions", models=Models(fwd, bwd, runner))
    fwd.learn(s.task)
    fwd.table[SEED] = set(right)
    s.run_baseline()
    return s, fwd, bwd


# ---------- 1. guided steps ----------

def test_paused_step_answers_the_minibatch_and_pays_for_no_gradient_until_continued(tmp_path):
    s, fwd, bwd = make(tmp_path)
    st = s.start_step(pause_after_forward=True)
    assert s.state == "answered" and st.proposal is None
    assert len(st.forward[0].rows) == 3 and {r.id for r in st.forward[0].rows} == set(st.minibatch_ids)
    assert sum(bwd.calls.values()) == 0  # not one optimiser call yet
    assert s.start_step() is st  # starting again returns the paused step, no new calls
    assert fwd.calls["forward"] == 8 + 3
    st = s.continue_step()
    assert s.state == "proposed" and st.proposal.candidates
    assert bwd.calls["textgrad.loss"] == 3 and bwd.calls["textgrad.gradient"] == 1
    assert fwd.calls["forward"] == 8 + 3  # the recorded answers were used, not asked again
    with pytest.raises(SessionError, match="Cannot continue: step 1 is proposed"):
        s.continue_step()
    types = [e["type"] for e in s.events]
    assert types[-4:] == ["step_started", "forward", "paused", "proposal"]
    s.close()


def test_automatic_run_never_pauses_and_finishes_a_paused_step(tmp_path):
    s, _, bwd = make(tmp_path)
    s.start_step(pause_after_forward=True)
    s.run_auto(2)
    assert s.folded.finished_steps == 2
    assert [e["type"] for e in s.events].count("paused") == 1  # only the one the person asked for
    s.close()


def test_resume_keeps_a_paused_step_and_its_feedback(tmp_path):
    s, _, _ = make(tmp_path)
    st = s.start_step(pause_after_forward=True)
    qid = st.minibatch_ids[0]
    s.add_feedback(qid, "The answer ignored the stated p-value.")
    s.close()
    again = Session.open(s.id, root=tmp_path / "sessions")
    assert again.state == "answered" and again.step.feedback == {qid: "The answer ignored the stated p-value."}
    again.close()


# ---------- 2. the person's feedback (the loss) ----------

def test_textgrad_uses_the_persons_feedback_in_place_of_that_questions_loss_call(tmp_path):
    s, _, bwd = make(tmp_path)
    st = s.start_step(pause_after_forward=True)
    qid = st.minibatch_ids[1]
    s.add_feedback(qid, "The answer ignored the stated p-value.")
    st = s.continue_step()
    assert bwd.calls["textgrad.loss"] == 2  # three questions, one with the person's feedback: two loss calls
    g = st.proposal.gradients[0]
    assert g.feedback[qid] == "The answer ignored the stated p-value."
    assert all("meticulous evaluator" not in x or "p-value" not in x for x in bwd.sent("textgrad.loss"))
    (gradient_prompt,) = bwd.sent("textgrad.gradient")
    assert "<EVALUATION>\nThe answer ignored the stated p-value.\n</EVALUATION>" in gradient_prompt
    assert gradient_prompt.count("<EVALUATION>\nThe final answer is wrong") == 2  # the model's, for the others
    s.close()


def test_protegi_attaches_the_persons_feedback_to_that_error_in_its_group(tmp_path):
    s, fwd, bwd = make(tmp_path, method="protegi", params={"minibatch": 4})
    st = s.start_step(pause_after_forward=True)
    failing = [r.id for r in st.forward[0].rows if not r.correct]
    assert len(failing) == len(st.minibatch_ids)  # every minibatch answer is wrong for the seed
    qid = failing[0]
    s.add_feedback(qid, "It ignored the stated p-value.")
    st = s.continue_step()
    note = 'Feedback from a person on this answer: "It ignored the stated p-value."'
    sent = bwd.sent("protegi.gradient")
    with_it = [g for g in st.proposal.gradients if qid in g.failure_ids]
    assert with_it and len(sent) == len(st.proposal.gradients)
    for g in st.proposal.gradients:
        text = "\n".join(m[1] for m in g.call.messages)
        assert text.count(note) == (qid in g.failure_ids)  # once, and only with that error
        if qid in g.failure_ids:  # under its own error, not another's
            block = text.split(note)[0].rsplit("## Example", 1)[1]
            assert task_text(s.task, s.task.example(qid))[:60] in block
    s.close()


def test_feedback_is_refused_outside_the_minibatch_and_before_the_answers(tmp_path):
    s, _, _ = make(tmp_path)
    with pytest.raises(SessionError, match="no step is open"):
        s.add_feedback("x", "text")
    st = s.start_step(pause_after_forward=True)
    other = next(e.id for e in s.task.split("train") if e.id not in st.minibatch_ids)
    with pytest.raises(SessionError, match="not in step 1's minibatch"):
        s.add_feedback(other, "text")
    with pytest.raises(SessionError, match="empty"):
        s.add_feedback(st.minibatch_ids[0], "   ")
    s.add_feedback(st.minibatch_ids[0], "first")
    s.add_feedback(st.minibatch_ids[0], "")  # withdrawn
    assert s.step.feedback == {}
    s.close()


# ---------- 3. the person's gradients ----------

def test_textgrad_person_gradient_runs_only_the_update_call_from_that_text(tmp_path):
    s, _, bwd = make(tmp_path)
    st = s.start_step()
    before = dict(bwd.calls)
    new = s.apply_gradient("Tell the model to quote the p-value before it answers.")
    added = {k: v - before.get(k, 0) for k, v in bwd.calls.items() if v != before.get(k, 0)}
    assert added == {"textgrad.update": 3}  # the quick preset's three update samples, no loss, no gradient
    assert all("Tell the model to quote the p-value before it answers." in x for x in bwd.sent("textgrad.update")[-3:])
    assert new and all(c.origin == "person" and c.id.startswith("s1.h1.") for c in new)
    st = s.step
    assert [c.id for c in st.proposal.candidates][-len(new):] == [c.id for c in new]  # beside the model's
    assert st.person_gradients == {"s1.h1.g1": None}
    s.decide("accept", candidate=new[0].id)
    s.validate()
    s.confirm(True)
    assert s.current.prompt == new[0].prompt
    s.close()


def test_protegi_person_gradient_edits_paraphrases_and_screens_from_the_edited_text(tmp_path):
    s, _, bwd = make(tmp_path, method="protegi")
    st = s.start_step()
    g0 = st.proposal.gradients[0]
    before = dict(bwd.calls)
    new = s.apply_gradient("The prompt never asks for the p-value.", replace=g0.id)
    added = {k: v - before.get(k, 0) for k, v in bwd.calls.items() if v != before.get(k, 0)}
    assert added == {"protegi.edit": 1, "protegi.paraphrase": 1}  # the quick preset: 1 edit, 1 paraphrase
    (edit_prompt,) = bwd.sent("protegi.edit")[-1:]
    assert "the problem with this prompt is that The prompt never asks for the p-value." in edit_prompt
    g = s.step.proposal.gradients[-1]
    assert g.failure_ids == g0.failure_ids and s.step.person_gradients == {g.id: g0.id}
    assert {c.origin for c in new} == {"person"} and any(c.source_id for c in new)  # the edit and its paraphrase
    assert all(c.pulls > 0 for c in new)  # screened by the bandit, as configured
    s.decide("accept", candidate=new[0].id)
    assert s.step.decision["prompt"] == new[0].prompt
    s.close()


def test_person_gradient_on_a_paused_step_needs_no_model_gradient(tmp_path):
    s, _, bwd = make(tmp_path)
    s.start_step(pause_after_forward=True)
    new = s.apply_gradient("Ask for the evidence first.")
    assert s.state == "proposed" and new and dict(bwd.calls) == {"textgrad.update": 3}
    with pytest.raises(SessionError, match="unknown|No gradient 'nope'"):
        s.apply_gradient("x", replace="nope")
    with pytest.raises(SessionError, match="empty"):
        s.apply_gradient("  ")
    s.close()


# ---------- 9. everything is an event: replay reproduces it ----------

@pytest.mark.parametrize("method", ["textgrad", "protegi"])
def test_replay_reproduces_pause_feedback_person_gradients_and_decisions(tmp_path, method):
    s, _, _ = make(tmp_path, method=method, cache=True)
    st = s.start_step(pause_after_forward=True)
    s.add_feedback(st.minibatch_ids[0], "The answer ignored the stated p-value.")
    st = s.continue_step()
    new = s.apply_gradient("Quote the p-value, then answer.", replace=st.proposal.gradients[0].id)
    s.decide("accept", candidate=new[0].id)
    s.validate()
    s.confirm(True)
    st = s.start_step(pause_after_forward=True)  # step 2: the person's gradient alone, then regenerated
    s.add_feedback(st.minibatch_ids[-1], "Right answer, wrong reason.")
    s.apply_gradient("Say which result the answer rests on.")
    st = s.start_step(regenerate=True)
    s.decide("reject")
    data = bundle_bytes(s, ResponseCache(tmp_path / "cache"))
    s.close()
    r = replay_bundle(data)
    assert r.first_difference is None and r.misses == 0 and r.matches
    assert [x["action"] for x in r.steps] == ["accept", "reject"]


def test_report_marks_the_persons_feedback_and_gradient(tmp_path):
    from core.report import markdown_report

    s, _, _ = make(tmp_path)
    st = s.start_step(pause_after_forward=True)
    qid = st.minibatch_ids[0]
    s.add_feedback(qid, "The answer ignored the stated p-value.")
    st = s.continue_step()
    s.apply_gradient("Quote the p-value, then answer.", replace=st.proposal.gradients[0].id)
    md = markdown_report(s)
    assert f"- {qid} (person): The answer ignored the stated p-value." in md
    assert f"Per-question feedback on {qid} (person):" in md
    assert "— written by the person, editing gradient 1:" in md
    assert "Candidate 4 (person, from gradient 2)" in md
    s.close()

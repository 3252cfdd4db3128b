"""Disputed labels (excluded questions) and locked sentences through the session API, on outcomes the tests
construct (TableModel answers right exactly where the test says; the backward fake's replies are scripted)."""

from __future__ import annotations

import hashlib
import json

import pytest

from core import person_marks as marks
from core.bundle import bundle_bytes, markdown_report, replay_bundle
from core.cache import ResponseCache
from core.llm import ModelSpec, Request
from core.meta_prompts import Templates
from core.runner import Runner
from core.session import Models, Session, SessionConfig, SessionError
from tests.fake_model import FakeModel, TableModel

SEED = "Answer the question about the abstract. Reply with yes, no or maybe."
LOCKED = "Reply with yes, no or maybe."


class LockBreaker(FakeModel):
    """The scripted optimiser, except that the update's first sample rewrites the locked sentence."""

    def reply(self, req: Request) -> str:
        out = super().reply(req)
        if req.tag == "textgrad.update" and req.sample == 0:
            out = out.replace(LOCKED, "Reply in one word.")
        return out


def session(tmp_path, *, method="protegi", preset="quick", bwd=None, val=10, name="s",
            cache: ResponseCache | None = None) -> tuple[Session, TableModel]:
    fwd, bwd = TableModel(), bwd or FakeModel()
    fwd.spec, bwd.spec = ModelSpec("fake", "fwd"), ModelSpec("fake", "bwd")
    cfg = SessionConfig(task={"name": "pubmedqa"}, method=method, preset=preset, forward="fake:fwd",
                        backward="fake:bwd", policy="strict", val_limit=val, seed_prompt=SEED)
    s = Session.create(cfg, root=tmp_path / name, models=Models(fwd, bwd, Runner(cache=cache, concurrency=8)))
    fwd.learn(s.task)
    return s, fwd


# ---------------------------------------------------------------- disputed labels


def test_excluded_questions_leave_later_minibatches_and_gates_and_earlier_steps_stay(tmp_path):
    twin, _ = session(tmp_path, name="twin")  # the same session without exclusions: which minibatch step 2 draws
    twin.run_baseline()
    twin.start_step()
    twin.decide("reject")
    would_draw = twin.start_step().minibatch_ids
    twin.close()

    s, fwd = session(tmp_path)
    val_ids = [e.id for e in s.val_examples()]
    fwd.table[SEED] = set(val_ids[:5])
    s.run_baseline()
    first = s.start_step()
    first_batch = list(first.minibatch_ids)
    s.decide("reject")
    for qid in would_draw:
        s.dispute(qid, "gold label contradicts the abstract", exclude=True)
    s.dispute(val_ids[0], "two annotators disagree", exclude=True)
    s.dispute(val_ids[1], "ambiguous question", exclude=False)  # disputed, still asked
    second = s.start_step()
    assert set(second.minibatch_ids).isdisjoint(would_draw) and len(second.minibatch_ids) == len(would_draw)
    assert s.steps[0].minibatch_ids == first_batch  # earlier steps are not rewritten
    s.decide("accept", candidate=second.proposal.candidates[0].id)
    g = s.validate()
    assert val_ids[0] not in {r.id for r in s.step.candidate_report.rows}
    assert val_ids[1] in {r.id for r in s.step.candidate_report.rows}
    assert g.n == len(val_ids) - 1
    assert s.folded.excluded() == set(would_draw) | {val_ids[0]}
    assert marks.disputed_ids(s.disputes) == {val_ids[1]}
    # the data is unchanged: the excluded question is still in the task
    assert s.task.example(val_ids[0]).id == val_ids[0] and len(s.task.split("val")) > len(val_ids) - 1
    s.close()


def test_a_gate_shows_its_score_with_and_without_the_excluded_questions(tmp_path):
    s, fwd = session(tmp_path)
    ids = [e.id for e in s.val_examples()]
    fwd.table[SEED] = set(ids[:5])  # the seed: 5 of 10 right; the unknown candidate: none
    s.run_baseline()
    st = s.start_step()
    s.decide("accept", candidate=st.proposal.candidates[0].id)
    s.validate()
    s.confirm()
    s.dispute(ids[0], "wrong gold", exclude=True)
    s.dispute(ids[1], "wrong gold", exclude=True)
    s.dispute(ids[9], "wrong gold", exclude=True)
    step = s.steps[0]
    ww = marks.gate_with_without(step.current_report, step.candidate_report, s.folded.excluded())
    assert ww.excluded_asked == sorted([ids[0], ids[1], ids[9]])
    assert (ww.old_with, ww.new_with, ww.n_with) == (0.5, 0.0, 10)
    assert ww.old_without == pytest.approx(3 / 7) and ww.new_without == 0.0 and ww.n_without == 7
    assert marks.gate_with_without(step.current_report, step.candidate_report, set()) is None
    s.close()


def test_a_dispute_needs_a_reason_and_a_known_training_or_validation_question(tmp_path):
    s, _ = session(tmp_path)
    qid = s.task.split("val")[0].id
    with pytest.raises(SessionError, match="reason"):
        s.dispute(qid, "  ")
    with pytest.raises(SessionError, match="no question 'nope'"):
        s.dispute("nope", "x")
    test_id = s.task.split("test")[0].id
    with pytest.raises(SessionError, match="sealed test split"):
        s.dispute(test_id, "x", exclude=True)
    assert s.disputes == []
    s.close()


# ---------------------------------------------------------------- locked sentences


def test_a_candidate_that_changes_a_locked_sentence_is_flagged_refused_and_skipped_by_the_policy(tmp_path):
    s, fwd = session(tmp_path, method="textgrad", preset="quick", bwd=LockBreaker())
    s.run_baseline()
    assert s.lock_sentences([2]) == [LOCKED]
    st = s.start_step()
    c0, c1 = st.proposal.candidates[0], st.proposal.candidates[1]
    assert marks.lock_flag(LOCKED) in c0.flags and LOCKED not in c0.prompt
    assert not any(f.startswith("changes locked") for f in c1.flags) and LOCKED in c1.prompt
    # the update call was told to keep it verbatim
    user = dict(c0.call.messages)["user"] if isinstance(c0.call.messages[0], (list, tuple)) else \
        next(m["content"] for m in c0.call.messages if m["role"] == "user")
    assert "<LOCKED>\n- " + LOCKED + "\n</LOCKED>" in user
    with pytest.raises(SessionError, match="changes 1 locked sentence"):
        s.decide("accept", candidate=c0.id)
    with pytest.raises(SessionError, match="locked sentence"):
        s.decide("edit", prompt="Answer the question about the abstract. Say yes or no.")
    assert s.step.decision is None
    s.decide("accept", candidate=c0.id, override=True)
    assert s.events[-1]["type"] == "decision" and s.events[-1]["override"] is True
    s.decide("accept", candidate=c1.id)  # changed before validation: no override needed
    assert "override" not in s.events[-1]
    s.close()


def test_the_automatic_policy_rejects_a_candidate_that_changes_a_locked_sentence(tmp_path):
    s, fwd = session(tmp_path, method="textgrad", preset="quick", bwd=LockBreaker())
    s.run_baseline()
    s.lock_sentences([2])
    s.run_auto(1)
    st = s.steps[0]
    chosen = st.decision["candidate"]
    assert chosen != st.proposal.candidates[0].id and LOCKED in st.decision["prompt"]
    s.close()


def test_locks_number_the_current_prompts_sentences_and_unlock(tmp_path):
    s, _ = session(tmp_path)
    s.run_baseline()
    with pytest.raises(SessionError, match="no sentence 3: the current prompt has sentences 1 to 2"):
        s.lock_sentences([3])
    s.lock_sentences([1, 2])
    assert s.active_locks() == ["Answer the question about the abstract.", LOCKED]
    s.unlock_sentences([1])
    assert s.active_locks() == [LOCKED]
    s.close()


def test_meta_prompts_are_byte_identical_when_nothing_is_locked():
    """Digests of the edit and update messages as rendered before locks existed (main at e937a3d)."""
    def digest(msgs) -> str:
        return hashlib.sha256(json.dumps(msgs).encode()).hexdigest()[:16]

    edit = dict(prompt="Answer the question. Reply with yes, no or maybe.", errors="## Example 1\nText: \"q\"",
                reason="it is vague", num_edits=2)
    update = dict(role="system prompt", prompt="Answer the question.", gradient="g", context="ctx", memory="",
                  constraints="")
    for locked in ({}, {"locked": marks.locked_block([], edit["prompt"])},
                   {"locked": marks.locked_block(["Not in the prompt."], edit["prompt"])}):
        assert digest(Templates().messages("protegi.edit", **edit, **locked)) == "aeaeff4ef1968391"
        assert digest(Templates().messages("textgrad.update", **update, **locked)) == "58a5b3dc8a9bed4e"
        assert digest(Templates(version=1).messages("textgrad.update", **update, **locked)) == "f4ddf17b6a90f515"
    with_lock = Templates().messages("protegi.edit", **edit, locked=marks.locked_block([LOCKED], edit["prompt"]))
    assert "<LOCKED>\n- Reply with yes, no or maybe.\n</LOCKED>" in with_lock[-1][1]


# ---------------------------------------------------------------- events: export, import, replay


def test_a_session_with_an_exclusion_and_a_lock_exports_and_replays_identical(tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    s, fwd = session(tmp_path, method="textgrad", preset="quick", bwd=LockBreaker(), cache=cache)
    ids = [e.id for e in s.val_examples()]
    fwd.table[SEED] = set(ids[:5])
    s.dispute(ids[2], "gold is wrong", exclude=True)  # before the baseline: the baseline leaves it out
    s.run_baseline()
    s.lock_sentences([2])
    st = s.start_step()
    s.dispute(st.minibatch_ids[0], "label disputed")
    s.decide("accept", candidate=st.proposal.candidates[0].id, override=True)
    fwd.table[st.proposal.candidates[0].prompt] = set(ids)
    s.validate()
    s.confirm()
    s.unlock_sentences([2])
    s.dispute(ids[3], "typo in the question", exclude=True)
    s.start_step()
    s.decide("reject")
    data = bundle_bytes(s, cache)
    s.close()
    r = replay_bundle(data, root=tmp_path / "replayed")
    assert r.first_difference is None and r.matches, (r.first_difference, r.steps)
    kinds = [e["type"] for e in json.loads(data)["events"]]
    assert kinds.count("label_disputed") == 3 and "sentences_locked" in kinds and "sentences_unlocked" in kinds


def test_the_report_has_blame_after_the_prompt_versions(tmp_path):
    s, fwd = session(tmp_path, method="textgrad", preset="quick")
    ids = [e.id for e in s.val_examples()]
    fwd.table[SEED] = set(ids[:2])
    s.run_baseline()
    st = s.start_step()
    fwd.table[st.proposal.candidates[0].prompt] = set(ids)
    s.decide("accept", candidate=st.proposal.candidates[0].id)
    s.validate()
    s.confirm()
    s.dispute(ids[0], "gold | is wrong", exclude=True)
    md = markdown_report(s)
    assert md.index("## Prompt versions") < md.index("## Where each sentence came from")
    assert "| 3 | Weigh the evidence. | 1 | update |" in md
    assert "## Disputed labels" in md and "gold \\| is wrong" in md
    s.close()

"""The optimiser core with the scripted fake model: call counts, gates, budget, lineage, resume, bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.bundle import BundleError, bundle_bytes, import_bundle, load_bundle, markdown_report, replay_bundle
from core.cache import ResponseCache
from core.gate import gate
from core.llm import ModelSpec
from core.protegi import PRESETS as PP, calls_per_parent
from core.runner import CancelToken, Runner
from core.session import BudgetExceeded, Models, Session, SessionConfig, SessionError, SessionLocked
from tests.fake_model import FakeModel


def make(tmp_path, method="textgrad", preset="AutoMedPrompt paper", cache=False, fwd=None, bwd=None, **kw):
    fwd, bwd = fwd or FakeModel(), bwd or FakeModel()
    fwd.spec, bwd.spec = ModelSpec("fake", "fwd"), ModelSpec("fake", "bwd")  # as the config says
    runner = Runner(cache=ResponseCache(tmp_path / "cache") if cache else None, concurrency=8)
    cfg = SessionConfig(task={"name": "pubmedqa"}, method=method, preset=preset, forward="fake:fwd",
                        backward="fake:bwd", **kw)
    s = Session.create(cfg, root=tmp_path / "sessions", models=Models(fwd, bwd, runner))
    return s, fwd, bwd


# ---------- exact calls per step ----------

def test_textgrad_paper_step_makes_exactly_the_expected_calls(tmp_path):
    s, fwd, bwd = make(tmp_path, val_limit=20)
    s.run_baseline()
    assert fwd.calls["forward"] == 20
    s.start_step()
    # the paper's PubMedQA batch is 1: forward 1, then 1 loss, 1 gradient, 1 update — and nothing else
    assert fwd.calls["forward"] == 20 + 1
    assert dict(bwd.calls) == {"textgrad.loss": 1, "textgrad.gradient": 1, "textgrad.update": 1}
    st = s.step
    assert len(st.minibatch_ids) == 1 and len(st.proposal.candidates) == 1
    s.decide("accept", candidate=st.proposal.candidates[0].id)
    s.validate()
    assert fwd.calls["forward"] == 21 + 40  # no cache here: current and candidate both re-scored
    s.close()


def test_protegi_quick_step_call_counts(tmp_path):
    cfg = PP["quick"]
    s, fwd, bwd = make(tmp_path, method="protegi", preset="quick", val_limit=10)
    s.run_baseline()
    s.start_step()
    assert bwd.calls["protegi.gradient"] == cfg.n_groups
    assert bwd.calls["protegi.edit"] == cfg.n_groups * cfg.reasons_per_group
    assert bwd.calls["protegi.paraphrase"] == cfg.n_groups * cfg.reasons_per_group * cfg.edits_per_reason * cfg.paraphrases
    assert sum(bwd.calls.values()) == calls_per_parent(cfg, 5)
    b = s.step.proposal.bandit
    assert b["algorithm"] == "successive-halving" and 0 < b["spent"] <= cfg.bandit_budget
    assert fwd.calls["forward"] == 10 + cfg.minibatch + b["spent"]
    s.close()


def test_protegi_paper_step_call_counts(tmp_path):
    cfg = PP["ProTeGi paper"]
    assert (cfg.beam, cfg.minibatch, cfg.n_groups, cfg.errors_per_group, cfg.reasons_per_group,
            cfg.edits_per_reason, cfg.paraphrases, cfg.max_successors, cfg.bandit) == (4, 64, 4, 4, 1, 1, 2, 8, "ucb")
    s, fwd, bwd = make(tmp_path, method="protegi", preset="ProTeGi paper", val_limit=10)
    s.run_baseline()
    s.start_step()
    # round 1 has a beam of one prompt: 4 gradients, 4 edits, 8 paraphrases
    assert dict(bwd.calls) == {"protegi.gradient": 4, "protegi.edit": 4, "protegi.paraphrase": 8}
    st = s.step
    assert len(st.proposal.candidates) <= cfg.max_successors
    assert fwd.calls["forward"] == 10 + 64 + st.proposal.bandit["spent"]
    assert st.proposal.bandit["spent"] <= cfg.bandit_budget
    s.decide("accept", candidate=st.proposal.candidates[0].id)
    s.validate()
    s.confirm(True)
    assert len(s.beam()) == cfg.beam  # the next round expands a full beam
    s.close()


# ---------- lineage ----------

def test_lineage_links_failures_gradients_candidates(tmp_path):
    s, _, _ = make(tmp_path, method="protegi", preset="quick", val_limit=10)
    s.run_baseline()
    st = s.start_step()
    fails = {r.id for r in st.forward[0].rows if not r.correct}
    grads = {g.id: g for g in st.proposal.gradients}
    assert grads and all(set(g.failure_ids) <= fails and g.failure_ids for g in grads.values())
    for c in st.proposal.candidates:
        assert c.gradient_id in grads and c.parent == s.current.prompt
        assert c.call is not None and c.call.messages and c.call.reply
        if c.origin == "paraphrase":
            assert c.source_id and c.source_id.startswith(c.gradient_id)
    s.close()


# ---------- gate ----------

@pytest.mark.parametrize("policy,old,new,passed", [
    ("strict", [1, 1, 0, 0], [1, 1, 1, 0], True),
    ("strict", [1, 1, 0, 0], [1, 0, 1, 0], False),  # tie rejected
    ("tie", [1, 1, 0, 0], [1, 0, 1, 0], True),
    ("tie", [1, 1, 0, 0], [1, 0, 0, 0], False),
    ("significant", [1, 0, 0, 0], [1, 1, 0, 0], False),  # better but p = 1
    ("significant", [0] * 20, [1] * 12 + [0] * 8, True),  # b=0, c=12: p < 0.001
    ("always", [1, 1], [0, 0], True),
])
def test_gate_policies(policy, old, new, passed):
    ids = [f"q{i}" for i in range(len(old))]
    g = gate(policy, dict(zip(ids, map(bool, old))), dict(zip(ids, map(bool, new))))
    assert g.passed is passed
    assert set(g.fixed) == {i for i, a, b in zip(ids, old, new) if b and not a}
    assert set(g.broke) == {i for i, a, b in zip(ids, old, new) if a and not b}


def test_gate_rejects_tie_in_session_and_patience_stops(tmp_path):
    # A forward model that edits cannot improve: strict rejects ties and losses; patience 2 stops the run
    flat = FakeModel(step_quality=0, hash_prompt=False)
    s, _, _ = make(tmp_path, fwd=flat, val_limit=10, patience=2)
    result = s.run_auto(5)
    assert result.startswith("patience")
    assert [st.outcome for st in s.steps] == ["rejected", "rejected"]
    assert all(st.gate.reason.startswith("tie") for st in s.steps)
    assert len(s.versions) == 1
    s.close()


def test_person_override_and_edit(tmp_path):
    s, _, _ = make(tmp_path, val_limit=10, fwd=FakeModel(step_quality=0, hash_prompt=False))
    s.run_baseline()
    s.start_step()
    s.decide("edit", prompt="My own prompt: weigh the evidence carefully.")
    g = s.validate()
    assert not g.passed  # flat model: tie
    s.confirm(accept=True)  # the person overrides
    assert s.current.prompt == "My own prompt: weigh the evidence carefully." and s.current.origin == "edit"
    gate_ev = [e for e in s.events if e["type"] == "gate"][-1]
    assert gate_ev["override"] is True and gate_ev["verdict"] is False
    s.start_step()
    s.decide("reject")
    assert s.steps[-1].outcome == "rejected" and s.state == "ready"
    with pytest.raises(SessionError, match="no proposal"):
        s.decide("accept", candidate="x")
    s.close()


def test_regenerate_gives_new_minibatch_and_sample(tmp_path):
    s, _, bwd = make(tmp_path, val_limit=10)
    s.run_baseline()
    a = s.start_step()
    ids1, cand1 = a.minibatch_ids, a.proposal.candidates[0].prompt
    b = s.start_step(regenerate=True)
    assert b.attempt == 1 and b.index == 1 and len(s.steps) == 1
    assert b.minibatch_ids != ids1 and b.proposal.candidates[0].prompt != cand1
    s.close()


def test_memory_reaches_the_update_prompt(tmp_path):
    # the paper preset has no memory (as its code); quick keeps it, with scores when the session asks
    s, _, bwd = make(tmp_path, preset="quick", val_limit=10, params={"memory_scores": True, "candidates": 1})
    s.run_auto(2)
    update = s.steps[1].proposal.candidates[0].call.messages[-1][1]
    assert "<PAST_ITERATIONS>" in update and s.steps[0].decision["prompt"] in update
    assert "validation_accuracy" in update
    s.close()


def test_no_failures_in_minibatch_gives_a_clear_note(tmp_path):
    perfect = FakeModel(base_quality=100)
    fake = __import__("tests.fake_model", fromlist=["_GOLD"])
    fake._builtin_gold()
    perfect.forward = lambda system, user: "Answer: " + fake._GOLD[user][0]
    s, _, bwd = make(tmp_path, method="protegi", preset="quick", fwd=perfect, val_limit=5)
    s.run_baseline()
    st = s.start_step()
    assert not st.proposal.candidates and "No failures" in st.proposal.note
    assert sum(bwd.calls.values()) == 0
    s.decide("skip")
    assert s.steps[-1].outcome == "skipped"
    s.close()


def test_update_without_tags_is_a_clear_error_path(tmp_path):
    s, _, _ = make(tmp_path, bwd=FakeModel(misbehave={"empty-update"}), val_limit=5, patience=1)
    s.run_baseline()
    st = s.start_step()
    assert not st.proposal.candidates and "IMPROVED_VARIABLE" in st.proposal.note
    assert st.proposal.calls[-1].reply.startswith("Here is a better prompt")
    assert s.run_auto(3).startswith("patience")
    s.close()


def test_protegi_fallback_when_tags_missing_is_flagged(tmp_path):
    s, _, _ = make(tmp_path, method="protegi", preset="quick", bwd=FakeModel(misbehave={"no-tags"}), val_limit=5)
    s.run_baseline()
    st = s.start_step()
    assert st.proposal.gradients and all(g.flagged for g in st.proposal.gradients)
    assert any(c.flagged for c in st.proposal.candidates if c.origin == "edit")
    s.close()


# ---------- budget ----------

def test_budget_stops_cleanly_before_exceeding(tmp_path):
    s, fwd, _ = make(tmp_path, val_limit=10, budget_calls=80)
    result = s.run_auto(5)
    assert result.startswith("budget")
    assert 40 < s.spend.calls <= 80  # some steps ran, then it stopped before crossing the line
    assert s.stopped.startswith("budget")
    assert s.step is None or s.step.status in ("proposed", "decided")  # nothing half-recorded
    with pytest.raises(SessionError, match="stopped"):
        s.start_step()
    s.close()
    s2 = Session.open(s.id, root=tmp_path / "sessions", readonly=True)
    assert s2.stopped.startswith("budget") and s2.spend.calls == s.spend.calls


def test_budget_usd(tmp_path):
    s, _, _ = make(tmp_path, val_limit=10, budget_usd=0.0)
    s.config.forward = "openai:gpt-4o-mini"  # priced: the estimate is > 0
    with pytest.raises(BudgetExceeded):
        s.run_baseline()
    assert not s.versions
    s.close()


def test_estimates_count_calls(tmp_path):
    s, _, _ = make(tmp_path, val_limit=10)
    s.run_baseline()
    e = s.estimate_step()
    assert e["calls"] == 1 + 3 + 20 and e["validation"] == 20  # paper PubMedQA batch 1; no cache: both re-scored
    s.close()


# ---------- log, lock, resume ----------

def test_events_log_is_complete_and_reloads_identically(tmp_path):
    s, _, _ = make(tmp_path, val_limit=10, cache=True)
    s.run_auto(3)
    lines = (s.dir / "events.jsonl").read_text().splitlines()
    types = [t for t in (json.loads(x)["type"] for x in lines) if t != "spend"]
    assert types[:3] == ["created", "auto", "baseline"]  # the requested run is logged before the baseline
    assert types.count("step_started") == 3 and types.count("gate") + types.count("decision") >= 3
    s.close()
    r = Session.open(s.id, root=tmp_path / "sessions", readonly=True)
    assert [v.prompt for v in r.versions] == [v.prompt for v in s.versions]
    assert r.spend == s.spend and r.state == s.state


def test_second_writer_is_refused(tmp_path):
    s, _, _ = make(tmp_path, val_limit=5)
    with pytest.raises(SessionLocked, match="another process"):
        Session.open(s.id, root=tmp_path / "sessions")
    Session.open(s.id, root=tmp_path / "sessions", readonly=True)  # readers are fine
    s.close()
    Session.open(s.id, root=tmp_path / "sessions").close()


def test_torn_last_line_is_dropped_and_corrupt_middle_refused(tmp_path):
    s, _, _ = make(tmp_path, val_limit=5)
    s.run_baseline()
    s.close()
    p = s.dir / "events.jsonl"
    good = p.read_bytes()
    p.write_bytes(good + b'{"type": "step_sta')
    r = Session.open(s.id, root=tmp_path / "sessions")
    assert r.warnings and r.state == "ready"
    r.close()
    assert p.read_bytes() == good  # the torn tail was cut off
    lines = good.split(b"\n")
    p.write_bytes(lines[0] + b"\n{garbage\n" + b"\n".join(lines[1:]))
    with pytest.raises(SessionError, match="corrupt"):
        Session.open(s.id, root=tmp_path / "sessions")


def test_resume_mid_step_continues_exactly(tmp_path):
    """Interrupt after the proposal and after the decision; the reopened session ends where an
    uninterrupted one does."""
    ref, _, _ = make(tmp_path / "ref", val_limit=10, cache=True)
    ref.run_auto(3)
    ref_prompts = [v.prompt for v in ref.versions]
    ref.close()

    s, _, _ = make(tmp_path / "run", val_limit=10, cache=True)
    s.run_baseline()
    s.start_step()
    sid = s.id
    s.close()  # "crash" after the proposal
    s = Session.open(sid, root=tmp_path / "run" / "sessions",
                     models=Models(FakeModel(), FakeModel(), Runner(ResponseCache(tmp_path / "run" / "cache"))))
    assert s.state == "proposed"
    s.run_auto(3)
    assert [v.prompt for v in s.versions] == ref_prompts
    s.close()


def test_cancel_keeps_finished_calls_and_records_nothing_half_done(tmp_path):
    s, fwd, _ = make(tmp_path, val_limit=20, cache=True, fwd=FakeModel(delay_s=0.01), params={"batch_size": 5})
    s.run_baseline()
    tok = CancelToken()
    seen = []

    def prog(phase, p):
        seen.append(p.done)
        if p.done >= 2:
            tok.cancel()

    from core.engine import Cancelled
    with pytest.raises(Cancelled):
        s.start_step(progress=prog, cancel=tok)
    assert s.step.status == "started"  # no forward/proposal event was written
    st = s.start_step()  # resumes: finished calls come from the cache
    assert st.proposal is not None
    s.close()


# ---------- bundles ----------

def test_bundle_round_trip_and_replay(tmp_path):
    s, _, _ = make(tmp_path, val_limit=10, cache=True)
    s.run_auto(2)
    s.start_step()
    s.decide("edit", prompt="Hand-written prompt about the evidence.")
    s.validate()
    s.confirm(False)
    data = bundle_bytes(s, ResponseCache(tmp_path / "cache"))
    s.close()
    b = load_bundle(data)
    assert b["missing_responses"] == 0 and b["responses"]
    r = replay_bundle(data)
    assert r.matches and r.misses == 0 and len(r.steps) == 3
    sid = import_bundle(data, root=tmp_path / "imported", cache=ResponseCache(tmp_path / "cache2"))
    imp = Session.open(sid, root=tmp_path / "imported", readonly=True)
    assert [v.prompt for v in imp.versions] == [v.prompt for v in s.versions]
    md = markdown_report(imp)
    assert f"Version {len(s.versions) - 1} " in md and "95% CI" in md
    assert ("Diff from the previous version:" in md) == (len(s.versions) > 1)  # candidates have diffs of their own


@pytest.mark.parametrize("mutate,msg", [
    (lambda b: b.update(format="other"), "not a Prompt Gradient Studio bundle"),
    (lambda b: b.update(version=99), "not supported"),
    (lambda b: b.update(events=[]), "no events"),
    (lambda b: b["events"].append({"type": "evil"}), "not a known event"),
    (lambda b: b["events"][0]["config"].update(method="sgd"), "invalid"),
    (lambda b: b["responses"].update({"../../etc/passwd": {"text": "x"}}), "malformed response"),
    (lambda b: b.update(data={"filename": "x.csv", "content": "a,b"}), "does not use a file"),
])
def test_bad_bundles_are_refused_and_write_nothing(tmp_path, mutate, msg):
    s, _, _ = make(tmp_path, val_limit=5, cache=True)
    s.run_baseline()
    b = json.loads(bundle_bytes(s, ResponseCache(tmp_path / "cache")))
    s.close()
    mutate(b)
    root = tmp_path / "imp"
    with pytest.raises(BundleError, match=msg):
        import_bundle(json.dumps(b).encode(), root=root, cache=None)
    assert not root.exists() or not [p for p in root.iterdir() if not p.name.startswith(".")]
    with pytest.raises(BundleError):
        import_bundle(b"\xff\xfe not json", root=root)

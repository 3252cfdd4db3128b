"""The seams of a session: typed, versioned events, the pure fold, the event log and its one writer."""

from __future__ import annotations

import json
import threading

import pytest

from core import events as E
from core.bundle import BundleError, bundle_bytes, import_bundle, replay_bundle
from core.engine import Spend
from core.event_log import EventLog
from core.llm import ModelSpec
from core.runner import Runner
from core.session import Models, Session, SessionConfig, SessionError
from core.state import SessionState, fold
from tests.fake_model import FakeModel


def models() -> Models:
    fwd, bwd = FakeModel(), FakeModel()
    fwd.spec, bwd.spec = ModelSpec("fake", "fwd"), ModelSpec("fake", "bwd")
    return Models(fwd, bwd, Runner(concurrency=8))


def make(tmp_path, with_models: bool = True, **kw) -> Session:
    cfg = SessionConfig(task={"name": "pubmedqa"}, forward="fake:fwd", backward="fake:bwd", val_limit=10, **kw)
    return Session.create(cfg, root=tmp_path / "sessions", models=models() if with_models else None)


def folded_from_disk(s: Session) -> SessionState:
    return fold(E.upgrade(EventLog(s.dir, s.id).read(readonly=True, warnings=[])), s.task)


def one_line(msg: str) -> str:
    assert msg and "\n" not in msg and "Traceback" not in msg and len(msg) < 400, msg
    return msg


def test_fold_is_pure_and_equals_the_live_state_after_every_phase(tmp_path):
    s = make(tmp_path)
    phases = [s.run_baseline, s.start_step, lambda: s.decide("accept", candidate=s.step.proposal.candidates[0].id),
              s.validate, s.confirm, lambda: s.run_auto(1)]
    for phase in phases:
        before = json.dumps(s.events)
        phase()
        again = fold(s.events, s.task)
        assert again == fold(s.events, s.task) == s.folded  # same events, equal state; live state = the fold
        assert folded_from_disk(s) == s.folded  # and the fold of the file on disk
        assert json.dumps(s.events) != before  # the phase wrote something, and folding did not change the events
    assert len(s.versions) >= 1 and s.steps[0].outcome in ("accepted", "rejected")
    s.close()


def test_fold_names_the_event_that_does_not_fit(tmp_path):
    s = make(tmp_path)
    s.run_baseline()
    events = s.events + [{"type": "gate", "step": 1, "verdict": True, "accepted": True}]  # no step was started
    with pytest.raises(ValueError, match=r"event 3 \('gate'\) is malformed or does not fit"):
        fold(events, s.task)
    with pytest.raises(ValueError, match=r"event 2 \('baseline'\) is malformed: report.rows\[0\].correct"):
        bad = json.loads(json.dumps(s.events))
        bad[1]["report"]["rows"][0]["correct"] = "yes"
        fold(bad, s.task)
    s.close()


def test_a_new_log_starts_with_the_schema_version(tmp_path):
    s = make(tmp_path)
    first = json.loads(s.events_path.read_text().splitlines()[0])
    assert first["type"] == E.CREATED and first["schema"] == E.SCHEMA_VERSION == 3
    assert all(set(c.__dataclass_fields__) >= {"ts", "spend", "keys"} for c in E.EVENT_CLASSES)
    assert set(E.EVENTS) == {c.type for c in E.EVENT_CLASSES}  # one registry of names and field types
    s.close()


def test_a_schema_1_log_migrates_loads_and_resumes(tmp_path):
    s = make(tmp_path)
    s.run_auto(1)
    s.close()
    lines = s.events_path.read_text().splitlines()
    first = json.loads(lines[0])
    del first["schema"]
    del first["config"]["template_version"]  # a log from before template versions ran version 1
    s.events_path.write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    r = Session.open(s.id, root=tmp_path / "sessions", models=models())
    assert r.events[0]["schema"] == E.SCHEMA_VERSION and r.config.template_version == 1
    assert [st.outcome for st in r.steps] == [st.outcome for st in s.steps] and r.versions[-1].prompt == s.versions[-1].prompt
    assert "schema" not in json.loads(r.events_path.read_text().splitlines()[0])  # the file is never rewritten
    assert r.run_auto(1) == "done" and r.steps[-1].outcome  # resumes, appending in the current schema
    r.close()


def test_an_unknown_future_schema_is_one_clear_line(tmp_path):
    s = make(tmp_path)
    s.close()
    lines = s.events_path.read_text().splitlines()
    first = {**json.loads(lines[0]), "schema": E.SCHEMA_VERSION + 1}
    s.events_path.write_text(json.dumps(first) + "\n")
    for readonly in (False, True):
        with pytest.raises(SessionError) as e:
            Session.open(s.id, root=tmp_path / "sessions", readonly=readonly)
        assert "newer Prompt Gradient Studio" in one_line(str(e.value))


def test_a_bundle_from_a_future_schema_is_refused_but_an_old_one_migrates_after_its_hashes(tmp_path):
    s = make(tmp_path)
    s.run_auto(1)
    b = json.loads(bundle_bytes(s, None))
    s.close()
    assert b["events"][0]["schema"] == E.SCHEMA_VERSION
    future = json.loads(json.dumps(b))
    future["events"][0]["schema"] = 99
    future.pop("hashes")
    with pytest.raises(BundleError) as e:
        import_bundle(json.dumps(future).encode(), root=tmp_path / "future")
    assert "newer Prompt Gradient Studio" in one_line(str(e.value))
    assert not (tmp_path / "future").exists() or not any((tmp_path / "future").iterdir())
    # a schema-1 bundle exported with its hashes: verified as exported, then migrated
    old = json.loads(json.dumps(b))
    del old["events"][0]["schema"]
    from core.bundle_integrity import content_hashes

    old["hashes"] = content_hashes(old["events"], old["responses"], old["data"])
    sid = import_bundle(json.dumps(old).encode(), root=tmp_path / "old")
    assert Session.open(sid, root=tmp_path / "old", readonly=True).events[0]["schema"] == E.SCHEMA_VERSION


def test_an_unknown_event_type_or_a_wrong_field_type_is_one_clear_line(tmp_path):
    s = make(tmp_path)
    s.run_baseline()
    s.close()
    good = s.events_path.read_text().splitlines()
    cases = {
        "its type 'from_the_future' is not a known event type": json.dumps({"type": "from_the_future", "x": 1}),
        "step must be a whole number >= 0, not text": json.dumps({"type": "spend", "step": "one", "spend": {}}),
    }
    for why, line in cases.items():
        s.events_path.write_text("\n".join(good + [line]) + "\n")
        with pytest.raises(SessionError) as e:
            Session.open(s.id, root=tmp_path / "sessions")
        assert why in one_line(str(e.value)) and "event 3 of events.jsonl" in str(e.value)
        r = Session.open(s.id, root=tmp_path / "sessions", readonly=True)  # a reader still sees the rest
        assert r.versions and why in r.warnings[-1]


def test_emit_refuses_a_malformed_event_before_writing(tmp_path):
    s = make(tmp_path)
    size = s.events_path.stat().st_size
    for bad in ({"type": "nope"}, {"type": "stopped", "reason": 3}, {"type": "decision", "step": 1, "action": "accept"}):
        with pytest.raises(SessionError) as e:
            s.emit(bad)
        one_line(str(e.value))
    assert s.events_path.stat().st_size == size and len(s.events) == 1
    s.close()


def test_two_threads_emitting_on_one_session_write_a_valid_log_that_resumes_exactly(tmp_path):
    s = make(tmp_path)
    s.run_baseline()
    n, go = 200, threading.Barrier(2)

    def writer(tag: str) -> None:
        go.wait()
        for i in range(n):
            s.emit(E.SpendOnly(step=0, phase=f"{tag}{i}", spend=Spend(calls=1, cost_usd=0.001).to_json(),
                               keys=[f"{tag}-{i}-" + "k" * 200]))  # long lines: a torn or mixed write would show

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = s.events_path.read_text().splitlines()
    assert len(lines) == len(s.events) == 2 + 2 * n
    parsed = [json.loads(x) for x in lines]  # every line one whole event
    assert sorted(e["phase"] for e in parsed if e["type"] == E.SPEND) == sorted(f"{t}{i}" for t in "ab" for i in range(n))
    assert parsed == s.events  # the log holds the events in the order the state took them
    calls = s.spend.calls
    s.close()
    r = Session.open(s.id, root=tmp_path / "sessions")
    assert r.folded == fold(parsed, r.task) and r.spend.calls == calls == 10 + 2 * n
    r.close()


def test_a_worker_passes_its_models_and_the_session_keeps_none(tmp_path):
    s = make(tmp_path, with_models=False)
    with pytest.raises(SessionError, match="No models are connected"):
        s.run_baseline()
    m = models()
    s.run_baseline(models=m)
    s.start_step(models=m)
    assert s.models is None and m.forward.calls["forward"] == 10 + 1  # the job's models did the work
    est = s.estimate_step()  # no models attached: estimated without a stand-in
    assert est["calls"] > 0 and s.models is None
    s.close()


def test_the_setup_estimate_is_a_state_with_no_events(tmp_path):
    from ui.estimate import estimate, step_estimate

    s = make(tmp_path)
    est = estimate(s.config, s.task, cached=True)
    assert est["baseline"]["calls"] == 10 and est["step"] == step_estimate(s, cached=True)
    assert estimate(s.config, s.task, cached=False)["step"]["validation"] == 20  # current and candidate re-scored
    s.close()


def test_the_fixture_bundle_is_schema_1_and_still_replays_identically():
    from tests.test_bundle_integrity import FIXTURE

    data = FIXTURE.read_bytes()
    assert E.schema_of(json.loads(data)["events"]) == 1
    assert replay_bundle(data).matches


@pytest.mark.parametrize("policy", ["strict", "adaptive"])
def test_a_decision_changed_by_another_thread_during_validation_is_not_given_its_result(tmp_path, policy):
    s = make(tmp_path, policy=policy, gate_batch=5, gate_cap=10)
    s.run_baseline()
    s.start_step()
    s.decide("accept", candidate=s.step.proposal.candidates[0].id)
    changed = []

    def progress(phase, p) -> None:  # the script thread edits the decision while the worker's calls run
        if not changed:
            t = threading.Thread(target=lambda: changed.append(s.decide("edit", prompt="Another prompt entirely.")))
            t.start()
            t.join()

    spent = s.spend.calls
    with pytest.raises(SessionError, match="changed while it was being validated"):
        s.validate(progress=progress)
    assert changed and s.step.status == "decided" and s.step.gate is None
    assert s.step.decision["prompt"] == "Another prompt entirely."
    assert s.spend.calls > spent and s.events[-1]["type"] == E.SPEND  # the calls made are recorded
    assert folded_from_disk(s) == s.folded
    g = s.validate()  # validating again scores the edited prompt
    assert s.step.candidate_report.prompt == "Another prompt entirely." and g.new_accuracy == s.step.gate.new_accuracy
    s.close()

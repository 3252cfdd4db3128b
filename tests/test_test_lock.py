"""Validation pools of 200, the held-out confirmation slice, the sealed test split (reveal, marks, report) and the
overfitting view: core, CLI and app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import tasks
from core.bundle import export_bundle, import_bundle, load_bundle, markdown_report, replay_bundle
from core.cache import ResponseCache
from core.cli import main as pgs
from core.llm import ModelSpec, register_provider
from core.protegi import PRESETS as PROTEGI_PRESETS
from core.runner import Runner
from core.session import Models, Session, SessionConfig
from core.tasks import BUILTIN_TASKS, builtin_spec, load_task, seeded_order
from core.testlock import (
    AFTER_TEST, CONFIRMATION_SCORED, TEST_REVEALED, TestSealed, confirmation_rows, score_split,
    steps_after_reveal, version_entries,
)
from tests.fake_model import FakeModel

FIXTURE = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "bundle-2026-12-01-textgrad.json"
APP = str(Path(__file__).resolve().parent.parent / "app.py")


def ids(examples):
    return [e.id for e in examples]


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_new_split_has_a_200_question_pool_and_a_disjoint_confirmation_slice(name):
    t = load_task(name)
    val, conf, train, test = (ids(t.split(s)) for s in ("val", "confirmation", "train", "test"))
    assert len(val) >= 200 and len(conf) >= 100
    parts = [set(val), set(conf), set(train), set(test)]
    assert sum(map(len, parts)) == len(set().union(*parts)) == len(val) + len(conf) + len(train) + len(test)
    assert len(train) >= max(cfg.minibatch for cfg in PROTEGI_PRESETS.values())  # minibatches still fit
    again, other = load_task(name), load_task(name, seed=1)
    for s in ("train", "val", "confirmation", "test"):
        assert ids(again.split(s)) == ids(t.split(s))
    assert ids(other.split("val")) != val and set(ids(other.split("confirmation"))).isdisjoint(ids(other.split("val")))
    spec = builtin_spec(name, 0)
    assert spec["split_version"] == tasks.SPLIT_VERSION and load_task(name, **{k: v for k, v in spec.items()
                                                                               if k != "name"}).info().sizes == t.info().sizes


def test_pubmedqa_pool_is_whole_official_dev_folds():
    folds = json.loads((tasks.DATA_DIR / "pubmedqa" / "pqal_split_ids.json").read_text())["dev_folds"]
    t = load_task("pubmedqa", split_version=2)
    fold_of = {pmid: i for i, f in enumerate(folds) for pmid in f}
    for split in ("val", "confirmation", "train"):
        chunk = ids(t.split(split))
        blocks = [chunk[i:i + 50] for i in range(0, len(chunk), 50)]
        assert all(len({fold_of[p] for p in b}) == 1 and set(b) == set(folds[fold_of[b[0]]]) for b in blocks)
    assert set(ids(t.split("test"))).isdisjoint(fold_of)
    t3 = load_task("pubmedqa")  # version 3: the same whole folds per split, the questions in a seeded order
    for split in ("val", "confirmation", "train"):
        assert set(ids(t3.split(split))) == set(ids(t.split(split)))


def test_old_task_specs_load_the_same_questions_and_the_fixture_replays_identical(tmp_path):
    # the original carving, derived the way today's sessions carved it: seeded order, validation first
    examples, test_ids = tasks._pubmedqa_raw()
    pool = seeded_order([e for k, e in examples.items() if k not in set(test_ids)], 0)
    cfg = SessionConfig(task={"name": "pubmedqa", "seed": 0}, forward="fake:f", backward="fake:b")
    s = Session.create(cfg, root=tmp_path / "s")
    assert ids(s.task.split("val")) == ids(pool[:50]) and ids(s.task.split("train")) == ids(pool[50:])
    assert "confirmation" not in s.task.splits
    medqa = seeded_order(list(tasks._medqa_raw()), 3)
    old = Session.create(SessionConfig(task={"name": "medqa", "seed": 3}, forward="fake:f", backward="fake:b"),
                         root=tmp_path / "s")
    assert ids(old.task.split("val")) == ids(medqa[:100]) and ids(old.task.split("test")) == ids(medqa[300:])
    new = Session.create(SessionConfig(task=builtin_spec("pubmedqa", 0), forward="fake:f", backward="fake:b"),
                         root=tmp_path / "s")
    assert len(new.task.split("val")) == 200 and len(new.task.split("confirmation")) == 100
    for x in (s, old, new):
        x.close()
    # the recorded fixture (an old spec) still scores the very questions it recorded, and replays identical
    data = FIXTURE.read_bytes()
    b = json.loads(data)
    baseline = next(ev for ev in b["events"] if ev["type"] == "baseline")
    assert "split_version" not in b["events"][0]["config"]["task"]
    assert [r["id"] for r in baseline["report"]["rows"]] == ids(pool[:len(baseline["report"]["rows"])])
    r = replay_bundle(data)
    assert r.matches and r.misses == 0 and r.steps


# ---------------------------------------------------------------- sessions


def session(tmp_path, **kw) -> tuple[Session, FakeModel]:
    fwd, bwd = FakeModel(spec=ModelSpec("fake", "fwd")), FakeModel(spec=ModelSpec("fake", "bwd"))
    cfg = SessionConfig(task=builtin_spec("pubmedqa", 0, val_size=20), method="textgrad", preset="quick",
                        forward="fake:fwd", backward="fake:bwd", policy="always", **kw)
    s = Session.create(cfg, root=tmp_path / "sessions",
                       models=Models(fwd, bwd, Runner(cache=ResponseCache(tmp_path / "cache"), concurrency=8)))
    s.run_baseline()
    return s, fwd


def one_step(s: Session, validate: bool = True) -> None:
    st = s.start_step()
    s.decide("accept", candidate=st.proposal.candidates[0].id)
    if validate:
        s.validate()
        s.confirm()


def test_scoring_test_without_reveal_makes_no_calls_and_steps_after_a_reveal_are_marked(tmp_path):
    s, fwd = session(tmp_path)
    one_step(s)  # decided before any look at test
    calls, events = sum(fwd.calls.values()), len(s.events)
    with pytest.raises(TestSealed, match="sealed"):
        score_split(s, version_entries(s, [0, 1]), "test", limit=10)
    assert sum(fwd.calls.values()) == calls and len(s.events) == events
    one_step(s, validate=False)  # step 2 decided before the reveal, gated after it
    calls = sum(fwd.calls.values())
    score_split(s, version_entries(s, [0, 1]), "test", limit=10, reveal=True)
    ev = s.events[-1]
    assert ev["type"] == TEST_REVEALED and ev["versions"] == [0, 1] and ev["n"] == 10
    assert sum(fwd.calls.values()) == calls + 20 and ev["spend"]["calls"] == 20  # the look is paid and logged
    s.validate()
    s.confirm()
    s.start_step()
    s.decide("reject")  # step 3: wholly after the reveal
    assert steps_after_reveal(s) == {2, 3}
    report = markdown_report(s)
    assert "Test split looked at 1 time(s) (v0, v1)" in report and f"{AFTER_TEST}: 2, 3" in report
    score_split(s, version_entries(s, [2]), "test", limit=5, reveal=True)
    assert "Test split looked at 2 time(s) (v0, v1, v2)" in markdown_report(s)
    s.close()
    reopened = Session.open(s.id, root=tmp_path / "sessions", readonly=True)
    assert steps_after_reveal(reopened) == {2, 3}
    with pytest.raises(Exception, match="read-only"):
        score_split(reopened, version_entries(reopened, [0]), "test", reveal=True, limit=5)


def test_confirmation_scoring_is_logged_beside_validation_and_survives_export_and_replay(tmp_path):
    s, fwd = session(tmp_path)
    one_step(s)
    conf = ids(s.task.split("confirmation"))
    gated = {r.id for st in s.steps for rep in (st.candidate_report, st.current_report) if rep for r in rep.rows}
    assert gated and gated.isdisjoint(conf)  # no gate ever sees the confirmation slice
    reports = score_split(s, version_entries(s, [0, 1]), "confirmation")
    ev = s.events[-1]
    assert ev["type"] == CONFIRMATION_SCORED and ev["versions"] == [0, 1] and ev["n"] == len(conf) == 100
    rows = confirmation_rows(s)
    assert [r.version for r in rows] == [0, 1]
    for r, rep in zip(rows, reports.values()):
        assert [x.id for x in rep.rows] == conf
        assert r.confirmation_accuracy == sum(x.correct for x in rep.rows) / len(conf) and r.confirmation_n == 100
        assert r.val_accuracy == s.versions[r.version].accuracy
        assert r.gap == pytest.approx(r.val_accuracy - r.confirmation_accuracy)
    score_split(s, version_entries(s, [0]), "test", reveal=True, limit=5)
    bundle = json.dumps(export_bundle(s, ResponseCache(tmp_path / "cache"))).encode()
    s.close()
    assert load_bundle(bundle)["events"][-1]["type"] == TEST_REVEALED
    sid = import_bundle(bundle, root=tmp_path / "imported", cache=ResponseCache(tmp_path / "cache2"))
    imported = Session.open(sid, root=tmp_path / "imported", readonly=True)
    assert [r.confirmation_accuracy for r in confirmation_rows(imported)] == [r.confirmation_accuracy for r in rows]
    assert replay_bundle(bundle).matches


# ---------------------------------------------------------------- CLI


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """A `counted:` provider whose models are kept, so a test can see every call the CLI made."""
    made: list[FakeModel] = []

    def factory(spec):
        m = FakeModel(spec=spec)
        made.append(m)
        return m

    register_provider("counted", factory)
    monkeypatch.setenv("PGS_CACHE_DIR", str(tmp_path / "cache"))
    return made


def test_cli_test_scoring_needs_reveal_test_one_line_no_calls_then_records(counted, tmp_path, capsys):
    rc = pgs(["evaluate", "--task", "pubmedqa", "--split", "test", "--model", "counted:m", "--quiet"])
    out = capsys.readouterr()
    assert rc != 0 and out.out == "" and len(out.err.strip().splitlines()) == 1 and "--reveal-test" in out.err
    assert not counted  # not even a model was built
    root = tmp_path / "sessions"
    fwd = FakeModel(spec=ModelSpec("counted", "m"))
    cfg = SessionConfig(task=builtin_spec("pubmedqa", 0, val_size=10), preset="quick", forward="counted:m",
                        backward="counted:m")
    s = Session.create(cfg, root=root, models=Models(fwd, fwd, Runner()))
    s.run_baseline()
    s.close()
    n_events = len(Session.open(s.id, root=root, readonly=True).events)
    base = ["evaluate", "--session", s.id, "--sessions-dir", str(root), "--split", "test", "--limit", "7", "--quiet"]
    rc = pgs(base)
    out = capsys.readouterr()
    assert rc != 0 and out.out == "" and len(out.err.strip().splitlines()) == 1 and "--reveal-test" in out.err
    assert not counted and len(Session.open(s.id, root=root, readonly=True).events) == n_events
    rc = pgs(base + ["--reveal-test"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert sum(sum(m.calls.values()) for m in counted) == 7
    ev = Session.open(s.id, root=root, readonly=True).events[-1]
    assert ev["type"] == TEST_REVEALED and ev["versions"] == [0] and ev["n"] == 7 and "recorded 'test_revealed'" in out.out


# ---------------------------------------------------------------- app


@pytest.fixture
def app_env(app_test_env):
    return app_test_env


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def press(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click()
    return _run(at)


def test_app_reveal_button_warns_records_and_history_marks_and_scores_confirmation(app_env):
    from tests.test_app import create_session  # the Setup walk (fake models, 20 validation questions)

    at = _run(AppTest.from_file(APP, default_timeout=60))
    sid = create_session(at)
    events = lambda: Session.open(sid, root=app_env / "sessions", readonly=True).events  # noqa: E731
    _run(at.switch_page("pages/optimize.py"))
    if not any(ev["type"] == "baseline" for ev in events()):
        press(at, "run_baseline")
    _run(at.switch_page("pages/evaluate.py"))
    at.number_input(key="eval_limit").set_value(10)
    press(at, "run_eval")
    warning = [w.value for w in at.warning if "test split is sealed" in w.value]
    assert warning and AFTER_TEST in warning[0]
    assert not any(ev["type"] == TEST_REVEALED for ev in events())
    press(at, "reveal_cancel")
    assert not any("test split is sealed" in w.value for w in at.warning)
    press(at, "run_eval")
    press(at, "reveal_test")
    assert [ev["type"] for ev in events()].count(TEST_REVEALED) == 1
    assert any("McNemar p" in df.value.columns for df in at.dataframe)
    _run(at.switch_page("pages/optimize.py"))
    press(at, "run_step")
    press(at, "continue_step")  # manual steps pause after the answers
    press(at, "reject_all")
    _run(at.switch_page("pages/history.py"))
    assert any(AFTER_TEST in w.value and "1" in w.value for w in at.warning)
    press(at, "score_confirmation")
    ev = events()[-1]
    assert ev["type"] == CONFIRMATION_SCORED and ev["versions"] == [0] and ev["n"] == 100
    table = next(df.value for df in at.dataframe if "confirmation" in df.value.columns)
    assert table["confirmation"].tolist() == [ev["scores"][0]["accuracy"]]

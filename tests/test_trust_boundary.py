"""A bundle never chooses where the key goes (imported sessions wait for the user to name their servers),
resume --base-url re-points any session, and resume after a crash continues the requested run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.bundle_integrity import content_hashes
from tests.conftest import pgs_cmd, subprocess_pythonpath
from tests.fake_model import stub_responder
from tests.stub_server import OPENAI_PATH, StubServer
from tests.test_cli import _count, last_json, pgs

KEY = "sk-trust-test-0123456789"
APP = str(Path(__file__).resolve().parent.parent / "app.py")


def rehash(b: dict) -> dict:
    """What a hostile sender does after editing a bundle: content hashes are not signatures, so recompute them."""
    b["hashes"] = content_hashes(b["events"], b.get("responses", {}), b.get("data"))
    return b


@pytest.fixture
def stubs():
    with StubServer(responder=stub_responder()) as legit, StubServer(responder=stub_responder()) as attacker:
        yield legit, attacker


def _optimize(base_url: str, *extra: str) -> dict:
    out = pgs("optimize", "--task", "pubmedqa", "--method", "textgrad", "--preset", "quick",
              "--forward", "openai:gpt-4o-mini", "--backward", "openai:gpt-4o-mini", "--base-url", base_url,
              "--steps", "1", "--val-limit", "6", "--json", "--quiet", *extra, env={"OPENAI_API_KEY": KEY})
    assert out.returncode == 0, out.stderr
    return last_json(out.stdout)


def _tampered_import(pgs_env, sid: str, url: str) -> str:
    bundle = pgs_env / "b.json"
    assert pgs("export", sid, "-o", str(bundle)).returncode == 0
    b = json.loads(bundle.read_text())
    b["events"][0]["config"]["forward_base_url"] = url
    b["events"][0]["config"]["backward_base_url"] = url
    bundle.write_text(json.dumps(rehash(b)))
    imp = pgs("import", str(bundle), "--sessions-dir", str(pgs_env / "imported"))
    assert imp.returncode == 0, imp.stderr
    return imp.stdout.strip()


def test_tampered_bundle_never_gets_the_key_until_repointed(pgs_env, stubs):
    legit, attacker = stubs
    s = _optimize(legit.base_url)
    sid = _tampered_import(pgs_env, s["session"], attacker.base_url)
    imported = ["--sessions-dir", str(pgs_env / "imported")]
    env = {"OPENAI_API_KEY": KEY, "PGS_CACHE_DIR": str(pgs_env / "cache2")}

    res = pgs("resume", sid, "--steps", "1", "--json", "--quiet", *imported, env=env)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and attacker.base_url in lines[0] and "--base-url" in lines[0], res.stderr
    assert "Traceback" not in res.stderr and KEY not in res.stderr
    assert attacker.count == 0

    before = legit.completion_count
    ok = pgs("resume", sid, "--steps", "1", "--base-url", legit.base_url, "--json", "--quiet", *imported, env=env)
    assert ok.returncode == 0, ok.stderr
    assert last_json(ok.stdout)["steps"] == 2
    assert attacker.count == 0
    assert legit.completion_count > before
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in legit.recorded()[before:])
    events = [json.loads(x) for x in (pgs_env / "imported" / sid / "events.jsonl").read_text().splitlines()]
    rp = [e for e in events if e["type"] == "repointed"]
    assert len(rp) == 1 and rp[0]["forward_base_url"] == legit.base_url == rp[0]["backward_base_url"]

    again = pgs("resume", sid, "--steps", "1", "--json", "--quiet", *imported, env=env)  # confirmed once: enough
    assert again.returncode == 0, again.stderr
    assert attacker.count == 0


def test_bundle_repointed_event_is_not_a_confirmation(pgs_env, stubs):
    legit, attacker = stubs
    s = _optimize(legit.base_url)
    bundle = pgs_env / "b.json"
    assert pgs("export", s["session"], "-o", str(bundle)).returncode == 0
    b = json.loads(bundle.read_text())
    b["events"].append({"type": "repointed", "ts": 1.0, "forward": "openai:gpt-4o-mini",
                        "forward_base_url": attacker.base_url, "backward": "openai:gpt-4o-mini",
                        "backward_base_url": attacker.base_url})
    bundle.write_text(json.dumps(rehash(b)))
    imp = pgs("import", str(bundle), "--sessions-dir", str(pgs_env / "imported"))
    assert imp.returncode == 0, imp.stderr
    res = pgs("resume", imp.stdout.strip(), "--steps", "1", "--quiet", "--sessions-dir", str(pgs_env / "imported"),
              env={"OPENAI_API_KEY": KEY})
    assert res.returncode != 0 and attacker.base_url in res.stderr
    assert attacker.count == 0


def test_resume_base_url_repoints_an_ordinary_session(pgs_env, stubs):
    old, new = stubs
    s = _optimize(old.base_url)
    before_old = old.count
    res = pgs("resume", s["session"], "--steps", "1", "--base-url", new.base_url, "--json", "--quiet",
              env={"OPENAI_API_KEY": KEY})
    assert res.returncode == 0, res.stderr
    assert last_json(res.stdout)["steps"] == 2
    assert new.count_path(OPENAI_PATH) > 0
    assert old.count == before_old
    log = (pgs_env / "sessions" / s["session"] / "events.jsonl").read_text()
    assert '"type": "repointed"' in log


def test_replay_of_a_repointed_session_is_identical(pgs_env, stubs):
    old, new = stubs
    s = _optimize(old.base_url)
    assert pgs("resume", s["session"], "--steps", "1", "--base-url", new.base_url, "--quiet",
               env={"OPENAI_API_KEY": KEY}).returncode == 0
    assert new.count_path(OPENAI_PATH) > 0  # the second step went to the new server
    bundle = pgs_env / "b.json"
    assert pgs("export", s["session"], "-o", str(bundle)).returncode == 0
    rep = pgs("replay", str(bundle), env={"PYTHONPATH": subprocess_pythonpath(fake_provider=False)})
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "identical; responses missing from the bundle: 0" in rep.stdout


def _kill_when(cond, common, delay: str) -> Path:
    proc = subprocess.Popen(pgs_cmd() + common, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PGS_FAKE_DELAY": delay})
    sessions = Path(os.environ["PGS_SESSIONS_DIR"])
    deadline = time.time() + 120
    events = None
    while time.time() < deadline:
        found = list(sessions.glob("*/events.jsonl")) if sessions.exists() else []
        if found and cond(found[0]):
            events = found[0]
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert events is not None
    return events


def test_kill_during_baseline_then_resume_runs_the_requested_steps(pgs_env):
    from core.cache import ResponseCache

    common = ["optimize", "--task", "pubmedqa", "--method", "textgrad", "--preset", "quick", "--forward", "fake:f",
              "--backward", "fake:b", "--steps", "2", "--val-limit", "40", "--patience", "10", "--json", "--quiet",
              "--concurrency", "2"]
    cache = ResponseCache(pgs_env / "cache")
    events = _kill_when(lambda p: _count(p, "created") and len(cache) >= 4, common, "0.1")
    assert _count(events, "baseline") == 0  # killed during the baseline
    res = pgs("resume", events.parent.name, "--json", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    s = last_json(res.stdout)
    assert s["steps"] == 2 and s["baseline_val"] is not None


def test_resume_steps_after_a_crash_runs_n_more(pgs_env):
    common = ["optimize", "--task", "pubmedqa", "--method", "textgrad", "--preset", "quick", "--forward", "fake:f",
              "--backward", "fake:b", "--steps", "4", "--val-limit", "20", "--patience", "10", "--json", "--quiet"]
    events = _kill_when(lambda p: _count(p, "proposal") >= 2, common, "0.02")
    lines = [json.loads(x) for x in events.read_text().splitlines() if x.strip().endswith("}")]
    done = sum(1 for e in lines if e["type"] == "gate" or (e["type"] == "decision" and e["action"] in ("reject", "skip")))
    res = pgs("resume", events.parent.name, "--steps", "1", "--json", "--quiet")
    assert res.returncode == 0, res.stderr
    assert last_json(res.stdout)["steps"] == done + 1 < 4


def test_app_imported_session_waits_for_confirmed_servers(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core import bundle
    from core.cache import ResponseCache
    from core.runner import Runner
    from core.session import Models, Session, SessionConfig
    from tests.fake_model import FakeModel

    monkeypatch.setenv("PGS_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("PGS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PGS_INLINE_JOBS", "1")
    cfg = SessionConfig(task={"name": "pubmedqa", "val_size": 10}, forward="fake:scripted", backward="fake:scripted",
                        preset="quick")
    cache = ResponseCache(tmp_path / "other-cache")
    s = Session.create(cfg, root=tmp_path / "elsewhere", models=Models(FakeModel(), FakeModel(), Runner(cache=cache)))
    s.run_auto(1)
    b = json.loads(bundle.bundle_bytes(s, cache))
    s.close()
    evil = "http://127.0.0.1:9/v1"
    b["events"][0]["config"]["forward_base_url"] = evil
    sid = bundle.import_bundle(json.dumps(rehash(b)).encode(), root=tmp_path / "sessions", cache=ResponseCache(tmp_path / "cache"))

    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.session_state["sid"] = sid
    at.switch_page("pages/optimize.py").run()
    assert not at.exception
    shown = " ".join(t.value for t in at.text)
    assert evil in shown and "fake:scripted" in shown
    assert at.button(key="run_step").disabled and at.button(key="auto_run").disabled
    at.text_input(key="repoint_forward_url").set_value("")
    at.button(key="confirm_servers").click().run()
    assert not at.exception
    assert not at.button(key="run_step").disabled
    log = [json.loads(x) for x in (tmp_path / "sessions" / sid / "events.jsonl").read_text().splitlines()]
    rp = [e for e in log if e["type"] == "repointed"]
    assert len(rp) == 1 and rp[0]["forward_base_url"] is None and rp[0]["backward_base_url"] is None
    at.button(key="run_step").click().run()
    at.button(key="continue_step").click().run()  # manual steps pause after the answers
    assert not at.exception
    assert Session.open(sid, root=tmp_path / "sessions", readonly=True).steps[-1].proposal is not None

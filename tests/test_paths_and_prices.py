"""Where sessions and the cache go (PGS_HOME or the current folder, never the installed package), and money:
exact and dated prices, the price snapshot a session keeps, USD budgets refused when a price is unknown, and
price overrides that belong to one browser session."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from core.llm import PRICES, Request, make_model, parse_spec, price_for, set_price_overrides
from core.runner import Runner
from tests.conftest import ROOT, pgs_cmd, subprocess_pythonpath
from tests.fake_model import stub_responder
from tests.stub_server import StubServer

pytestmark = pytest.mark.timeout(300)
UNPRICED = "acme-unpriced-1"


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch):
    """No real keys, base URLs or price overrides from the environment or an earlier test."""
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "PGS_PRICES",
                "PGS_HOME", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    set_price_overrides({})
    yield
    set_price_overrides({})


def plain_env(**extra: str) -> dict:
    """The environment of a user's shell: no PGS_* folders (conftest's pgs_env sets them), the fake provider."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGS_SESSIONS_DIR", "PGS_CACHE_DIR", "PGS_HOME")}
    env.update(PYTHONPATH=subprocess_pythonpath(), **extra)
    return env


def run_pgs(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(pgs_cmd() + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


OPTIMIZE = ("optimize", "--task", "pubmedqa", "--forward", "fake:scripted", "--val-limit", "3", "--steps", "1",
            "--quiet", "--json")


# ---------- data folders ----------

def test_installed_pgs_writes_sessions_and_cache_in_the_current_folder(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    out = run_pgs(*OPTIMIZE, cwd=work, env=plain_env())
    assert out.returncode == 0, out.stderr[-2000:]
    sid = json.loads(out.stdout.strip().splitlines()[-1])["session"]
    assert (work / "sessions" / sid / "events.jsonl").is_file()
    assert (work / "cache").is_dir() and any((work / "cache").iterdir())
    assert not (ROOT / "sessions" / sid).exists()  # never beside the code (site-packages when installed)


def test_pgs_home_holds_sessions_and_cache(tmp_path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_pgs(*OPTIMIZE, cwd=elsewhere, env=plain_env(PGS_HOME=str(home)))
    assert out.returncode == 0, out.stderr[-2000:]
    sid = json.loads(out.stdout.strip().splitlines()[-1])["session"]
    assert (home / "sessions" / sid / "events.jsonl").is_file()
    assert (home / "cache").is_dir()
    assert list(elsewhere.iterdir()) == []
    listed = run_pgs("evaluate", "--session", sid, "--json", "--quiet", cwd=elsewhere,
                     env=plain_env(PGS_HOME=str(home)))  # later commands find the session there too
    assert listed.returncode == 0, listed.stderr[-2000:]


def test_folders_are_resolved_at_call_time(tmp_path, monkeypatch):
    from core import paths
    from core.cache import ResponseCache

    for var in ("PGS_SESSIONS_DIR", "PGS_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    assert (paths.sessions_dir(), paths.cache_dir()) == (tmp_path / "sessions", tmp_path / "cache")
    monkeypatch.setenv("PGS_HOME", str(tmp_path / "h"))
    assert ResponseCache().directory == tmp_path / "h" / "cache"
    monkeypatch.setenv("PGS_SESSIONS_DIR", str(tmp_path / "s"))  # a folder named on its own beats PGS_HOME
    assert (paths.sessions_dir(), paths.cache_dir()) == (tmp_path / "s", tmp_path / "h" / "cache")


# ---------- prices ----------

def test_dated_model_is_priced_by_its_exact_entry(monkeypatch):
    assert price_for(parse_spec("openai:gpt-4o-2024-05-13")) == (5.00, 15.00)  # its own list price
    assert price_for(parse_spec("openai:gpt-4o-2024-08-06")) == PRICES["gpt-4o"]  # a dated name sharing the family's
    with StubServer(responder=lambda body: "Answer: yes") as s:
        monkeypatch.setenv("OPENAI_BASE_URL", s.base_url)  # the SDK's own setting: the spec stays hosted (priced)
        model = make_model("openai:gpt-4o-2024-05-13", api_key="sk-test")
        res = Runner(concurrency=2).run(model, [Request.chat("Be brief.", f"q{i}") for i in range(2)])
    for c in res.completions:
        assert c.error is None and c.input_tokens > 0
        assert c.cost_usd == pytest.approx((c.input_tokens * 5.00 + c.output_tokens * 15.00) / 1e6)


def test_unknown_price_with_usd_budget_is_refused_before_any_call(pgs_env):
    with StubServer(responder=stub_responder()) as s:
        env = {**os.environ, "OPENAI_BASE_URL": s.base_url, "OPENAI_API_KEY": "sk-test"}
        args = ("optimize", "--task", "pubmedqa", "--forward", f"openai:{UNPRICED}", "--budget-usd", "1",
                "--val-limit", "3", "--steps", "1", "--quiet")
        out = subprocess.run(pgs_cmd() + list(args), env=env, capture_output=True, text=True, timeout=240)
        assert out.returncode == 2, out.stderr[-2000:]
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and UNPRICED in lines[0] and "PGS_PRICES" in lines[0], out.stderr
        assert s.count == 0
        assert not (pgs_env / "sessions").exists() or not list((pgs_env / "sessions").iterdir())
        priced = subprocess.run(pgs_cmd() + [*args, "--json"], capture_output=True, text=True, timeout=240,
                                env={**env, "PGS_PRICES": json.dumps({UNPRICED: [1.0, 2.0]})})
        assert priced.returncode == 0, priced.stderr[-2000:]  # priced, the same run goes ahead
        assert s.count > 0 and json.loads(priced.stdout.strip().splitlines()[-1])["cost_usd"] > 0


def test_price_snapshot_is_recorded_and_used_after_the_table_changes(tmp_path, monkeypatch):
    from core.session import Models, Session, SessionConfig, price_key

    spec = "anthropic:claude-3-5-haiku-latest"
    with StubServer(responder=stub_responder()) as s:
        url = s.anthropic_base_url
        cfg = SessionConfig(task={"name": "pubmedqa"}, forward=spec, backward=spec, forward_base_url=url,
                            backward_base_url=url, val_limit=3, budget_usd=5.0)
        made = Session.create(cfg, root=tmp_path / "sessions")
        made.close()
        created = json.loads((tmp_path / "sessions" / made.id / "events.jsonl").read_text().splitlines()[0])
        assert created["config"]["prices"] == {price_key(spec, url): [0.80, 4.00]}
        monkeypatch.setitem(PRICES, "claude-3-5-haiku", (100.0, 500.0))  # the table changes afterwards
        sess = Session.open(made.id, root=tmp_path / "sessions")
        est = sess.estimate_baseline()["cost_usd"]
        sess.models = Models.from_config(sess.config, Runner(concurrency=2), keys={"anthropic": "sk-test"})
        sess.run_baseline()
        sp = sess.spend
        sess.close()
    assert sp.calls == 3 and sp.input_tokens > 0
    assert sp.cost_usd == pytest.approx((sp.input_tokens * 0.80 + sp.output_tokens * 4.00) / 1e6)
    assert 0 < est < 0.01  # estimated at the snapshot's $0.80/$4, not the table's $100/$500


def test_old_config_without_prices_loads_and_an_unpriced_budget_stops_before_calls(tmp_path):
    from core.session import Session, SessionConfig, SessionError

    cfg = SessionConfig(task={"name": "pubmedqa"}, forward="fake:f", backward="fake:b", val_limit=3)
    s = Session.create(cfg, root=tmp_path / "sessions")
    s.close()
    log = tmp_path / "sessions" / s.id / "events.jsonl"
    created = json.loads(log.read_text().splitlines()[0])
    created["config"].pop("prices")  # as written before snapshots
    created["config"].update(forward=f"openai:{UNPRICED}", budget_usd=1.0)
    log.write_text(json.dumps(created) + "\n")
    old = Session.open(s.id, root=tmp_path / "sessions")
    assert old.config.prices == {}
    with pytest.raises(SessionError, match=f"No price is known for openai:{UNPRICED}"):
        old.check_budget({"calls": 1, "cost_usd": 0.0})
    old.close()


def test_two_browser_sessions_keep_their_own_price_overrides(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PGS_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.setenv("PGS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PGS_INLINE_JOBS", "1")
    app = str(ROOT / "app.py")

    def price_caption(at: AppTest) -> str:
        at.switch_page("pages/setup.py").run()
        at.text_input(key="forward_spec").set_value(f"openai:{UNPRICED}").run()
        assert not at.exception, [e.value for e in at.exception]
        return next(c.value for c in at.caption if c.value.startswith("price:"))

    alice = AppTest.from_file(app, default_timeout=60)
    alice.run()
    alice.session_state["price_overrides"] = {UNPRICED: (1.25, 2.5)}
    alice.switch_page("pages/settings.py").run()
    alice.button(key="apply_prices").click().run()  # "Apply prices" in Settings
    assert not alice.exception, [e.value for e in alice.exception]
    assert alice.session_state["price_overrides"] == {UNPRICED: (1.25, 2.5)}
    assert "$1.25 in / $2.50 out" in price_caption(alice)

    bob = AppTest.from_file(app, default_timeout=60)
    bob.run()
    assert price_caption(bob).startswith("price: unknown")  # Alice's override is hers alone
    assert price_for(parse_spec(f"openai:{UNPRICED}")) is None  # nor did it change the process's table

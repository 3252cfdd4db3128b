"""Every argument is checked before any paid call: one line, exit 2, no session, no request to the server."""

from __future__ import annotations

import json
import math

import pytest

from core.llm import LLMError, parse_spec
from core.session import Session, SessionConfig, SessionError
from tests.fake_model import stub_responder
from tests.stub_server import StubServer
from tests.test_bad_input import assert_one_line_exit_2, pgs

MODEL = "openai-compatible:stub"


@pytest.fixture
def stub():
    with StubServer(responder=stub_responder()) as s:
        yield s


def sessions(root) -> list:
    d = root / "sessions"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def opt(url: str, *extra: str) -> list[str]:
    return ["optimize", "--task", "pubmedqa", "--forward", MODEL, "--base-url", url, "--quiet", *extra]


def ev(url: str, *extra: str) -> list[str]:
    return ["evaluate", "--task", "pubmedqa", "--model", MODEL, "--base-url", url, "--quiet", *extra]


OPTIMIZE_CASES = [
    (["--method", "protegi", "--set", "minibatch=abc", "--steps", "1"], "minibatch must be a whole number"),
    (["--set", "batch_size=-5"], "batch_size must be at least 1"),
    (["--set", "memory=1.5"], "memory must be a whole number"),
    (["--method", "protegi", "--set", "ucb_c=nan"], "ucb_c must be a number"),
    (["--method", "protegi", "--set", "bandit=greedy"], "bandit must be one of"),
    (["--set", "constraints=[1, 2]"], "constraints must be a list of strings"),
    (["--set", "batch_size"], "--set needs KEY=VALUE"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--steps", "-3"], "--steps must be at least 1"),
    (["--val-limit", "0"], "--val-limit must be at least 1"),
    (["--val-limit", "-1"], "--val-limit must be at least 1"),
    (["--val-size", "0"], "--val-size must be at least 1"),
    (["--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["--timeout", "0"], "--timeout must be greater than 0"),
    (["--budget-usd", "-1"], "--budget-usd must be at least 0"),
    (["--budget-usd", "inf"], "--budget-usd must be a number"),
    (["--budget-calls", "-5"], "--budget-calls must be at least 0"),
    (["--patience", "0"], "--patience must be at least 1"),
    (["--retries", "-1"], "--retries must be at least 0"),
    (["--steps", "abc"], "invalid int value"),
]


@pytest.mark.parametrize("extra,msg", OPTIMIZE_CASES, ids=[" ".join(c[0]) for c in OPTIMIZE_CASES])
def test_bad_optimize_arguments_are_refused_before_any_call(pgs_env, stub, extra, msg):
    out = pgs(*opt(stub.base_url, "--val-limit", "3", *extra), env={"OPENAI_API_KEY": "sk-test"})
    assert_one_line_exit_2(out, msg)
    assert stub.completion_count == 0 and sessions(pgs_env) == []


EVALUATE_CASES = [
    (["--limit", "0"], "--limit must be at least 1"),
    (["--limit", "-1"], "--limit must be at least 1"),
    (["--val-size", "0"], "--val-size must be at least 1"),
    (["--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["--timeout", "0"], "--timeout must be greater than 0"),
    (["--timeout", "nan"], "--timeout must be a number"),
    (["--concurrency", "0"], "--concurrency must be at least 1"),
    (["--task", "{csv}", "--input-cols", "q", "--label-col", "a", "--split", "test", "--reveal-test", "--test-size", "0", "--val-size", "5"],
     "split of"),
    (["--prompt", ""], "The prompt is empty"),
    (["--prompt", "   "], "The prompt is empty"),
]


@pytest.mark.parametrize("extra,msg", EVALUATE_CASES, ids=[" ".join(c[0]) for c in EVALUATE_CASES])
def test_bad_evaluate_arguments_are_refused_before_any_call(pgs_env, stub, extra, msg):
    csv = pgs_env / "data.csv"
    csv.write_text("q,a\n" + "".join(f"Question {i}?,{'yes' if i % 2 else 'no'}\n" for i in range(30)))
    extra = [x.replace("{csv}", str(csv)) for x in extra]
    out = pgs(*ev(stub.base_url, "--limit", "3", *extra), env={"OPENAI_API_KEY": "sk-test"})
    assert_one_line_exit_2(out, msg)
    assert stub.completion_count == 0


@pytest.mark.parametrize("url,msg", [
    ("http://127.0.0.1:99999/v1", "a port must be a number from 1 to 65535"),
    ("http://127.0.0.1:0/v1", "has port 0"),
    ("http:///v1", "has no host name"),
])
def test_bad_base_url_is_one_line_at_parse_time(pgs_env, url, msg):
    for args in (ev(url, "--limit", "2"), opt(url, "--val-limit", "2")):
        out = pgs(*args, env={"OPENAI_API_KEY": "sk-test"})
        assert_one_line_exit_2(out, msg)
        assert "ExceptionGroup" not in out.stderr
    assert sessions(pgs_env) == []
    with pytest.raises(LLMError, match="65535|host|port"):
        parse_spec(MODEL, url)


def test_good_settings_are_typed_from_the_engine_fields(pgs_env, stub):
    """A text field stays text even when it looks like a number (today '42' became an int and crashed the step)."""
    out = pgs(*opt(stub.base_url, "--val-limit", "3", "--steps", "1", "--set", "memory=0",
                   "--set", 'constraints=["Be brief."]', "--set", "role=42", "--json"),
              env={"OPENAI_API_KEY": "sk-test"})
    assert out.returncode == 0, out.stderr[-2000:]
    sid = json.loads(out.stdout.strip().splitlines()[-1])["session"]
    cfg = Session.open(sid, root=pgs_env / "sessions", readonly=True).config
    assert cfg.params == {"memory": 0, "constraints": ["Be brief."], "role": "42"}


@pytest.mark.parametrize("change,msg", [
    ({"params": {"batch_size": -5}}, "batch_size must be at least 1"),
    ({"params": {"batch_size": "abc"}}, "batch_size must be a whole number"),
    ({"params": {"batch_size": True}}, "batch_size must be a whole number"),
    ({"val_limit": 0}, "val_limit must be at least 1"),
    ({"patience": 0}, "patience must be at least 1"),
    ({"budget_usd": -1.0}, "budget_usd must be at least 0"),
    ({"budget_usd": math.nan}, "budget_usd must be a number"),
    ({"alpha": 1.5}, "alpha must be greater than 0 and less than 1"),
    ({"forward_max_tokens": 0}, "forward_max_tokens must be at least 1"),
    ({"task": {"name": "pubmedqa", "val_size": 0}}, "val_size must be at least 1"),
])
def test_session_config_validate_shares_the_checks(change, msg):
    cfg = SessionConfig(**{"task": {"name": "pubmedqa"}, "forward": "fake:f", "backward": "fake:b", **change})
    with pytest.raises(SessionError, match=msg):
        cfg.check()


@pytest.mark.parametrize("field,value,msg", [
    ("params", {"batch_size": "abc"}, "batch_size must be a whole number"),
    ("patience", 0, "patience must be at least 1"),
])
def test_old_session_with_a_bad_stored_value_is_one_line(pgs_env, stub, field, value, msg):
    out = pgs(*opt(stub.base_url, "--val-limit", "3", "--steps", "1", "--json"), env={"OPENAI_API_KEY": "sk-test"})
    assert out.returncode == 0, out.stderr[-2000:]
    sid = json.loads(out.stdout.strip().splitlines()[-1])["session"]
    log = pgs_env / "sessions" / sid / "events.jsonl"
    lines = log.read_text().splitlines()
    created = json.loads(lines[0])
    created["config"][field] = value
    log.write_text("\n".join([json.dumps(created)] + lines[1:]) + "\n")
    stub.reset()
    out = pgs("resume", sid, "--steps", "1", "--base-url", stub.base_url, "--quiet", env={"OPENAI_API_KEY": "sk-test"})
    assert_one_line_exit_2(out, msg)
    assert stub.completion_count == 0
    ro = Session.open(sid, root=pgs_env / "sessions", readonly=True)  # still readable, e.g. to export
    assert any(msg in w for w in ro.warnings)

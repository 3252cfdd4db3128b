"""End-to-end key hygiene: `pgs evaluate` against local stubs with a planted key in the environment.

The key must reach the server (it is the one being checked) and nothing else: no file, no output,
no log, no error message, not even when the server echoes it back in an error body.
"""

from __future__ import annotations

import json
import logging
import os

import pytest

from core.cli import EXIT_CONFIG, main

try:
    from tests.stub_server import Fault, StubServer
except ImportError:  # tests/ itself on sys.path
    from stub_server import Fault, StubServer

pytestmark = pytest.mark.timeout(120)

KEY = "sk-PLANTED-abc123XYZ987-secret"
KEY_PARTS = (KEY, "abc123XYZ987", KEY.encode().hex())
MODELS = {"openai": ("openai:gpt-4o-mini", "OPENAI_API_KEY"),
          "anthropic": ("anthropic:claude-sonnet-4-6", "ANTHROPIC_API_KEY")}


@pytest.fixture
def env(tmp_path, monkeypatch, caplog):
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "HTTP_PROXY",
                "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("PGS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PGS_SESSIONS_DIR", str(tmp_path / "sessions"))
    monkeypatch.chdir(tmp_path)  # anything written relative to the working folder lands under tmp too
    caplog.set_level(logging.DEBUG)
    return tmp_path


def base_url(provider: str, s: StubServer) -> str:
    return s.base_url if provider == "openai" else s.anthropic_base_url


def evaluate(provider: str, s: StubServer, monkeypatch, *extra: str) -> int:
    spec, var = MODELS[provider]
    monkeypatch.setenv(var, KEY)
    return main(["evaluate", "--task", "pubmedqa", "--split", "val", "--limit", "8", "--model", spec,
                 "--base-url", base_url(provider, s), "--concurrency", "2", "--retries", "1", *extra])


def assert_clean(root, *texts: str) -> None:
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                data = fh.read()
            for part in KEY_PARTS:
                assert part.encode() not in data, f"API key found in {path}"
            n += 1
    for t in texts:
        for part in KEY_PARTS:
            assert part not in t, f"API key leaked: {t[:300]}"


def log_text(caplog) -> str:
    return caplog.text + "\n".join(repr(r.args) + str(r.exc_info) for r in caplog.records)


@pytest.mark.parametrize("provider", list(MODELS))
def test_evaluate_uses_the_key_and_writes_it_nowhere(provider, env, monkeypatch, capsys, caplog):
    with StubServer(responder=lambda body: "The abstract supports it.\nAnswer: yes") as s:
        code = evaluate(provider, s, monkeypatch, "--json")
        first = capsys.readouterr()
        code2 = evaluate(provider, s, monkeypatch, "--json")  # cached rerun
        second = capsys.readouterr()
        recorded = s.recorded()
    assert code == 0 and code2 == 0, first.err + second.err
    assert len(recorded) == 8  # the rerun came from the cache
    presented = {r.headers.get("authorization") or r.headers.get("x-api-key") for r in recorded}
    assert presented <= {f"Bearer {KEY}", KEY} and presented  # the key did reach the server
    s1, s2 = json.loads(first.out.strip().splitlines()[-1]), json.loads(second.out.strip().splitlines()[-1])
    assert s1["n"] == 8 and s1["calls"] == 8 and s1["errors"] == 0
    assert s2["cached"] == 8 and s2["calls"] == 0
    assert (env / "cache").is_dir() and any((env / "cache").iterdir())
    assert_clean(env, first.out, first.err, second.out, second.err, log_text(caplog))


@pytest.mark.parametrize("provider", list(MODELS))
def test_401_exits_2_with_one_line_and_no_key(provider, env, monkeypatch, capsys, caplog):
    with StubServer(faults=lambda r: "401") as s:
        code = evaluate(provider, s, monkeypatch)  # progress bar on: stderr is checked too
        out, err = capsys.readouterr()
        seen = s.completion_count
    assert code == EXIT_CONFIG
    lines = [line for line in err.splitlines() if line.startswith("pgs: error:")]
    assert len(lines) == 1, err
    assert "rejected the API key" in lines[0] and MODELS[provider][1] in lines[0]
    assert seen <= 2  # concurrency 2: the batch stopped at once
    assert_clean(env, out, err, log_text(caplog))


@pytest.mark.parametrize("provider", list(MODELS))
def test_server_errors_that_echo_the_key_are_redacted(provider, env, monkeypatch, capsys, caplog):
    # every call fails with a 500 whose body repeats the key; errors are results, counted, never printed raw
    with StubServer(faults=lambda r: Fault.server_error(500, echo_key=True)) as s:
        code = evaluate(provider, s, monkeypatch, "--json")
        out, err = capsys.readouterr()
        assert s.completion_count == 16  # 8 calls, one retry each
    # when every call fails the command says so (exit 2, one line) with the key redacted
    assert code == 2, err
    assert "Every call failed" in err.strip().splitlines()[-1] and "***" in err
    assert_clean(env, out, err, log_text(caplog))

"""End to end with a real (small, CPU) model served by ../shared/tools/local-llm. Required in CI.

Quality is not the point: the real path works and messy real output is handled.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import LOCAL_MODEL, pgs_cmd

# The server answers one request at a time on 2 CPU cores: long timeouts, and concurrency 2 so the next request is always queued.
pytestmark = [pytest.mark.localllm, pytest.mark.timeout(2400)]


def run_pgs(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(pgs_cmd() + args, capture_output=True, text=True, timeout=timeout)


def events(env, sid: str) -> list[dict]:
    return [json.loads(x) for x in (env / "sessions" / sid / "events.jsonl").read_text().splitlines()]


def test_cli_evaluate_20_pubmedqa_questions(local_llm_url, pgs_env):
    out = run_pgs(["evaluate", "--task", "pubmedqa", "--split", "val", "--model", LOCAL_MODEL,
                   "--base-url", local_llm_url, "--limit", "20", "--max-tokens", "48", "--concurrency", "2",
                   "--timeout", "900", "--json"], timeout=2000)
    assert out.returncode == 0, out.stderr[-2000:]
    s = json.loads(out.stdout.strip().splitlines()[-1])
    assert s["n"] == 20 and s["errors"] == 0
    assert s["calls"] + s["cached"] == 20
    assert 0.0 <= s["accuracy"] <= 1.0 and 0 <= s["unparsed"] <= 20
    assert s["input_tokens"] > 20 * 100  # usage as the server reported it (contexts are long)
    assert s["cost_usd"] == 0.0  # a local server is free
    assert "20/20" in out.stderr  # the progress bar reached the end
    again = run_pgs(["evaluate", "--task", "pubmedqa", "--split", "val", "--model", LOCAL_MODEL,
                     "--base-url", local_llm_url, "--limit", "20", "--max-tokens", "48", "--json"])
    s2 = json.loads(again.stdout.strip().splitlines()[-1])
    assert s2["cached"] == 20 and s2["calls"] == 0 and s2["accuracy"] == s["accuracy"]


def _optimize(url: str, method: str, steps: int, extra: list[str]) -> dict:
    out = run_pgs(["optimize", "--task", "pubmedqa", "--method", method, "--forward", LOCAL_MODEL,
                   "--backward", LOCAL_MODEL, "--base-url", url, "--steps", str(steps), "--val-limit", "4",
                   "--max-tokens", "48", "--concurrency", "2", "--timeout", "900", "--json", "--quiet"] + extra,
                  timeout=2000)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_textgrad_two_steps_real_model(local_llm_url, pgs_env):
    s = _optimize(local_llm_url, "textgrad", 2, ["--preset", "quick", "--set", "batch_size=2",
                                                 "--set", "max_tokens=160", "--policy", "tie"])
    assert s["steps"] == 2 and s["baseline_val"] is not None
    ev = events(pgs_env, s["session"])
    types = [e["type"] for e in ev if e["type"] != "spend"]  # interim spend events land between
    assert types[:3] == ["created", "auto", "baseline"]  # the requested run is logged before the baseline
    assert types.count("proposal") >= 2 and types.count("step_started") >= 2
    for e in ev:
        if e["type"] == "proposal":
            p = e["proposal"]
            # every call the optimiser made is recorded with its messages and raw reply
            calls = p["calls"] + [g["call"] for g in p["gradients"] if g["call"]] + [
                c["call"] for c in p["candidates"] if c["call"]]
            assert calls and all(c["messages"] and isinstance(c["reply"], str) for c in calls)
            assert p["candidates"] or p["note"]  # a reply without tags is a clear note, not a crash
    decided = [e for e in ev if e["type"] in ("decision",)]
    assert len(decided) == 2


def test_protegi_one_round_real_model(local_llm_url, pgs_env):
    s = _optimize(local_llm_url, "protegi", 1, ["--preset", "quick", "--set", "minibatch=4", "--set", "n_groups=2",
                                                "--set", "errors_per_group=2", "--set", "bandit_budget=8",
                                                "--set", "max_tokens=160"])
    assert s["steps"] == 1
    ev = events(pgs_env, s["session"])
    types = [e["type"] for e in ev if e["type"] != "spend"]  # interim spend events land between
    assert types[:3] == ["created", "auto", "baseline"]  # the requested run is logged before the baseline
    assert {"step_started", "forward", "proposal", "decision"} <= set(types)
    prop = next(e for e in ev if e["type"] == "proposal")["proposal"]
    fwd = next(e for e in ev if e["type"] == "forward")["reports"][0]["rows"]
    assert len(fwd) == 4 and all(r["raw_output"] or r["error"] for r in fwd)
    if any(not r["correct"] for r in fwd):
        assert prop["gradients"], "failures existed, so gradient calls were made"
        assert all(g["failure_ids"] for g in prop["gradients"])

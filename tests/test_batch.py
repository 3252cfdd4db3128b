"""`pgs evaluate --batch`: one OpenAI Batch API job (the real openai SDK against tests/batch_stub.py), polled with
progress, resumed from the recorded batch id after a kill, half price, and cached like any call."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.batch_stub import BatchStub
from tests.conftest import pgs_cmd
from tests.fake_model import FakeModel, stub_responder
from tests.stub_server import StubServer

SPEC = "openai-compatible:stub-model"
PRICES = json.dumps({"stub-model": [1.0, 2.0]})


def evaluate(url: str, *extra: str, limit: int = 12, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGS_PRICES": PRICES}
    return subprocess.run(pgs_cmd() + ["evaluate", "--task", "pubmedqa", "--split", "val", "--limit", str(limit),
                                       "--model", SPEC, "--base-url", url, "--json", *extra],
                          capture_output=True, text=True, env=env, timeout=timeout)


def last_json(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode in (0, 3), out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_batch_evaluation_scores_like_the_synchronous_path_at_half_price_and_is_cached(pgs_env):
    with StubServer(responder=stub_responder(FakeModel())) as sync_stub:
        sync = last_json(evaluate(sync_stub.base_url, "--no-cache"))
    with BatchStub(stub_responder(FakeModel()), polls_to_finish=3) as stub:
        out = evaluate(stub.base_url, "--batch", "--poll-seconds", "0.05")
        batch = last_json(out)
        assert out.returncode == 0
        assert (stub.uploads, len(stub.batches)) == (1, 1)
        assert stub.polls["batch_1"] == 3
        assert "batch batch_1: in_progress" in out.stderr and "batch batch_1: completed 12/12" in out.stderr
        for k in ("accuracy", "correct", "n", "answered", "input_tokens", "output_tokens"):
            assert batch[k] == sync[k], k
        assert batch["calls"] == 12 and batch["cached"] == 0
        assert batch["cost_usd"] == pytest.approx(sync["cost_usd"] / 2, rel=1e-3) and sync["cost_usd"] > 0
        again = last_json(evaluate(stub.base_url, "--batch", "--poll-seconds", "0.05"))
        assert len(stub.batches) == 1  # every answer came from the cache: nothing submitted
        assert again["cached"] == 12 and again["accuracy"] == batch["accuracy"]
    assert not list((pgs_env / "cache" / "batches").glob("*.json"))  # a finished batch leaves no record


def test_killed_batch_run_resumes_the_recorded_batch(pgs_env):
    with BatchStub(stub_responder(FakeModel()), polls_to_finish=2) as stub:
        stub.hold = True
        env = {**os.environ, "PGS_PRICES": PRICES}
        proc = subprocess.Popen(pgs_cmd() + ["evaluate", "--task", "pubmedqa", "--split", "val", "--limit", "10",
                                             "--model", SPEC, "--base-url", stub.base_url, "--json", "--batch",
                                             "--poll-seconds", "0.05"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            t0 = time.monotonic()
            while (not stub.polls.get("batch_1") or stub.polls["batch_1"] < 2) and time.monotonic() - t0 < 60:
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.wait()
        assert stub.polls["batch_1"] >= 2
        records = list((pgs_env / "cache" / "batches").glob("*.json"))
        assert len(records) == 1 and json.loads(records[0].read_text())["batch_id"] == "batch_1"
        stub.hold = False
        out = evaluate(stub.base_url, "--batch", "--poll-seconds", "0.05", limit=10)
        d = last_json(out)
        assert out.returncode == 0
        assert (stub.uploads, len(stub.batches)) == (1, 1)  # picked up, not paid twice
        assert "batch batch_1 (resumed): completed 10/10" in out.stderr
        assert d["n"] == d["answered"] == 10 and d["calls"] == 10
    assert not list((pgs_env / "cache" / "batches").glob("*.json"))


def test_failed_batch_requests_are_errors_not_cached(pgs_env):
    with BatchStub(stub_responder(FakeModel()), polls_to_finish=1) as stub:
        stub.fail_ids = {"r1", "r4"}
        out = evaluate(stub.base_url, "--batch", "--poll-seconds", "0.05", limit=8)
        d = last_json(out)
        assert out.returncode == 3 and d["errors"] == 2 and d["answered"] == 6
        assert "stub: this request failed" in out.stderr
        stub.fail_ids = set()
        again = last_json(evaluate(stub.base_url, "--batch", "--poll-seconds", "0.05", limit=8))
        assert again["cached"] == 6 and again["errors"] == 0
        second = stub.files[stub.batches["batch_2"]["input_file_id"]].decode().strip().splitlines()
        assert len(second) == 2  # only the two that failed were sent again


def test_batch_needs_an_openai_or_anthropic_model(pgs_env):
    out = subprocess.run(pgs_cmd() + ["evaluate", "--task", "pubmedqa", "--limit", "3", "--model", "fake:x",
                                      "--batch"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Batch pricing needs an OpenAI or Anthropic model" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_study_test_reveals_go_as_batches(pgs_env):
    with BatchStub(stub_responder(FakeModel()), polls_to_finish=2) as stub:
        env = {**os.environ, "PGS_PRICES": PRICES}
        out = subprocess.run(pgs_cmd() + ["study", "--task", "pubmedqa", "--forward", SPEC, "--backward", SPEC,
                                          "--base-url", stub.base_url, "--seeds", "2", "--steps", "1", "--presets",
                                          "quick", "--val-limit", "20", "--reveal-test", "--test-limit", "15",
                                          "--batch", "--poll-seconds", "0.05", "--json"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        d = json.loads(out.stdout.strip().splitlines()[-1])
        assert stub.chat_calls > 0  # the steps ran synchronously
        sizes = [len(stub.files[b["input_file_id"]].decode().strip().splitlines()) for b in stub.batches.values()]
        assert sizes == [15] * len(stub.batches) and 1 <= len(stub.batches) <= 2  # one per distinct final prompt
        for r in d["runs"]:
            events = [json.loads(x) for x in (pgs_env / "sessions" / r["session"] / "events.jsonl").read_text()
                      .splitlines() if x.strip()]
            reveal = [e for e in events if e["type"] == "test_revealed"]
            assert len(reveal) == 1 and reveal[0]["n"] == 15
            assert r["test"] == pytest.approx(reveal[0]["scores"][0]["accuracy"])
        assert "completed 15/15" in out.stderr


def test_anthropic_message_batch_scores_like_the_openai_batch(pgs_env):
    with BatchStub(stub_responder(FakeModel()), polls_to_finish=2) as stub:
        openai_run = last_json(evaluate(stub.base_url, "--batch", "--poll-seconds", "0.05", "--no-cache", limit=9))
        env = {**os.environ, "PGS_PRICES": json.dumps({"stub-claude": [1.0, 2.0]}), "ANTHROPIC_API_KEY": "sk-ant-test"}
        out = subprocess.run(pgs_cmd() + ["evaluate", "--task", "pubmedqa", "--split", "val", "--limit", "9", "--model",
                                          "anthropic:stub-claude", "--base-url", stub.base_url.removesuffix("/v1"),
                                          "--batch", "--poll-seconds", "0.05", "--json"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        d = json.loads(out.stdout.strip().splitlines()[-1])
        assert "batch msgbatch_2: ended 9/9" in out.stderr and "sk-ant-test" not in out.stderr + out.stdout
        assert len(stub.batches["msgbatch_2"]["_requests"]) == 9
        for k in ("accuracy", "correct", "answered"):
            assert d[k] == openai_run[k], k
        assert d["cost_usd"] == pytest.approx(BATCH_HALF * (d["input_tokens"] * 1.0 + d["output_tokens"] * 2.0) / 1e6, abs=1e-6)
        stub.fail_ids = {"r0"}
        again = subprocess.run(pgs_cmd() + ["evaluate", "--task", "pubmedqa", "--split", "val", "--limit", "10",
                                            "--model", "anthropic:stub-claude", "--base-url",
                                            stub.base_url.removesuffix("/v1"), "--batch", "--poll-seconds", "0.05",
                                            "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert again.returncode == 3 and "stub: this request failed" in again.stderr
        assert len(stub.batches["msgbatch_3"]["_requests"]) == 1  # nine answers came from the cache


BATCH_HALF = 0.5

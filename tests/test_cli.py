"""The `pgs` command: tasks, evaluate, optimize, crash and resume, export/import/replay, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import pgs_cmd, subprocess_pythonpath


def pgs(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(pgs_cmd() + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_tasks_lists_builtins_with_split_sizes(pgs_env):
    out = pgs("tasks", "--json")
    assert out.returncode == 0
    t = {x["name"]: x for x in json.loads(out.stdout)}
    assert t["pubmedqa"]["sizes"] == {"train": 200, "val": 200, "test": 500, "confirmation": 100}
    assert t["medqa"]["sizes"] == {"train": 200, "val": 200, "test": 773, "confirmation": 100}
    assert t["liar"]["sizes"]["test"] == 461
    human = pgs("tasks")
    assert "pubmedqa" in human.stdout and "test=500" in human.stdout


def test_evaluate_json_and_cache(pgs_env):
    args = ["evaluate", "--task", "pubmedqa", "--split", "val", "--model", "fake:scripted", "--limit", "12", "--json"]
    out = pgs(*args)
    assert out.returncode == 0, out.stderr
    s = last_json(out.stdout)
    for k in ("accuracy", "n", "unparsed", "calls", "cached", "input_tokens", "output_tokens", "cost_usd"):
        assert k in s
    assert s["n"] == 12 and s["calls"] == 12 and s["cached"] == 0 and s["cost_usd"] > 0
    assert "12/12" in out.stderr  # progress bar on stderr
    again = last_json(pgs(*args).stdout)
    assert again["calls"] == 0 and again["cached"] == 12 and again["cost_usd"] == 0 and again["accuracy"] == s["accuracy"]


@pytest.mark.parametrize("strategy", ["zero-shot", "cot", "few-shot:2"])
def test_evaluate_strategies(pgs_env, strategy):
    out = pgs("evaluate", "--task", "medqa", "--split", "test", "--reveal-test", "--model", "fake:x", "--limit", "3",
              "--strategy", strategy, "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    assert last_json(out.stdout)["strategy"] == strategy


def test_evaluate_custom_csv(pgs_env):
    csv = pgs_env / "data.csv"
    rows = ["question,context,answer"] + [f"Q{i}?,Context {i},{'yes' if i % 2 else 'no'}" for i in range(40)]
    csv.write_text("\n".join(rows))
    out = pgs("evaluate", "--task", str(csv), "--input-cols", "question,context", "--label-col", "answer",
              "--val-size", "10", "--test-size", "10", "--model", "fake:x", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    assert last_json(out.stdout)["n"] == 10


@pytest.mark.parametrize("args,msg", [
    (["evaluate", "--task", "nope", "--model", "fake:x"], "Unknown task 'nope'"),
    (["evaluate", "--task", "pubmedqa", "--model", "gpt-4o"], "needs a provider prefix"),
    (["evaluate", "--task", "pubmedqa", "--model", "foo:bar"], "Unknown provider"),
    (["evaluate", "--task", "pubmedqa", "--split", "dev", "--model", "fake:x"], "Unknown split"),
    (["evaluate", "--task", "pubmedqa", "--model", "openai-compatible:m"], "base URL"),
    (["evaluate", "--task", "pubmedqa", "--model", "fake:x", "--strategy", "few-shot:0"], "few-shot"),
    (["optimize", "--task", "pubmedqa", "--forward", "fake:x", "--policy", "maybe"], "Unknown policy"),
    (["optimize", "--task", "pubmedqa", "--forward", "fake:x", "--set", "beam=3"], "Unknown textgrad settings"),
    (["resume", "nonexistent-id"], "No session"),
    (["import", "/nonexistent/bundle.json"], "Cannot read"),
])
def test_configuration_errors_are_one_line_exit_2(pgs_env, args, msg):
    out = pgs(*args)
    assert out.returncode == 2
    assert msg in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_custom_file_errors_are_one_line(pgs_env):
    bad = pgs_env / "bad.csv"
    bad.write_bytes("question,answer\nQ1,yes\n".encode())
    out = pgs("evaluate", "--task", str(bad), "--input-cols", "question,context", "--label-col", "answer",
              "--model", "fake:x")
    assert out.returncode == 2 and "context" in out.stderr and "Traceback" not in out.stderr


def test_optimize_json_summary_and_export_replay(pgs_env):
    out = pgs("optimize", "--task", "pubmedqa", "--method", "textgrad", "--forward", "fake:f", "--backward", "fake:b",
              "--steps", "2", "--val-limit", "10", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    s = last_json(out.stdout)
    for k in ("session", "steps", "accepted", "baseline_val", "best_val", "calls", "cost_usd"):
        assert k in s
    assert s["steps"] == 2 and s["best_val"] >= s["baseline_val"]
    assert sum(1 for line in out.stdout.splitlines() if line.startswith("step ")) == 2
    bundle = pgs_env / "b.json"
    assert pgs("export", s["session"], "-o", str(bundle)).returncode == 0
    md = pgs("export", s["session"], "--format", "markdown")
    assert "# Prompt Gradient Studio" in md.stdout
    rep = pgs("replay", str(bundle), env={"PYTHONPATH": subprocess_pythonpath(fake_provider=False)})  # no fake provider, no key: offline only
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "identical; responses missing from the bundle: 0" in rep.stdout
    imp = pgs("import", str(bundle), "--sessions-dir", str(pgs_env / "other"))
    assert imp.returncode == 0 and (pgs_env / "other" / imp.stdout.strip() / "events.jsonl").exists()


def _count(path, kind: str) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if f'"type": "{kind}"' in line)
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("kill_after", ["proposal", "decision"])
def test_kill_9_then_resume_continues_as_if_uninterrupted(pgs_env, kill_after):
    common = ["optimize", "--task", "pubmedqa", "--method", "textgrad", "--forward", "fake:f", "--backward", "fake:b",
              "--steps", "4", "--val-limit", "20", "--patience", "10", "--json", "--quiet"]
    ref = pgs(*common, "--sessions-dir", str(pgs_env / "ref"), env={"PGS_CACHE_DIR": str(pgs_env / "refcache")})
    assert ref.returncode == 0, ref.stderr
    ref_s = last_json(ref.stdout)

    proc = subprocess.Popen(pgs_cmd() + common, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PGS_FAKE_DELAY": "0.02"})
    sessions = pgs_env / "sessions"
    deadline = time.time() + 120
    events = None
    while time.time() < deadline:
        found = list(sessions.glob("*/events.jsonl")) if sessions.exists() else []
        if found:
            events = found[0]
            if _count(events, kind_for(kill_after)) >= 2:  # in the middle of step 2
                break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert events is not None
    before = events.read_text().splitlines()
    accepted_before = sum(1 for x in before if '"type": "gate"' in x and '"accepted": true' in x)
    sid = events.parent.name

    res = pgs("resume", sid, "--json", "--quiet")
    assert res.returncode == 0, res.stderr
    s = last_json(res.stdout)
    assert s["steps"] == 4 and s["accepted"] >= accepted_before
    assert s["final_prompt"] == ref_s["final_prompt"] and s["best_val"] == ref_s["best_val"]
    assert s["accepted"] == ref_s["accepted"]
    after = events.read_text().splitlines()
    assert after[: len(before) - 1] == before[: len(before) - 1]  # append-only: history untouched


def kind_for(stage: str) -> str:
    return stage


def test_sigkill_during_validation_then_resume_uses_cache(pgs_env):
    common = ["optimize", "--task", "pubmedqa", "--method", "textgrad", "--forward", "fake:f", "--backward", "fake:b",
              "--steps", "1", "--val-limit", "50", "--json", "--quiet",
              "--preset", "AutoMedPrompt paper", "--set", "batch_size=5"]  # strict gate, a 5-question minibatch
    proc = subprocess.Popen(pgs_cmd() + common, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PGS_FAKE_DELAY": "0.2"})
    sessions = pgs_env / "sessions"
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list(sessions.glob("*/events.jsonl")) if sessions.exists() else []
        if found and _count(found[0], "decision") >= 1:
            break
        time.sleep(0.01)
    from core.cache import ResponseCache

    cache = ResponseCache(pgs_env / "cache")
    before_validation = 50 + 5 + 7  # baseline answers, minibatch, losses + gradient + update
    while time.time() < deadline and len(cache) < before_validation + 8:
        time.sleep(0.02)  # wait until some validation answers are cached
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(cache) - before_validation
    assert finished >= 8
    sid = found[0].parent.name
    res = pgs("resume", sid, "--json", "--quiet")
    assert res.returncode == 0, res.stderr
    s = last_json(res.stdout)
    assert res.stdout.count("step 1:") == 1 and s["steps"] == 1
    # the current prompt's 50 answers (from the baseline) and the candidate's answers that finished
    # before the kill all come from the cache on resume
    assert s["cached"] >= 50 + finished  # the baseline's answers and the validation calls finished before the kill


def test_exclude_and_lock_verbs_record_one_event_each_and_bad_ones_are_one_line(pgs_env):
    out = pgs("optimize", "--task", "pubmedqa", "--method", "textgrad", "--forward", "fake:f", "--backward", "fake:b",
              "--steps", "1", "--val-limit", "10", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    sid = last_json(out.stdout)["session"]
    events = pgs_env / "sessions" / sid / "events.jsonl"
    val_id = json.loads(events.read_text().splitlines()[2])["report"]["rows"][0]["id"]  # the baseline's first question
    ex = pgs("exclude", sid, val_id, "--reason", "gold contradicts the abstract", "--json")
    assert ex.returncode == 0, ex.stderr
    assert last_json(ex.stdout) == {"session": sid, "question": val_id, "excluded": True,
                                    "reason": "gold contradicts the abstract", "from_step": 2, "excluded_total": 1}
    dis = pgs("exclude", sid, val_id, "--reason", "on second thought", "--dispute-only")
    assert dis.returncode == 0 and "label disputed (still asked)" in dis.stdout and "0 excluded in all" in dis.stdout
    blame = last_json(pgs("blame", sid, "--json").stdout)["sentences"]
    lock = pgs("lock", sid, "--sentence", "1", "--json")
    assert lock.returncode == 0, lock.stderr
    assert last_json(lock.stdout)["locked"] == [blame[0]["text"]] == last_json(lock.stdout)["locks"]
    unlock = pgs("lock", sid, "--sentence", "1", "--unlock")
    assert unlock.returncode == 0 and unlock.stdout.strip().endswith("0 sentences locked")
    logged = [json.loads(line)["type"] for line in events.read_text().splitlines()]
    assert logged[-4:] == ["label_disputed", "label_disputed", "sentences_locked", "sentences_unlocked"]
    for args, msg in ((("exclude", sid, "no-such-q", "--reason", "x"), "no question 'no-such-q'"),
                      (("lock", sid, "--sentence", str(len(blame) + 1)), f"no sentence {len(blame) + 1}"),
                      (("lock", sid, "--sentence", "0"), "no sentence 0"),
                      (("exclude", sid, val_id, "--reason", " "), "a reason")):
        bad = pgs(*args)
        assert bad.returncode == 2 and msg in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert len(events.read_text().splitlines()) == len(logged)  # nothing written by a refused verb
    rep = pgs("export", sid, "-o", str(pgs_env / "b.json"))
    assert rep.returncode == 0
    replay = pgs("replay", str(pgs_env / "b.json"), env={"PYTHONPATH": subprocess_pythonpath(fake_provider=False)})
    assert "identical; responses missing from the bundle: 0" in replay.stdout, replay.stdout + replay.stderr

"""Failed calls are not wrong answers: scores over answered questions, failures counted and said.

The real openai SDK against tests/stub_server.py; the stub answers right or wrong on chosen questions
and returns HTTP 500 (persistently, retries off) on a chosen subset.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from core import bandits
from core.bandits import select
from core.evaluate import evaluate
from core.llm import ClientOptions, make_model
from core.runner import Runner
from core.tasks import load_task
from tests.conftest import pgs_cmd
from tests.stub_server import StubRequest, StubServer

pytestmark = pytest.mark.timeout(120)

N = 40
FAIL = set(range(0, N, 10)) | {3, 17}  # 6 questions whose calls always fail
RIGHT = {i for i in range(N) if i % 3 != 1}  # answered right where the call succeeds


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch):
    for var in ("OPENAI_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def scripted_stub(task, examples, fail=FAIL, right=RIGHT) -> StubServer:
    """Right or wrong per question index; HTTP 500 on every attempt for the questions in `fail`."""
    index = {task.render(ex): i for i, ex in enumerate(examples)}
    labels = list(task.labels)

    def respond(body: dict) -> str:
        msgs = body.get("messages") or []
        i = index[msgs[-1]["content"]]
        gold = examples[i].label
        return f"Answer: {gold if i in right else next(x for x in labels if x != gold)}"

    def faults(req: StubRequest):
        return "500" if index.get(req.user_text) in fail else None

    return StubServer(responder=respond, faults=faults)


def expected(fail=FAIL, right=RIGHT, n=N) -> tuple[int, int]:
    answered = [i for i in range(n) if i not in fail]
    return sum(1 for i in answered if i in right), len(answered)


def test_evaluate_cli_scores_answered_questions_and_exits_3(pgs_env):
    task = load_task("pubmedqa")
    examples = task.split("val")[:N]
    correct, answered = expected()
    with scripted_stub(task, examples) as stub:
        out = subprocess.run(pgs_cmd() + ["evaluate", "--task", "pubmedqa", "--split", "val", "--limit", str(N),
                                          "--model", "openai:gpt-4o-mini", "--base-url", stub.base_url,
                                          "--retries", "0", "--json", "--quiet"],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OPENAI_API_KEY": "sk-test-honest-0000"})
    assert out.returncode == 3, out.stderr
    s = json.loads(out.stdout.strip().splitlines()[-1])
    assert s["errors"] == len(FAIL) and s["answered"] == answered and s["n"] == N
    assert s["correct"] == correct
    assert s["accuracy"] == pytest.approx(correct / answered)
    warn = [ln for ln in out.stderr.splitlines() if ln.startswith("pgs: warning:")]
    assert len(warn) == 1, out.stderr
    assert f"{len(FAIL)} of {N} calls failed" in warn[0] and f"{answered} answered" in warn[0]
    assert "Traceback" not in out.stderr


def test_evaluate_cli_all_answered_exits_0_and_all_failed_exits_2(pgs_env):
    task = load_task("pubmedqa")
    examples = task.split("val")[:10]
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-honest-0000"}
    for fail, code in ((set(), 0), (set(range(10)), 2)):
        with scripted_stub(task, examples, fail=fail) as stub:
            out = subprocess.run(pgs_cmd() + ["evaluate", "--task", "pubmedqa", "--limit", "10", "--no-cache",
                                              "--model", "openai:gpt-4o-mini", "--base-url", stub.base_url,
                                              "--retries", "0", "--json", "--quiet"],
                                 capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == code, out.stderr
        assert ("pgs: warning:" in out.stderr) is False
    help_ = subprocess.run(pgs_cmd() + ["evaluate", "--help"], capture_output=True, text=True, timeout=60)
    assert "3 some calls failed" in " ".join(help_.stdout.split())


def test_eval_report_interval_and_paired_test_use_answered_questions(tmp_path):
    from core.metrics import wilson_interval
    from ui.evaluation import failed_calls_note, head_to_head

    task = load_task("pubmedqa")
    examples = task.split("val")[:N]
    correct, answered = expected()
    opts = ClientOptions(timeout_s=5.0, max_retries=0)
    with scripted_stub(task, examples) as stub:
        model = make_model("openai:gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", options=opts)
        a = evaluate("prompt A", examples, model, task=task, runner=Runner(concurrency=4))
    ref_fail, ref_right = {5, 6, 17}, set(range(N))  # the reference: right everywhere it answered
    with scripted_stub(task, examples, fail=ref_fail, right=ref_right) as stub:
        model = make_model("openai:gpt-4o-mini", base_url=stub.base_url, api_key="sk-test", options=opts)
        ref = evaluate("prompt R", examples, model, task=task, runner=Runner(concurrency=4))
    assert a.errors == len(FAIL) and a.answered == answered
    assert a.accuracy == pytest.approx(correct / answered)
    assert a.interval == wilson_interval(correct, answered)
    assert len(a.correct_by_id()) == answered
    rows = {r["prompt"]: r for r in head_to_head({"R": ref, "A": a}, "R")}
    both = [i for i in range(N) if i not in FAIL | ref_fail]
    assert rows["A"]["pairs"] == len(both) and rows["A"]["dropped_pairs"] == N - len(both)
    only_ref = sum(1 for i in both if i not in RIGHT)  # the reference is right on every pair
    assert rows["A"]["only_ref_right"] == only_ref and rows["A"]["only_this_right"] == 0
    assert rows["A"]["delta_vs_ref"] == pytest.approx(-only_ref / len(both))
    note = failed_calls_note(list(rows.values()))
    assert f"A: {answered} answered, {len(FAIL)} failed" in note and f"dropped {N - len(both)} pair" in note


# ---- the bandit: failed pulls are not zero rewards ----------------------------------------------------


class Arms:
    """Arm a's reward on example e is truth[a][e]; pulls in `fail` fail (None) `times` times, then answer."""

    def __init__(self, truth, fail, times=10**9):
        self.truth, self.fail, self.times, self.log = truth, fail, times, []
        self.failures: dict = {}

    def __call__(self, pulls):
        out = []
        for a, e in pulls:
            self.log.append((a, e))
            if (a, e) in self.fail and self.failures.get((a, e), 0) < self.times:
                self.failures[(a, e)] = self.failures.get((a, e), 0) + 1
                out.append(None)
            else:
                out.append(self.truth[a][e])
        return out


def test_brute_force_means_leave_failed_pulls_out():
    n_ex = 10
    truth = [[1.0] * n_ex, [1.0 if e % 2 else 0.0 for e in range(n_ex)]]
    fail = {(0, e) for e in range(6)}  # arm 0 is always right, but 6 of its calls fail
    res = select("brute-force", 2, n_ex, 2 * n_ex, Arms(truth, fail), seed=1)
    assert res.means[0] == 1.0  # today: 0.4 (failures scored 0) and arm 1 would look as good or better
    assert res.pulls[0] == n_ex - 6 and res.failed == [6, 0]
    assert res.ranking[0] == 0 and res.spent == sum(res.pulls) + sum(res.failed)


@pytest.mark.parametrize("algorithm", ["ucb", "ucb-e"])
def test_transient_failures_are_retried_within_budget(algorithm):
    n_ex = 6
    truth = [[1.0, 0.0, 1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0, 1.0, 0.0], [1.0] * n_ex]
    fail = {(0, 2), (2, 4)}
    env = Arms(truth, fail, times=1)  # fails once, answers when asked again
    res = select(algorithm, 3, n_ex, 3 * n_ex + 6, env, seed=0, samples_per_eval=3, arms_per_round=3)
    for pair in fail:
        assert env.log.count(pair) == 2  # retried, not marked seen after the failure (today: pulled once, scored 0)
    assert res.pulls == [n_ex] * 3 and res.failed == [1, 0, 1] and res.spent == 3 * n_ex + 2
    assert res.means == pytest.approx([sum(t) / n_ex for t in truth])


def test_persistent_failures_are_given_up_and_excluded():
    n_ex = 5
    truth = [[1.0] * n_ex, [0.0] * n_ex]
    fail = {(0, 1), (0, 3)}
    env = Arms(truth, fail)
    res = select("ucb", 2, n_ex, 40, env, seed=3, samples_per_eval=5, arms_per_round=2)
    for pair in fail:
        assert env.log.count(pair) == bandits.MAX_ATTEMPTS
    assert res.pulls[0] == n_ex - 2 and res.means[0] == 1.0 and res.failed[0] == 2 * bandits.MAX_ATTEMPTS
    assert res.ranking[0] == 0


def test_protegi_bandit_leaves_failed_pulls_out(tmp_path):
    """A ProTeGi step whose candidate prompts fail on chosen training questions (HTTP 500, retries off): the
    failed pulls are counted apart, never as zero rewards, and the pulls add up."""
    from tests.fake_model import stub_responder
    from tests.test_faults import FWD, Run

    task = load_task("pubmedqa")
    poisoned = {task.render(ex) for ex in task.split("train")[::3]}  # every third training question
    seed_prompt = {}

    def plan(r: StubRequest):
        is_candidate = (r.body or {}).get("model") == FWD and r.system_text != seed_prompt.get("text")
        return "500" if is_candidate and r.user_text in poisoned else None

    with StubServer(responder=stub_responder(), faults=plan) as stub:
        run = Run(tmp_path, stub, method="protegi", options=ClientOptions(timeout_s=5.0, max_retries=0))
        seed_prompt["text"] = run.cfg.seed_prompt
        run.session.run_baseline()
        st = run.session.start_step()
        bandit = st.proposal.bandit
        failed = [r for r in stub.recorded() if r.status == 500]
        assert failed and bandit["failed"] == len(failed)
        pulls = sum(c.pulls for c in st.proposal.candidates) + sum(b["pulls"] for b in bandit["beam_scores"])
        assert pulls + bandit["failed"] == bandit["spent"]
        run.session.close()

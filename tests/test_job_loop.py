"""One event loop per job (issue 10 item 5), immediate cancel and honest progress (issue 11 items 3, 4):
the ask/tell bandit, run_job, in-flight cancel against the real openai SDK, and JobProgress."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from core import bandits
from core.engine import Cancelled, StepContext
from core.evaluate import EvalRow, evaluate
from core.lineage import Candidate, Proposal
from core.llm import ModelSpec, Request, make_model
from core.meta_prompts import Templates
from core.progress import JobProgress
from core.protegi import ProtegiConfig, ProtegiEngine
from core.runner import CANCELLED, CancelToken, Runner, run_job
from core.session import Models, Session, SessionConfig
from core.tasks import load_task
from core.testlock import Entry, evaluate_entries
from tests.fake_model import FakeModel
from tests.stub_server import Fault, StubServer

GOLDEN = Path(__file__).parent / "data" / "bandit_selections.json"


def env(ps, seed, fail_every=0):
    """Fixed rewards: Bernoulli(ps[arm]) by a seeded hash per (arm, example); every `fail_every`-th pair fails."""
    def u(arm, ex):
        h = hashlib.blake2b(f"{seed}:{arm}:{ex}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") / 2**64

    def f(pulls):
        return [None if fail_every and (a * 31 + e) % fail_every == 0 else 1.0 if u(a, e) < ps[a] else 0.0
                for a, e in pulls]
    return f


# ---------------------------------------------------------------- the ask/tell bandit

def test_ask_tell_gives_the_selections_the_callback_version_gave():
    """tests/data/bandit_selections.json was recorded from bandits.select before it became ask/tell: every
    algorithm, failed pulls included, gives the same batches, means, pulls, rounds and ranking."""
    cases = json.loads(GOLDEN.read_text())["cases"]
    assert len(cases) == 35 and {c["algorithm"] for c in cases} == set(bandits.ALGORITHMS)
    for c in cases:
        rewards = env(c["ps"], c["seed"], c["fail_every"])
        b = bandits.Bandit(c["algorithm"], c["n_arms"], c["n_examples"], c["budget"], seed=c["seed"], **c["kwargs"])
        batches = []
        while pulls := b.next_pulls():
            assert b.next_pulls() == pulls  # asking again hands out the same batch
            batches.append([list(p) for p in pulls])
            b.tell(rewards(pulls))
        r, want = b.result(), c["expected"]
        got = {"ranking": r.ranking, "means": r.means, "pulls": r.pulls, "spent": r.spent, "failed": r.failed,
               "rounds": json.loads(json.dumps(r.rounds)), "n_batches": len(batches),
               "batches_sha256": hashlib.sha256(json.dumps(batches).encode()).hexdigest()}
        assert got == want, c
        assert b.best(2) == r.ranking[:2]
        sync = bandits.select(c["algorithm"], c["n_arms"], c["n_examples"], c["budget"], rewards, seed=c["seed"],
                              **c["kwargs"])
        assert sync == r


def test_ask_tell_refuses_wrong_answers():
    b = bandits.Bandit("brute-force", 3, 10, 30)
    with pytest.raises(ValueError, match="rewards for"):
        b.tell([1.0])
    with pytest.raises(ValueError, match="not finished"):
        b.result()
    b.tell([0.0] * len(b.next_pulls()))
    assert b.done and b.next_pulls() == []
    with pytest.raises(ValueError, match="finished"):
        b.tell([])


def _ctx(model, *, cancel=None, progress=None, runner=None):
    task = load_task("pubmedqa")
    return StepContext(task=task, runner=runner or Runner(concurrency=8), forward_model=model, backward_model=model,
                       templates=Templates(), train=task.split("train"), seed=5, cancel=cancel, on_progress=progress)


def test_protegi_screen_runs_on_the_jobs_loop_without_threads(monkeypatch):
    """The screen evaluates each batch of pulls with forward_batch on the same loop (no to_thread, no
    run_coroutine_threadsafe, no thread at all) and ranks exactly as bandits.select does on the same rewards."""
    import core.protegi as protegi

    cfg = ProtegiConfig(bandit="successive-rejects", bandit_budget=60)
    ctx = _ctx(FakeModel())
    beam = ["Answer the question."]
    prompts = beam + [f"Candidate {i}: weigh the evidence." for i in range(4)]
    arm_of = {p: i for i, p in enumerate(prompts)}
    ex_index = {ex.id: i for i, ex in enumerate(ctx.train)}
    rewards = env([0.3, 0.5, 0.8, 0.4, 0.6], seed=2, fail_every=9)
    loops = set()

    async def fixed_forward(ctx_, ps, exs, phase="forward"):
        loops.add(id(asyncio.get_running_loop()))
        r = rewards([(arm_of[p], ex_index[e.id]) for p, e in zip(ps, exs)])
        return [EvalRow(id=e.id, input="", gold="yes", raw_output="", parsed=None if x is None else "yes",
                        correct=x == 1.0, error="boom" if x is None else None) for e, x in zip(exs, r)]

    monkeypatch.setattr(protegi, "forward_batch", fixed_forward)
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name))
    prop = Proposal(candidates=[Candidate(id=f"c{i}", prompt=p, parent=beam[0], origin="edit")
                                for i, p in enumerate(prompts[1:])])
    before = threading.active_count()

    async def job():
        loops.add(id(asyncio.get_running_loop()))
        await ProtegiEngine(cfg).screen(ctx, beam, prop)

    asyncio.run(job())
    assert started == [] and threading.active_count() == before
    assert len(loops) == 1  # every batch on the job's own loop
    want = bandits.select("successive-rejects", 5, len(ctx.train), 60, rewards, seed=ctx.seed)
    assert prop.bandit["ranking"] == [prompts[i] for i in want.ranking]
    assert prop.bandit["spent"] == want.spent and prop.bandit["failed"] == sum(want.failed) > 0
    assert [c.pulls for c in prop.candidates] == [want.pulls[arm_of[c.prompt]] for c in prop.candidates]


# ---------------------------------------------------------------- run_job

class LoopModel(FakeModel):
    """Records the loop each call and each close ran on."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.loops = []

    async def acomplete(self, req):
        self.loops.append(("call", id(asyncio.get_running_loop())))
        return await super().acomplete(req)

    async def aclose(self):
        self.loops.append(("close", id(asyncio.get_running_loop())))
        await super().aclose()


def test_run_job_closes_each_client_once_on_the_jobs_loop_and_starts_no_thread(monkeypatch):
    m = LoopModel()
    task = load_task("pubmedqa")
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name))
    rep = evaluate("Answer.", task.split("val")[:4], m, task=task)
    assert rep.n == 4 and started == []
    assert m.closed == 1 and {loop for _, loop in m.loops} == {m.loops[0][1]}  # calls and close: one loop

    async def two_phases():
        ctx = _ctx(m)
        await ctx.forward([_req(task, ex) for ex in task.split("val")[:2]])
        await ctx.backward([_req(task, ex) for ex in task.split("val")[2:4]])
        return "ok"

    m.loops.clear()
    assert run_job(two_phases, m, m) == "ok"  # forward and backward the same object: closed once
    assert m.closed == 2 and len({loop for _, loop in m.loops}) == 1 and m.loops[-1][0] == "close"


def _req(task, ex):
    from core.evaluate import forward_request

    return forward_request("Answer.", task, ex)


def test_run_job_inside_a_running_loop_runs_on_its_own_loop_and_returns():
    """A synchronous call from a thread whose loop runs (a notebook cell, Playwright's sync API): the job gets
    one fresh loop of its own, its clients are closed on that loop, and errors reach the caller."""
    seen: dict[str, object] = {}

    class Client:
        async def aclose(self):
            seen["closed_on"] = asyncio.get_running_loop()

    async def job():
        seen["ran_on"] = asyncio.get_running_loop()
        return 42

    async def inner():
        outer = asyncio.get_running_loop()
        assert run_job(job, Client()) == 42
        with pytest.raises(ValueError, match="boom"):
            run_job(lambda: _boom())
        return outer

    async def _boom():
        raise ValueError("boom")

    outer = asyncio.run(inner())
    assert seen["ran_on"] is seen["closed_on"] and seen["ran_on"] is not outer


# ---------------------------------------------------------------- cancel is immediate

def test_cancel_aborts_in_flight_requests_and_counts_the_finished_ones():
    """Real openai SDK, stub server: 2 calls answer at once, 4 take 20 s. Cancelling (from another thread, as
    the Stop button does) after the first two land aborts the four in flight instead of waiting for them."""
    slow_s = 20.0

    def plan(req):
        return None if "fast" in req.user_text else Fault.slow(slow_s)

    token = CancelToken()
    landed = threading.Event()
    with StubServer(faults=plan, responder=lambda body: "Answer: yes") as s:
        model = make_model("openai:gpt-4o-mini", base_url=s.base_url, api_key="sk-test")
        job = JobProgress()
        ctx = _ctx(model, cancel=token, progress=job, runner=Runner(concurrency=8))
        reqs = [Request.chat("Answer.", f"Question {i} [{tag}]", tag="forward")
                for i, tag in enumerate(["fast", "fast", "slow", "slow", "slow", "slow"])]

        def watch(jp):
            if jp.spend.calls >= 2:
                landed.set()

        job.listener = watch
        stopper = threading.Thread(target=lambda: landed.wait(30) and token.cancel())
        stopper.start()
        t0 = time.monotonic()
        with pytest.raises(Cancelled):
            run_job(lambda: ctx.forward(reqs), model)
        took = time.monotonic() - t0
        stopper.join(5)
        sent = s.completion_count
    assert took < slow_s / 2  # it did not wait for the slow calls
    assert sent == 6  # all six were on the wire when the cancel came
    assert ctx.spend.calls == 2 and ctx.spend.input_tokens > 0  # the finished calls are counted
    assert job.spend.calls == 2 and all(p.in_flight == 0 for p in job.phases)
    assert job.phases[0].total == 2  # the aborted calls left the count


def test_cancel_in_flight_batch_result_marks_aborted_calls_cancelled():
    token = CancelToken()
    with StubServer(faults=lambda r: None if r.index < 1 else Fault.slow(20.0)) as s:
        model = make_model("openai:gpt-4o-mini", base_url=s.base_url, api_key="sk-test")
        task = load_task("pubmedqa")
        reqs = [_req(task, ex) for ex in task.split("val")[:3]]
        res = Runner(concurrency=3).run(model, reqs, cancel=token, progress=lambda p: token.cancel())
    assert res.cancelled and sum(c.ok for c in res.completions) == 1
    assert [c.error for c in res.completions if not c.ok] == [CANCELLED, CANCELLED]


# ---------------------------------------------------------------- honest progress

def _session(tmp_path, method="textgrad", preset="AutoMedPrompt paper", fwd=None, bwd=None, **kw):
    fwd, bwd = fwd or FakeModel(), bwd or FakeModel()
    fwd.spec, bwd.spec = ModelSpec("fake", "fwd"), ModelSpec("fake", "bwd")
    cfg = SessionConfig(task={"name": "pubmedqa"}, method=method, preset=preset, forward="fake:fwd",
                        backward="fake:bwd", val_limit=kw.pop("val_limit", 6), **kw)
    return Session.create(cfg, root=tmp_path / "sessions", models=Models(fwd, bwd, Runner(concurrency=4)))


def _recorder(job):
    seen = []
    job.listener = lambda jp: seen.append((jp.phase, jp.done, jp.total, jp.eta_s))
    return seen


def test_textgrad_step_progress_names_the_phase_running_with_n_known_at_its_start(tmp_path):
    s = _session(tmp_path, params={"batch_size": 4, "candidates": 2}, bwd=FakeModel(delay_s=0.01))
    s.run_baseline()
    job = JobProgress()
    seen = _recorder(job)
    s.start_step(progress=job)
    order = list(dict.fromkeys(ph for ph, *_ in seen))
    assert order == ["forward", "loss", "gradient", "update"]  # human names, in the order they ran
    first = {ph: (done, total) for ph, done, total, _ in reversed(seen)}  # each phase's first snapshot
    assert first["loss"] == (0, 4) and first["gradient"] == (0, 1) and first["update"] == (0, 2)
    # the update is shown while it runs: every snapshot between its start and its end says 'update'
    i = next(k for k, (ph, *_) in enumerate(seen) if ph == "update")
    assert all(ph == "update" for ph, *_ in seen[i:])
    assert [(p.name, p.done, p.total) for p in job.phases] == [("forward", 4, 4), ("loss", 4, 4),
                                                               ("gradient", 1, 1), ("update", 2, 2)]
    assert seen[0][3] is None and job.eta_s == 0.0  # no estimate before a call landed; none left at the end
    assert job.spend.calls == 4 + 4 + 1 + 2
    s.close()


def test_protegi_step_progress_plans_match_the_calls_made(tmp_path):
    s = _session(tmp_path, method="protegi", preset="quick")
    s.run_baseline()
    job = JobProgress()
    seen = _recorder(job)
    s.start_step(progress=job)
    cfg = s.config.engine_config()
    grad = next((d, t) for ph, d, t, _ in seen if "gradient" in ph.split(" + "))
    assert grad[1] >= cfg.n_groups  # N known when the gradients start
    names = {n for ph, *_ in seen for n in ph.split(" + ")}
    assert {"forward", "gradient", "edit", "paraphrase", "bandit"} <= names
    assert not any("protegi." in ph for ph, *_ in seen)
    for p in job.phases:  # every plan ended equal to the calls actually made: no stale "2 of 3"
        assert p.done == p.total and p.in_flight == 0, p
    bwd = s.models.backward.calls
    by_name = {p.name: p.done for p in job.phases}
    assert by_name["gradient"] == bwd["protegi.gradient"] and by_name["edit"] == bwd["protegi.edit"]
    assert by_name["paraphrase"] == bwd["protegi.paraphrase"]
    assert by_name["bandit"] == s.step.proposal.bandit["spent"]
    s.close()


def test_evaluate_job_has_one_counter_for_all_its_prompts(tmp_path):
    """Issue 11: Evaluate counted 120/240 for a 16-call job. Two prompts x 8 questions is 16 calls, and the
    job's Job record (ui/jobs.py, as the Evaluate page uses it) says 16 of 16."""
    from ui.jobs import Job

    task = load_task("pubmedqa")
    ui_job = Job("j1", "evaluate", "Evaluate", "owner")
    seen = []

    def on_progress(phase, p):  # what ui/actions.py passes today: the Job's callback
        seen.append((phase, p.done, p.total))
        ui_job.on_progress(phase, p)

    reports = evaluate_entries([Entry("v0", "Answer."), Entry("v1", "Answer with evidence.")], task.split("val")[:8],
                               FakeModel(delay_s=0.005), task=task, runner=Runner(concurrency=4),
                               on_progress=on_progress, phase="validation")
    assert sum(r.n for r in reports.values()) == 16
    assert (ui_job.progress.done, ui_job.progress.total) == (16, 16)
    assert all(total == 16 for _, _, total in seen)  # N known from the start
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)  # never runs backwards


def test_job_progress_line_and_estimate():
    from core.llm import Completion

    job = JobProgress()
    job.plan("protegi.edit", 4)
    job.ask("protegi.edit", 4)
    assert job.eta_s is None and job.line().startswith("edit: 0 of 4 calls")
    for _ in range(2):
        job.launch("protegi.edit")
    job.land("protegi.edit", Completion(text="x", input_tokens=3), seconds=2.0)
    # 3 left, 2 side by side at most so far, 2 s a call: two waves of 2 s
    assert job.eta_s == pytest.approx(4.0) and "about 4 s left" in job.line()

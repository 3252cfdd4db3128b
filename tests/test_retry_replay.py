"""Retry of failed calls, cancel of a regenerate, and replay of recorded failures: the real openai SDK
against the local stub server (tests/stub_server.py), timeouts made by slow answers."""

from __future__ import annotations

import json
import subprocess

import pytest

from core.bundle import bundle_bytes, replay_bundle
from core.bundle_integrity import content_hashes
from core.cache import ResponseCache
from core.engine import Cancelled
from core.llm import ClientOptions
from core.runner import CancelToken
from core.session import Session
from tests.conftest import pgs_cmd, subprocess_pythonpath
from tests.fake_model import stub_responder
from tests.stub_server import Fault, StubRequest, StubServer
from tests.test_faults import Run, _hermetic, assert_accounting  # noqa: F401 - the autouse fixture

pytestmark = pytest.mark.timeout(180)

TIMEOUT = ClientOptions(timeout_s=1.0, max_retries=0)  # a slow answer (3 s) is a timed-out call


def is_update(r: StubRequest) -> bool:
    return "IMPROVED_VARIABLE" in (r.system_text or "")


def is_loss(r: StubRequest) -> bool:
    return "meticulous evaluator" in (r.system_text or "")


def first_n(pred, n: int):
    """A fault plan: the first `n` requests matching `pred` time out, the rest are answered."""
    seen = []

    def plan(r: StubRequest):
        if pred(r) and len(seen) < n:
            seen.append(r.index)
            return Fault.slow(3.0)
        return None
    return plan


def finish_step(s: Session) -> None:
    st = s.step
    s.decide("accept", candidate=st.proposal.candidates[0].id)
    s.validate()
    s.confirm()


def export(run: Run) -> bytes:
    return bundle_bytes(Session.open(run.session.id, root=run.root, readonly=True), ResponseCache(run.tmp / "cache"))


def test_retry_failed_sends_only_the_failed_call_and_replays_identical(tmp_path):
    with StubServer(responder=stub_responder()) as stub:
        run = Run(tmp_path, stub, options=TIMEOUT)
        s = run.session
        s.run_baseline()
        stub.set_faults(first_n(is_update, 1))
        st = s.start_step()
        assert not st.proposal.candidates
        [failed] = st.failed_calls
        assert failed.template == "textgrad.update" and "timed out" in failed.error.lower()
        minibatch, forward = list(st.minibatch_ids), [r.to_json() for r in st.forward]
        stub.set_faults(None)
        before = stub.recorded()
        s.retry_failed()
        sent = stub.recorded()[len(before):]
        assert len(sent) == 1 and is_update(sent[0])  # the losses and the gradient came from the cache
        st = s.step
        assert st.proposal.candidates and not st.failed_calls and st.retries == 1
        assert st.minibatch_ids == minibatch and [r.to_json() for r in st.forward] == forward
        live = (s.state, st.proposal, st.spend, s.spend)
        s = run.reopen()  # the fold of the log gives the same state
        assert (s.state, s.step.proposal, s.step.spend, s.spend) == live and s.step.retries == 1
        assert [e["type"] for e in s.events].count("proposal_retried") == 1
        finish_step(s)
        assert_accounting(run)
        r = replay_bundle(export(run))
        assert r.matches and r.misses == 0 and r.first_difference is None, (r.first_difference, r.steps)
        assert r.failures_replayed == 1  # the update failed first, as recorded, then answered from the bundle
        s.close()


def test_retry_refused_without_failed_calls(tmp_path):
    with StubServer(responder=stub_responder()) as stub:
        run = Run(tmp_path, stub, options=TIMEOUT)
        s = run.session
        s.run_baseline()
        s.start_step()
        with pytest.raises(Exception, match="nothing to retry"):
            s.retry_failed()
        s.close()


@pytest.fixture
def two_timeouts(tmp_path):
    """A finished step whose first two loss calls timed out (the proposal went on without their feedback)."""
    with StubServer(responder=stub_responder()) as stub:
        run = Run(tmp_path, stub, options=TIMEOUT)
        s = run.session
        s.run_baseline()
        stub.set_faults(first_n(is_loss, 2))
        st = s.start_step()
        assert len(st.failed_calls) == 2 and st.proposal.candidates
        finish_step(s)
        data = export(run)
        s.close()
    assert json.loads(data)["missing_responses"] == 2
    return tmp_path, data


def test_replay_of_two_timed_out_calls_is_identical(two_timeouts, monkeypatch):
    tmp, data = two_timeouts
    path = tmp / "bundle.json"
    path.write_bytes(data)
    monkeypatch.setenv("PYTHONPATH", subprocess_pythonpath())
    out = subprocess.run(pgs_cmd() + ["replay", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last == ("identical; responses missing from the bundle: 0; calls that failed in the session, "
                    "replayed as the same failure: 2")


def _rehash(b: dict) -> bytes:
    b["hashes"] = content_hashes(b["events"], b["responses"], b.get("data"))  # anyone can recompute them
    return json.dumps(b).encode()


def test_replay_names_the_event_and_call_of_a_tampered_response(two_timeouts):
    _, data = two_timeouts
    b = json.loads(data)
    n, prop = next((i, e) for i, e in enumerate(b["events"], 1) if e["type"] == "proposal")
    key = prop["proposal"]["gradients"][0]["call"]["key"]
    b["responses"][key]["text"] = "<FEEDBACK>tampered</FEEDBACK>"
    r = replay_bundle(_rehash(b))
    assert not r.matches
    assert r.first_difference.startswith(f"event {n} ('proposal') differs at proposal.gradients[0]")
    assert "(call textgrad.gradient)" in r.first_difference

    b = json.loads(data)
    n, fwd = next((i, e) for i, e in enumerate(b["events"], 1) if e["type"] == "forward")
    row = fwd["reports"][0]["rows"][0]
    b["responses"][row["key"]]["text"] = "Answer: tampered"
    r = replay_bundle(_rehash(b))
    assert not r.matches
    assert r.first_difference.startswith(f"event {n} ('forward') differs at reports[0].rows[0]")
    assert f"(question {row['id']})" in r.first_difference


def test_replay_names_a_missing_response(two_timeouts):
    _, data = two_timeouts
    b = json.loads(data)
    fwd = next(e for e in b["events"] if e["type"] == "forward")
    row = fwd["reports"][0]["rows"][0]
    del b["responses"][row["key"]]
    for ev in b["events"]:  # as if the session had never used it: a true miss
        if isinstance(ev.get("keys"), list) and row["key"] in ev["keys"]:
            ev["keys"].remove(row["key"])
    r = replay_bundle(_rehash(b))
    assert not r.matches
    # the first miss is named; the gradient, whose prompt now lacks that answer, is the second
    assert r.missing == [f"forward call on question {row['id']}", "gradient (feedback on the prompt)"]


def test_cancelled_regenerate_keeps_the_proposal_on_screen(tmp_path):
    with StubServer(responder=stub_responder()) as stub:
        run = Run(tmp_path, stub, options=ClientOptions(timeout_s=20.0, max_retries=0))
        s = run.session
        s.run_baseline()
        st = s.start_step()
        shown = st.proposal
        token = CancelToken()

        def cancel_at_loss(r: StubRequest):
            if is_loss(r):
                token.cancel()
                return Fault.slow(10.0)
            return None
        stub.set_faults(cancel_at_loss)
        with pytest.raises(Cancelled):
            s.start_step(regenerate=True, cancel=token)
        assert s.state == "proposed" and s.step.proposal == shown and s.step.attempt == 0
        s = run.reopen()
        assert s.state == "proposed" and s.step.proposal == shown and s.step.attempt == 0
        stub.set_faults(None)
        st = s.start_step(regenerate=True)
        assert st.attempt == 1 and st.proposal != shown
        finish_step(s)
        assert_accounting(run)
        s.close()

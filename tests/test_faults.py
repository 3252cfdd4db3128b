"""Whole sessions under faults: the real openai / anthropic SDKs against the local stub server.

Each run either completes or stops in a clear, resumable state (reopen, heal the stub, finish);
no result is lost or counted twice (the session's calls equal the stub's successful completions,
cache hits are not calls) and the spend shown equals the spend made (per-event spends add up to
the session's, cost = tokens x the price override).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from core.cache import ResponseCache
from core.llm import ClientOptions, LLMError, set_price_overrides
from core.runner import Runner
from core.session import Models, Session, SessionConfig, SessionError
from tests.fake_model import FakeModel, stub_responder
from tests.stub_server import Fault, StubRequest, StubServer, default_usage

pytestmark = pytest.mark.timeout(120)

KEY = "sk-test-faults-0000"
PRICE = (2.0, 8.0)  # USD per 1M tokens, the same override for every model used here
FWD, BWD = "gpt-4o-mini", "gpt-4o"
A_FWD, A_BWD = "claude-haiku-4-5", "claude-sonnet-4-6"
OPTIONS = ClientOptions(timeout_s=3.0, max_retries=4)


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch):
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "PGS_CACHE_DIR",
                "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    set_price_overrides({m: PRICE for m in (FWD, BWD, A_FWD, A_BWD)})
    yield
    set_price_overrides({})
    assert not [t for t in threading.enumerate() if t.name == "stub-llm-server"]


# ---------------------------------------------------------------- helpers


class Run:
    """A session against one stub; the stub stays up across crash and resume (same base URL, same cache keys)."""

    def __init__(self, tmp: Path, stub: StubServer, *, method: str = "textgrad", preset: str | None = None,
                 provider: str = "openai", options: ClientOptions = OPTIONS, **cfg):
        self.tmp, self.stub, self.options = tmp, stub, options
        url = stub.base_url if provider == "openai" else stub.anthropic_base_url
        fwd, bwd = (FWD, BWD) if provider == "openai" else (A_FWD, A_BWD)
        cfg.setdefault("val_limit", 8)
        cfg.setdefault("patience", 10)
        if method == "textgrad" and preset is None:  # these tests count on a 5-question minibatch (the paper's is 1)
            cfg.setdefault("params", {"batch_size": 5})
        self.cfg = SessionConfig(task={"name": "pubmedqa"}, method=method,
                                 preset=preset or ("AutoMedPrompt paper" if method == "textgrad" else "quick"),
                                 forward=f"{provider}:{fwd}", backward=f"{provider}:{bwd}",
                                 forward_base_url=url, backward_base_url=url, **cfg)
        self.keys = {provider: KEY}
        self.session = Session.create(self.cfg, root=self.root, models=self.models())

    @property
    def root(self) -> Path:
        return self.tmp / "sessions"

    def models(self) -> Models:
        runner = Runner(cache=ResponseCache(self.tmp / "cache"), concurrency=8)
        return Models.from_config(self.cfg, runner, keys=self.keys, options=self.options)

    def reopen(self) -> Session:
        """What a crash and `pgs resume` do: close, open from disk with fresh models."""
        sid = self.session.id
        self.session.close()
        self.session = Session.open(sid, root=self.root, models=self.models())
        return self.session


def successes(stub: StubServer) -> list[StubRequest]:
    """Completions the client actually received: answered 200 with a well-formed, non-empty body."""
    return [r for r in stub.recorded() if r.status == 200 and r.fault is None]


def assert_accounting(run: Run) -> None:
    """No result lost or counted twice; the spend shown equals the spend made."""
    s, stub = run.session, run.stub
    ok = successes(stub)
    assert s.spend.calls == len(ok), (s.spend, len(ok), stub.completion_count)
    # the tokens the stub reported on those responses, priced by the override
    responder = stub.responder
    tin = tout = 0
    for r in ok:
        a, b = default_usage(r.body, responder(r.body))
        tin, tout = tin + a, tout + b
    assert (s.spend.input_tokens, s.spend.output_tokens) == (tin, tout)
    assert s.spend.cost_usd == pytest.approx((tin * PRICE[0] + tout * PRICE[1]) / 1e6, rel=1e-9, abs=1e-12)
    # per-event spends add up to the session's, and a fresh reader sees the same
    evs = [json.loads(x) for x in (s.dir / "events.jsonl").read_text().splitlines()]
    total = {k: sum(e["spend"][k] for e in evs if "spend" in e) for k in ("calls", "cached", "input_tokens",
                                                                             "output_tokens")}
    assert total == {"calls": s.spend.calls, "cached": s.spend.cached, "input_tokens": s.spend.input_tokens,
                     "output_tokens": s.spend.output_tokens}
    assert sum(e["spend"]["cost_usd"] for e in evs if "spend" in e) == pytest.approx(s.spend.cost_usd)
    r = Session.open(s.id, root=run.root, readonly=True)
    assert r.spend.calls == s.spend.calls and r.spend.cost_usd == pytest.approx(s.spend.cost_usd)
    assert r.spend.cached == s.spend.cached
    # baseline + per step (+ what an interrupted baseline spent) == total: the History page's table adds up
    base = sum(e["spend"]["calls"] for e in evs if e["type"] == "baseline" or (e["type"] == "spend" and e["step"] == 0))
    assert base + sum(st.spend.calls for st in r.steps) == r.spend.calls


def assert_complete(s: Session, steps: int) -> None:
    assert s.state in ("ready", "stopped"), s.state
    assert sum(1 for st in s.steps if st.outcome) == steps or (s.stopped or "").startswith("patience")
    for st in s.steps:
        if st.outcome == "accepted":
            assert st.gate is not None and st.candidate_report is not None
        if st.candidate_report is not None:  # a gate never rests on failed calls
            assert st.candidate_report.errors == 0 and st.current_report.errors == 0
    assert s.versions[0].report.errors == 0


def by_index(pred):
    """A fault plan from a predicate on (arrival index, retry count, user text)."""
    return lambda r: pred(r.index, r.retry, r.user_text)


# ---------------------------------------------------------------- faults the SDK rides out


def test_429_storm_with_retry_after_completes(tmp_path):
    # the first 60 completion requests, and each call's first two attempts, are rate-limited (Retry-After 0.1 s)
    plan = by_index(lambda i, retry, _: Fault.rate_limit(0.1) if i < 60 and retry < 2 else None)
    with StubServer(responder=stub_responder(), faults=plan) as stub:
        run = Run(tmp_path, stub)
        assert run.session.run_auto(2) == "done"
        assert stub.retries >= 20
        assert_complete(run.session, 2)
        assert_accounting(run)
        run.session.close()


def test_5xx_burst_completes_protegi(tmp_path):
    plan = by_index(lambda i, retry, _: ("500" if i % 2 else "503") if 10 <= i < 40 else None)
    with StubServer(responder=stub_responder(), faults=plan) as stub:
        run = Run(tmp_path, stub, method="protegi")
        assert run.session.run_auto(1) == "done"
        assert stub.retries >= 10
        assert_complete(run.session, 1)
        assert_accounting(run)
        run.session.close()


def test_timeouts_and_dropped_connections_are_retried(tmp_path):
    opts = ClientOptions(timeout_s=1.0, max_retries=3)

    def plan(r: StubRequest):
        if r.retry == 0 and r.index % 9 == 4:
            return Fault.slow(5.0)  # longer than the client timeout: the SDK gives up and retries
        if r.retry == 0 and r.index % 7 == 3:
            return "drop"
        return None

    with StubServer(responder=stub_responder(), faults=plan) as stub:
        run = Run(tmp_path, stub, options=opts)
        assert run.session.models.forward.options.timeout_s == 1.0  # Models.from_config passes the options on
        assert run.session.run_auto(2) == "done"
        kinds = {r.fault.kind for r in stub.recorded() if r.fault}
        assert kinds == {"slow", "drop"}
        assert_complete(run.session, 2)
        assert_accounting(run)
        run.session.close()


def test_anthropic_session_under_429_and_500(tmp_path):
    plan = by_index(lambda i, retry, _: (Fault.rate_limit(0.1) if i % 5 == 0 else "500" if i % 5 == 1 else None)
                    if retry == 0 else None)
    with StubServer(responder=stub_responder(), faults=plan) as stub:
        run = Run(tmp_path, stub, provider="anthropic")
        assert run.session.run_auto(2) == "done"
        assert all(r.api == "anthropic" for r in stub.recorded())
        assert stub.retries > 5
        assert_complete(run.session, 2)
        assert_accounting(run)
        run.session.close()


# ---------------------------------------------------------------- faults that stop a run, then resume


def test_outage_during_validation_stops_resumably_then_finishes(tmp_path):
    """A 5xx outage that outlasts the retries, in the middle of validation: nothing half-recorded, the
    finished calls are cached, and the run finishes once the server is healthy."""
    opts = ClientOptions(timeout_s=3.0, max_retries=1)
    with StubServer(responder=stub_responder()) as stub:
        run = Run(tmp_path, stub, options=opts)
        s = run.session
        s.run_baseline()
        st = s.start_step()
        s.decide("accept", candidate=st.proposal.candidates[0].id)
        n_before = stub.completion_count
        stub.set_faults(lambda r: "500" if r.index >= n_before + 3 else None)  # 3 answers, then down
        with pytest.raises(SessionError, match="validation"):
            s.validate()
        assert s.step.status == "decided" and s.step.gate is None
        paid = [e for e in s.events if e["type"] == "spend"]
        assert len(paid) == 1 and paid[0]["phase"] == "validation" and paid[0]["spend"]["calls"] == 3
        assert paid[0]["spend"]["cached"] == 0  # hits are not spend
        stub.set_faults(None)
        s = run.reopen()
        assert s.state == "decided"
        assert s.run_auto(1) == "done"
        assert_complete(s, 1)
        assert s.spend.cached >= 3 + 8  # the answers received before the outage, and the current prompt's
        assert_accounting(run)
        s.close()


def test_outage_during_baseline_then_resume(tmp_path):
    opts = ClientOptions(timeout_s=3.0, max_retries=0)
    with StubServer(responder=stub_responder(), faults=by_index(lambda i, retry, _: "503" if i >= 5 else None)) as stub:
        run = Run(tmp_path, stub, options=opts)
        with pytest.raises(SessionError, match="baseline"):
            run.session.run_baseline()
        assert run.session.state == "new" and not run.session.versions
        stub.set_faults(None)
        s = run.reopen()
        assert s.run_auto(1) == "done"
        assert_complete(s, 1)
        assert s.spend.cached >= 5
        assert_accounting(run)
        s.close()


def test_rate_limit_past_retries_mid_proposal_then_resume(tmp_path):
    """429s that outlast the retries hit the proposal (backward) calls: the step stays open and resumes."""
    opts = ClientOptions(timeout_s=3.0, max_retries=1)
    with StubServer(responder=stub_responder()) as stub:
        run = Run(tmp_path, stub, options=opts)
        s = run.session
        s.run_baseline()
        stub.set_faults(lambda r: Fault.rate_limit(0.05) if "gradient (feedback) engine" in (r.system_text or "")
                        else None)
        st = s.start_step()
        # the gradient call failed: a clear note, no candidate, nothing invented
        assert not st.proposal.candidates and "gradient call failed" in st.proposal.note
        assert "429" in st.proposal.note
        stub.set_faults(None)
        s = run.reopen()
        st = s.start_step(regenerate=True)
        assert st.proposal.candidates
        assert s.run_auto(1) == "done"
        assert_complete(s, 1)
        assert_accounting(run)
        s.close()


def test_key_rejected_mid_step_stops_at_once_then_resumes(tmp_path):
    """A 401 in the middle of a step stops the batch at once with a clear message; the calls already paid
    for are logged; with a working key the step resumes from the cache."""
    with StubServer(responder=stub_responder()) as stub:
        run = Run(tmp_path, stub)
        s = run.session
        s.run_baseline()
        n0 = stub.completion_count
        stub.set_faults(lambda r: "401" if r.index >= n0 + 5 + 2 else None)  # 5 forward answers, 2 losses, then 401
        with pytest.raises(LLMError, match="rejected the API key"):
            s.start_step()
        assert s.step.status == "started"
        # paid calls are logged: as a 'step' spend at the stop, or earlier as an 'interim' flush (every second)
        assert sum(e["spend"]["calls"] for e in s.events
                   if e["type"] == "spend" and e["phase"] in ("step", "interim")) >= 2
        stub.set_faults(None)
        s = run.reopen()
        assert s.run_auto(1) == "done"
        assert s.spend.cached >= 5 + 8
        assert_complete(s, 1)
        assert_accounting(run)
        s.close()


# ---------------------------------------------------------------- bad replies


def test_malformed_and_empty_replies_never_reach_a_gate(tmp_path):
    """Malformed JSON and empty bodies (HTTP 200, not retried by the SDKs) are failed calls: the baseline
    and validation refuse to score on them; the step-level forward skips them; resume heals."""
    def plan(r: StubRequest):
        return "malformed" if r.index % 6 == 2 else "empty" if r.index % 6 == 5 else None

    with StubServer(responder=stub_responder(), faults=plan) as stub:
        run = Run(tmp_path, stub)
        with pytest.raises(SessionError, match="baseline"):
            run.session.run_baseline()
        assert run.session.state == "new"
        stub.set_faults(None)
        s = run.reopen()
        s.run_baseline()
        stub.set_faults(plan)
        st = s.start_step()
        assert st.forward[0].errors > 0  # visible as errors in the minibatch, not as wrong answers
        assert all(r.parsed is None and r.error for r in st.forward[0].rows if r.error)
        stub.set_faults(None)
        assert s.run_auto(1) == "done"
        assert_complete(s, 1)
        assert_accounting(run)
        s.close()


def test_replies_without_tags_are_flagged_fallbacks(tmp_path):
    fake = FakeModel(misbehave={"no-tags"})
    with StubServer(responder=stub_responder(fake)) as stub:
        run = Run(tmp_path, stub, method="protegi")
        s = run.session
        s.run_baseline()
        st = s.start_step()
        assert st.proposal.gradients and all(g.flagged for g in st.proposal.gradients)
        assert any(c.flagged for c in st.proposal.candidates)
        assert s.run_auto(1) == "done"
        assert_complete(s, 1)
        assert_accounting(run)
        s.close()


def test_textgrad_update_without_tags_and_refusing_backward_model(tmp_path):
    """The backward model refuses everything: gradients fall back (flagged), the update has no tags, so no
    candidate is invented; the automatic policy skips and stops on patience, in a clear state."""
    with StubServer(responder=stub_responder(FakeModel(misbehave={"refuse"}))) as stub:
        run = Run(tmp_path, stub, patience=2)
        s = run.session
        result = s.run_auto(5)
        assert result.startswith("patience"), result
        assert [st.outcome for st in s.steps] == ["skipped", "skipped"]
        for st in s.steps:
            assert not st.proposal.candidates and "IMPROVED_VARIABLE" in st.proposal.note
            assert st.proposal.gradients[0].flagged and "sorry" in st.proposal.gradients[0].text
        assert s.state == "stopped"
        assert_accounting(run)
        s.close()
        r = Session.open(s.id, root=run.root, readonly=True)
        assert r.stopped.startswith("patience")


def test_refusing_backward_model_protegi_never_adopts_a_refusal(tmp_path):
    with StubServer(responder=stub_responder(FakeModel(misbehave={"refuse"}))) as stub:
        run = Run(tmp_path, stub, method="protegi", patience=2)
        s = run.session
        s.run_auto(2)
        for st in s.steps:
            assert all(g.flagged for g in st.proposal.gradients)
        assert all("sorry" not in v.prompt.lower() for v in s.versions), [v.prompt for v in s.versions]
        assert_accounting(run)
        s.close()

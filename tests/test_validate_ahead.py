"""Validate without waiting: the proposal's candidates are validated in the background (the cache warmed, the
spend logged), so the validation after the decision makes no new server call and records the same gate."""

from __future__ import annotations

import json

import pytest

from core.config import SessionConfig, SessionError
from core.estimate import prevalidation
from core.progress import JobProgress
from core.step_runner import ahead_candidates
from core.tasks import builtin_spec
from tests.test_method_fidelity import make


def _served(*models) -> int:
    return sum(sum(m.calls.values()) for m in models)


@pytest.mark.parametrize("method,policy", [("textgrad", "strict"), ("protegi", "adaptive")])
def test_after_validating_ahead_the_gate_of_the_accepted_candidate_costs_no_call(tmp_path, method, policy):
    s, fwd, bwd = make(tmp_path, method=method, preset="quick", cache=True, policy=policy)
    s.run_baseline()
    st = s.start_step()
    todo = ahead_candidates(s.folded, st)
    assert todo, "no candidate to validate ahead"
    est = prevalidation(s.folded, len(todo))
    spent_before, served_before = s.spend.calls, _served(fwd, bwd)
    job = JobProgress()
    gates = s.prevalidate(progress=job)
    assert list(gates) == [c.id for c in todo]
    served_ahead = _served(fwd, bwd) - served_before
    assert 0 < served_ahead <= est["calls"]  # the cost shown first is an upper bound
    assert s.spend.calls - spent_before == served_ahead  # the background calls are in the ledger
    assert st.spend.calls >= served_ahead and s.step.status == "proposed"  # nothing decided
    assert job.spend.calls == served_ahead  # one counter for the whole job

    pick = todo[-1]  # not necessarily the first: every candidate's gate is ready
    s.decide("accept", candidate=pick.id)
    before = _served(fwd, bwd)
    g = s.validate()
    assert _served(fwd, bwd) == before  # answered from the cache: no new server call
    assert g.to_json() == gates[pick.id].to_json()
    recorded = next(ev for ev in reversed(s.events) if ev["type"] == "validation")
    assert json.loads(json.dumps(recorded["gate"])) == json.loads(json.dumps(gates[pick.id].to_json()))
    assert recorded["spend"]["calls"] == 0
    assert recorded["spend"]["cached"] > 0


def test_validating_ahead_needs_the_cache_and_an_open_proposal(tmp_path):
    s, _, _ = make(tmp_path, method="textgrad", preset="quick", cache=False)
    s.run_baseline()
    with pytest.raises(SessionError, match="no proposal"):
        s.prevalidate()
    s.start_step()
    with pytest.raises(SessionError, match="response cache"):
        s.prevalidate()


@pytest.mark.parametrize("forward,url,on", [
    ("openai:gpt-4o-mini", None, False), ("anthropic:claude-3-5-haiku-latest", None, False),
    ("ollama:llama3.2", None, True), ("openai-compatible:qwen", "http://127.0.0.1:8080/v1", True),
    ("openai:gpt-4o-mini", "http://localhost:11434/v1", True), ("openai:gpt-4o-mini", "https://api.example.com/v1", False)])
def test_validate_ahead_is_on_for_local_servers_and_off_for_paid_providers(forward, url, on):
    cfg = SessionConfig(task=builtin_spec("pubmedqa"), forward=forward, backward=forward, forward_base_url=url)
    assert cfg.validates_ahead() is on
    assert SessionConfig(task=builtin_spec("pubmedqa"), forward=forward, forward_base_url=url,
                         validate_ahead=not on).validates_ahead() is (not on)


def test_optimize_page_shows_the_cost_first_then_the_gates_and_accepting_one_calls_no_server(app_test_env,
                                                                                               monkeypatch):
    from tests.fake_model import FakeModel
    from tests.test_app import check, click, create_session, goto, new_app, open_session

    served = {"n": 0}
    real = FakeModel.acomplete

    async def acomplete(self, req):
        served["n"] += 1
        return await real(self, req)

    monkeypatch.setattr(FakeModel, "acomplete", acomplete)
    at = new_app()
    sid = create_session(at, val=12)  # fake:scripted is not a local server: validating ahead waits for the button
    goto(at, "optimize")
    click(at, "run_step")
    click(at, "continue_step")  # manual steps pause after the answers
    assert not any(df for df in at.dataframe if "gate" in df.value.columns)
    button = at.button(key="validate_ahead")
    s = open_session(app_test_env, sid)
    est = prevalidation(s.folded, len(ahead_candidates(s.folded, s.step)))
    assert f"about {est['calls']:,} calls" in button.label  # the cost, before anything is sent
    before = served["n"]
    click(at, "validate_ahead")
    assert served["n"] > before
    gates = next(df.value for df in at.dataframe if "gate" in df.value.columns)
    accept = [b for b in at.button if (b.key or "").startswith("accept_s1_")]
    cid = accept[0].key.removeprefix("accept_s1_")
    ahead_row = gates[gates["candidate"] == cid].iloc[0]
    before = served["n"]
    check(accept[0].click().run())
    assert served["n"] == before  # the gate comes from the cache at once
    assert any("Gate verdict" in x.value for x in list(at.success) + list(at.warning))
    g = open_session(app_test_env, sid).steps[-1].gate
    assert ahead_row["gate"] == ("would pass" if g.passed else "would fail")


def test_a_session_validated_ahead_exports_and_replays_identical(tmp_path):
    from core.bundle import bundle_bytes, replay_bundle

    s, _, _ = make(tmp_path, method="textgrad", preset="quick", cache=True)
    s.run_baseline()
    st = s.start_step()
    gates = s.prevalidate()
    s.decide("accept", candidate=next(iter(gates)))
    s.validate()
    s.confirm()
    r = replay_bundle(bundle_bytes(s, s.models.runner.cache), root=tmp_path / "replay")
    assert r.matches and r.misses == 0, r
    assert st.spend.calls == sum(ev["spend"]["calls"] for ev in s.events
                                 if ev.get("step") == st.index and ev.get("spend"))

"""Quick means quick: the "quick" presets make about 20 calls before the person decides and validate on a small
set; Setup shows that estimate before the run, and the calls a step makes match it. Sessions recorded before
preset version 2 keep the old "quick"."""

from __future__ import annotations

import math

import pytest

from core.config import SessionConfig
from core.estimate import step as estimate_step
from tests.test_app import check, goto, new_app
from tests.test_method_fidelity import make

QUICK_MAX_CALLS = 20  # before validation
QUICK_MAX_VALIDATION = 30  # questions


@pytest.mark.parametrize("method", ["protegi", "textgrad"])
def test_a_quick_step_is_estimated_at_20_calls_or_fewer_and_makes_what_it_estimates(tmp_path, method):
    s, fwd, bwd = make(tmp_path, method=method, preset="quick", cache=True)
    s.run_baseline()
    assert 20 <= len(s.val_examples()) <= QUICK_MAX_VALIDATION  # the task's split has 100: quick uses fewer
    est = estimate_step(s.folded, cached=True)
    assert est["proposal"] <= QUICK_MAX_CALLS
    before_f, before_b = sum(fwd.calls.values()), sum(bwd.calls.values())
    st = s.start_step()
    made_f, made_b = sum(fwd.calls.values()) - before_f, sum(bwd.calls.values()) - before_b
    assert st.forward[0].errors == 0 and st.forward[0].accuracy < 1  # errors to learn from: the optimiser runs
    assert made_b == est["optimiser"]  # one gradient per error group, its edits and paraphrases, exactly
    assert st.spend.calls == made_f + made_b  # the ledger counts what the servers answered
    cfg = s.config.engine_config()
    if method == "textgrad":
        assert made_f == est["forward"] and est["bandit"] == 0
    else:
        bandit = st.proposal.bandit
        assert made_f == est["forward"] + bandit["spent"]
        # successive halving gives each surviving arm floor(B / (|S_r| R)) pulls in each of R = ceil(log2 K)
        # rounds, so it spends the budget B less under |S_r| per round: at most K * R unspent
        arms = 1 + len(st.proposal.candidates)
        assert est["bandit"] - arms * math.ceil(math.log2(arms)) <= bandit["spent"] <= est["bandit"] == cfg.bandit_budget
    assert est["proposal"] - (made_f + made_b) >= 0


@pytest.mark.parametrize("method", ["protegi", "textgrad"])
def test_setup_shows_the_quick_estimate_before_the_run(app_test_env, method):
    at = new_app()
    goto(at, "setup")
    at.text_input(key="forward_spec").set_value("fake:scripted")
    at.text_input(key="backward_spec").set_value("fake:scripted")
    at.radio(key="method").set_value(method)
    check(at.run())
    at.selectbox(key=f"preset_{method}").set_value("quick")
    check(at.run())
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["One step: calls"]) <= QUICK_MAX_CALLS
    assert int(metrics["Baseline calls"]) <= QUICK_MAX_VALIDATION
    assert int(metrics["Then validation: calls"]) <= QUICK_MAX_VALIDATION


def test_a_session_recorded_before_preset_version_2_keeps_the_old_quick():
    old = SessionConfig.from_json({"task": {"name": "pubmedqa"}, "method": "protegi", "preset": "quick",
                                   "template_version": 2})
    new = SessionConfig(task={"name": "pubmedqa"}, method="protegi", preset="quick")
    assert old.preset_version == 1 and new.preset_version == 2
    assert (old.engine_config().minibatch, old.engine_config().bandit_budget, old.engine_config().val_questions) \
        == (16, 32, None)
    assert new.engine_config().minibatch + new.engine_config().bandit_budget <= QUICK_MAX_CALLS

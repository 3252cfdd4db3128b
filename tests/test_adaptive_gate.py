"""The adaptive gate: sequential decisions on constructed paired outcomes, and the session's batched validation."""

from __future__ import annotations

import json

from dataclasses import replace

import pytest

from core.gate import POLICIES, GateResult, gate
from core.llm import ModelSpec
from core.runner import Runner
from core.sequential import look_schedule, obf_spending, sequential_decision
from core.session import Models, Session, SessionConfig, SessionError, default_policy
from core.protegi import PRESETS as PP
from core.textgrad import PRESETS as TP
from tests.fake_model import FakeModel, TableModel

SEED = "You are a helpful, creative, and smart assistant."
CANDIDATE = "You are a careful biomedical reader. Weigh the evidence in the abstract before answering."


def outcomes(n: int, fixed: set[int], broke: set[int]) -> tuple[dict[str, bool], dict[str, bool]]:
    """Paired outcomes on n questions: the current prompt right on even questions; the candidate the same,
    except right on `fixed` (current wrong there) and wrong on `broke` (current right there)."""
    old = {f"q{i}": i % 2 == 0 for i in range(n)}
    assert all(not old[f"q{i}"] for i in fixed) and all(old[f"q{i}"] for i in broke)
    new = {q: (int(q[1:]) in fixed) or (c and int(q[1:]) not in broke) for q, c in old.items()}
    return old, new


def test_adaptive_is_a_policy_with_a_spending_function_that_ends_at_alpha():
    assert "adaptive" in POLICIES
    assert look_schedule(50, 200) == [50, 100, 150, 200] and look_schedule(50, 120) == [50, 100, 120]
    spent = [obf_spending(t, 0.05) for t in (0.25, 0.5, 0.75, 1.0)]
    assert spent == sorted(spent) and spent[0] < 0.001 and spent[-1] == pytest.approx(0.05)


def test_clearly_better_is_accepted_at_the_first_look():
    old, new = outcomes(200, fixed={2 * k + 1 for k in range(15)}, broke=set())  # 15 fixed in the first 50
    g = gate("adaptive", old, new, 0.05, batch=50, cap=200)
    assert g.passed and g.decided
    assert g.questions_used == 50 and g.n == 50 and g.looks == [50]
    assert sorted(g.fixed) == sorted(f"q{2 * k + 1}" for k in range(15)) and g.broke == []
    assert g.p_value <= obf_spending(0.25, 0.05) and "O'Brien-Fleming" in g.test


def test_equal_with_a_small_lead_extends_to_the_cap_and_the_tie_goes_to_the_current_prompt():
    fixed = {i for i in range(200) if i % 50 in (1, 21)}  # 2 per batch
    broke = {i for i in range(200) if i % 50 == 10}  # 1 per batch: ahead, never significantly
    old, new = outcomes(200, fixed, broke)
    for n in (50, 100, 150):  # what the session sees after each batch: keep going
        part = dict(list(old.items())[:n]), dict(list(new.items())[:n])
        g = gate("adaptive", *part, 0.05, batch=50, cap=200)
        assert not g.decided and not g.passed and g.questions_used == n
    g = gate("adaptive", old, new, 0.05, batch=50, cap=200)
    assert g.decided and not g.passed and g.questions_used == 200 and g.looks == [50, 100, 150, 200]
    assert len(g.fixed) == 8 and len(g.broke) == 4 and "cap" in g.reason


def test_identical_prompts_are_rejected_for_futility_after_two_batches():
    old, new = outcomes(200, set(), set())
    g = gate("adaptive", old, new, 0.05, batch=50, cap=200)
    assert g.decided and not g.passed and g.questions_used == 100 and "futility" in g.reason


def test_clearly_worse_is_rejected_at_the_first_look():
    old, new = outcomes(200, set(), broke={2 * k for k in range(15)})
    g = gate("adaptive", old, new, 0.05, batch=50, cap=200)
    assert g.decided and not g.passed and g.questions_used == 50 and "worse" in g.reason
    assert len(g.broke) == 15


def test_a_few_questions_less_than_a_batch_decide_at_their_only_look():
    old, new = outcomes(20, fixed={1, 3}, broke=set())
    g = gate("adaptive", old, new, 0.05, batch=50, cap=20)
    assert g.decided and not g.passed and g.questions_used == 20 and g.looks == [20]


def test_e_value_variant_is_always_valid_and_accepts_overwhelming_evidence():
    old, new = outcomes(200, fixed={2 * k + 1 for k in range(20)}, broke=set())
    d = sequential_decision(list(old.values()), list(new.values()), test="e-value")
    assert d.decision == "accept" and d.questions_used == 50 and d.e_value >= 20
    with pytest.raises(ValueError):
        sequential_decision([True], [True, False])


def test_old_gate_results_and_configs_still_load():
    old = {"policy": "strict", "old_accuracy": 0.5, "new_accuracy": 0.6, "old_ci": [0.4, 0.6], "new_ci": [0.5, 0.7],
           "n": 50, "p_value": 0.3, "fixed": ["a"], "broke": [], "passed": True, "reason": "improved"}
    g = GateResult.from_json(old)
    assert g.decided and g.test == "exact McNemar" and g.e_value is None
    cfg = SessionConfig(task={"name": "pubmedqa"})
    assert (cfg.gate_batch, cfg.gate_cap, cfg.policy) == (50, 200, "strict")
    with pytest.raises(SessionError, match="gate_batch"):
        SessionConfig(task={"name": "pubmedqa"}, gate_batch=0).check(check_models=False)


def test_recommended_presets_default_to_the_adaptive_gate():
    assert "recommended" in PP and "recommended" in TP
    # ProTeGi's product preset: the method settings "quick" had before preset version 2 made quick quick
    from core.protegi import QUICK_V1
    assert PP["recommended"] == QUICK_V1 and PP["quick"].bandit_budget < QUICK_V1.bandit_budget
    # the paper's method settings, but no fixed 50-question validation set: the adaptive gate extends to its cap
    assert TP["recommended"].val_questions is None and TP["AutoMedPrompt paper"].val_questions == 50
    assert replace(TP["recommended"], val_questions=50) == TP["AutoMedPrompt paper"]
    assert default_policy("recommended") == "adaptive" and default_policy("AutoMedPrompt paper") == "strict"


# ---------- the session: extensions cost only the candidate's calls ----------

def adaptive_session(tmp_path, seed_right: set[str], cand_right: set[str]):
    fwd = TableModel(table={SEED: seed_right, CANDIDATE: cand_right})
    bwd = FakeModel()
    fwd.spec, bwd.spec = ModelSpec("fake", "fwd"), ModelSpec("fake", "bwd")
    cfg = SessionConfig(task={"name": "pubmedqa", "val_size": 200}, method="textgrad", preset="recommended",
                        forward="fake:fwd", backward="fake:bwd", policy="adaptive", seed_prompt=SEED)
    s = Session.create(cfg, root=tmp_path / "sessions", models=Models(fwd, bwd, Runner(cache=None, concurrency=8)))
    fwd.learn(s.task)
    return s, fwd


def validate_edit(s: Session, fwd: TableModel) -> tuple[GateResult, int, int]:
    s.run_baseline()
    s.start_step()
    seed_before, cand_before = _calls(fwd, SEED), _calls(fwd, CANDIDATE)
    s.decide("edit", prompt=CANDIDATE)
    g = s.validate()
    return g, _calls(fwd, SEED) - seed_before, _calls(fwd, CANDIDATE) - cand_before


def _calls(fwd: TableModel, prompt: str) -> int:
    return sum(n for (p, _), n in fwd.answered.items() if p == prompt)


def test_session_extends_in_batches_with_the_candidates_calls_only(tmp_path):
    s, fwd = adaptive_session(tmp_path, set(), set())
    ids = [e.id for e in s.val_examples()]
    assert len(ids) == 200
    seed_right = {q for i, q in enumerate(ids) if i % 2 == 0}
    fixed = {q for i, q in enumerate(ids) if i % 50 in (1, 21)}
    broke = {q for i, q in enumerate(ids) if i % 50 == 10}
    fwd.table = {SEED: seed_right, CANDIDATE: (seed_right - broke) | fixed}
    g, seed_calls, cand_calls = validate_edit(s, fwd)
    assert g.questions_used == 200 and g.looks == [50, 100, 150, 200] and not g.passed
    assert seed_calls == 0  # the current prompt's answers come from the baseline report
    assert cand_calls == 200 and all(fwd.answered[CANDIDATE, q] == 1 for q in ids)
    assert set(g.fixed) == fixed and set(g.broke) == broke
    sid = s.id
    s.close()
    r = Session.open(sid, root=tmp_path / "sessions", readonly=True)
    assert r.step.gate.questions_used == 200 and r.step.candidate_report.n == 200
    assert json.dumps(r.step.gate.to_json())  # the event log carries the new fields
    r.close()


def test_session_stops_at_the_first_batch_when_clearly_better(tmp_path):
    s, fwd = adaptive_session(tmp_path, set(), set())
    ids = [e.id for e in s.val_examples()]
    seed_right = {q for i, q in enumerate(ids) if i % 2 == 0}
    fixed = {q for i, q in enumerate(ids[:50]) if i % 2 == 1}  # 25 of the first 50
    fwd.table = {SEED: seed_right, CANDIDATE: seed_right | fixed}
    g, seed_calls, cand_calls = validate_edit(s, fwd)
    assert g.passed and g.questions_used == 50 and (seed_calls, cand_calls) == (0, 50)
    s.confirm()
    assert s.current.prompt == CANDIDATE and s.current.report.n == 50
    s.close()


# ---------- CLI and app: the recommended preset starts with the adaptive gate; the card says what it took ----------

def test_cli_recommended_preset_uses_the_adaptive_gate(pgs_env):
    from tests.test_cli import last_json, pgs

    out = pgs("optimize", "--task", "pubmedqa", "--val-size", "60", "--forward", "fake:x", "--preset", "recommended",
              "--steps", "1", "--quiet", "--json")
    assert out.returncode == 0, out.stderr
    sid = last_json(out.stdout)["session"]
    s = Session.open(sid, root=pgs_env / "sessions", readonly=True)
    assert s.config.policy == "adaptive" and s.config.gate_batch == 50
    g = s.steps[0].gate
    assert g is not None and g.policy == "adaptive" and g.questions_used in (50, 60)
    assert f"on {g.questions_used} questions, group-sequential" in out.stdout
    explicit = pgs("optimize", "--task", "pubmedqa", "--val-size", "60", "--forward", "fake:x", "--preset",
                   "recommended", "--policy", "strict", "--steps", "1", "--quiet", "--json")
    assert Session.open(last_json(explicit.stdout)["session"], root=pgs_env / "sessions",
                        readonly=True).config.policy == "strict"


def test_app_recommended_preset_sets_adaptive_and_the_gate_card_shows_the_test(tmp_path, monkeypatch):
    from tests.test_app import check, goto, markdowns, new_app

    for k, v in {"PGS_SESSIONS_DIR": str(tmp_path / "sessions"), "PGS_CACHE_DIR": str(tmp_path / "cache"),
                 "PGS_INLINE_JOBS": "1"}.items():
        monkeypatch.setenv(k, v)
    at = new_app()
    goto(at, "setup")
    at.radio(key="method").set_value("textgrad")
    check(at.run())
    at.selectbox(key="preset_textgrad").set_value("recommended")
    check(at.run())
    assert at.selectbox(key="policy").value == "adaptive"
    assert at.number_input(key="gate_cap").value == 200
    at.selectbox(key="preset_textgrad").set_value("quick")
    check(at.run())
    assert at.selectbox(key="policy").value == "strict"

    cfg = SessionConfig(task={"name": "pubmedqa", "val_size": 80}, forward="fake:a", backward="fake:b",
                        preset="recommended", policy="adaptive")
    s = Session.create(cfg, root=tmp_path / "sessions", models=Models(FakeModel(), FakeModel(), Runner(cache=None)))
    s.run_baseline()
    s.start_step()
    s.decide("edit", prompt=CANDIDATE)
    g = s.validate()
    s.close()
    at.session_state["sid"] = s.id
    goto(at, "optimize")
    shown = " ".join(markdowns(at)).replace("\\", "")  # the texts are Markdown-escaped
    assert f"Took **{g.questions_used}** validation questions" in shown and "O'Brien-Fleming" in shown
    assert any(m.label == "Sequential p" for m in at.metric)
    assert any(m.label == "Fixed / broke" and m.value == f"{len(g.fixed)} / {len(g.broke)}" for m in at.metric)

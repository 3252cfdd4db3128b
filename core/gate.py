"""The validation gate: candidate vs current prompt on the same validation questions.

`adaptive` scores validation questions in batches and stops when a group-sequential exact binomial test
on the discordant pairs (O'Brien-Fleming-type alpha spending, core/sequential.py) decides; at the cap a
candidate not shown better is rejected (the tie goes to the current prompt)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .metrics import mcnemar_exact, wilson_interval
from .sequential import TEST_NAMES, sequential_decision

POLICIES = ("strict", "tie", "significant", "always", "adaptive")
POLICY_HELP = {
    "strict": "accept only if validation accuracy strictly improves (ties rejected, as AutoMedPrompt)",
    "tie": "accept if validation accuracy improves or stays equal",
    "significant": "accept only if it improves and the exact McNemar test gives p < alpha",
    "always": "accept every decision (the person overrides the gate)",
    "adaptive": "score validation in batches (50, up to 200) until a group-sequential test with O'Brien-Fleming "
                "alpha spending decides; accept only if the candidate is shown better (alpha per gate)",
}


@dataclass
class GateResult:
    policy: str
    old_accuracy: float
    new_accuracy: float
    old_ci: tuple[float, float]
    new_ci: tuple[float, float]
    n: int
    p_value: float
    fixed: list[str] = field(default_factory=list)  # wrong before, right now
    broke: list[str] = field(default_factory=list)  # right before, wrong now
    passed: bool = False
    reason: str = ""
    questions_used: int = 0  # adaptive: validation questions the decision took (else n)
    test: str = "exact McNemar"
    e_value: float | None = None
    looks: list[int] = field(default_factory=list)  # adaptive: questions seen at each look
    decided: bool = True  # adaptive: False while the test wants more questions

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "GateResult":
        d = dict(d)
        d["old_ci"], d["new_ci"] = tuple(d["old_ci"]), tuple(d["new_ci"])
        return GateResult(**d)


def gate(policy: str, old: dict[str, bool], new: dict[str, bool], alpha: float = 0.05, *,
         batch: int = 50, cap: int = 200) -> GateResult:
    """Compare two correctness maps over the same question ids under a policy. `adaptive` reads the ids in
    the maps' order, looks after every `batch` up to `cap`, and counts only the questions it used."""
    if policy not in POLICIES:
        raise ValueError(f"Unknown gate policy '{policy}'. Use one of: {', '.join(POLICIES)}.")
    ids = [i for i in old if i in new]
    if policy == "adaptive":
        return _adaptive(ids, old, new, alpha, batch, cap)
    a = [old[i] for i in ids]
    b = [new[i] for i in ids]
    n = len(ids)
    ka, kb = sum(a), sum(b)
    acc_a, acc_b = (ka / n if n else 0.0), (kb / n if n else 0.0)
    test = mcnemar_exact(a, b)
    fixed = [i for i in ids if new[i] and not old[i]]
    broke = [i for i in ids if old[i] and not new[i]]
    if policy == "strict":
        passed, reason = kb > ka, ("improved" if kb > ka else "tie: rejected (strict)" if kb == ka else "worse")
    elif policy == "tie":
        passed, reason = kb >= ka, ("improved" if kb > ka else "tie: accepted" if kb == ka else "worse")
    elif policy == "significant":
        passed = kb > ka and test.p_value < alpha
        reason = (f"improved, p={test.p_value:.3g} < {alpha}" if passed else
                  f"not significant (p={test.p_value:.3g})" if kb > ka else "not improved")
    else:
        passed, reason = True, "always accept"
    return GateResult(policy, acc_a, acc_b, wilson_interval(ka, n), wilson_interval(kb, n), n, test.p_value,
                      fixed, broke, passed, reason, questions_used=n)


def _adaptive(ids: list[str], old: dict[str, bool], new: dict[str, bool], alpha: float, batch: int,
              cap: int) -> GateResult:
    d = sequential_decision([old[i] for i in ids], [new[i] for i in ids], batch=batch, cap=cap, alpha=alpha)
    used = ids[: d.questions_used] if d.questions_used else ids
    n = len(used)
    ka, kb = sum(old[i] for i in used), sum(new[i] for i in used)
    return GateResult("adaptive", ka / n if n else 0.0, kb / n if n else 0.0, wilson_interval(ka, n),
                      wilson_interval(kb, n), n, d.p_value, [i for i in used if new[i] and not old[i]],
                      [i for i in used if old[i] and not new[i]], d.decision == "accept", d.reason,
                      questions_used=n, test=TEST_NAMES[d.test], e_value=d.e_value, looks=d.looks,
                      decided=d.decision != "continue")

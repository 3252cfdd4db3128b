"""Sequential tests for the `adaptive` gate, on the discordant pairs of paired validation outcomes.

Among discordant questions (one prompt right, the other wrong), H0 "equally good" says each one is
"fixed" (only the candidate right) with probability 1/2, independently. Looks happen after every batch
of questions (50, 100, 150, 200 by default); the tests keep their false-acceptance rate under these
repeated looks:

* `group-sequential` (the gate's test): one-sided exact binomial test with O'Brien-Fleming-type
  Lan-DeMets alpha spending, alpha(t) = 2 - 2*Phi(z_{1-alpha/2} / sqrt(t)), t = questions / cap.
  Boundaries are computed exactly, conditional on the discordant counts seen at each look, so the
  chance of ever accepting an equally good candidate is at most alpha. Non-binding futility: after two
  batches a candidate that is not ahead (fixed <= broke) is rejected; so is one significantly worse
  (the mirrored boundary). At the cap a candidate that did not cross the boundary is rejected.
* `e-value` (kept for the bench's comparison): an always-valid one-sided mixture e-process
  E = integral over p in [1/2, 1] of (2p)^fixed (2(1-p))^broke, uniform prior; accept at E >= 1/alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

TESTS = ("group-sequential", "e-value")
TEST_NAMES = {"group-sequential": "group-sequential exact binomial test, O'Brien-Fleming alpha spending",
              "e-value": "always-valid mixture e-value on discordant pairs"}


@dataclass
class SequentialDecision:
    """Where a sequential test stands after the outcomes seen: accept / reject / continue."""

    decision: str  # "accept" | "reject" | "continue"
    reason: str
    test: str
    questions_used: int
    looks: list[int] = field(default_factory=list)  # questions seen at each look so far
    fixed: int = 0
    broke: int = 0
    p_value: float = 1.0  # group-sequential: stage-wise ordered p-value (<= alpha iff accepted)
    e_value: float | None = None  # e-value test only
    boundary: int | None = None  # fixed needed to accept at the last look


def obf_spending(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: alpha spent by information fraction t (alpha at t = 1)."""
    if t <= 0:
        return 0.0
    z = _norm_ppf(1 - alpha / 2)
    return min(alpha, 2 * (1 - _norm_cdf(z / math.sqrt(min(1.0, t)))))


def look_schedule(batch: int, cap: int) -> list[int]:
    """Questions seen at each look: batch, 2*batch, ... up to and including cap."""
    if batch < 1 or cap < 1:
        raise ValueError(f"batch and cap must be >= 1, got batch={batch}, cap={cap}")
    looks = list(range(batch, cap, batch))
    return looks + [cap]


def sequential_decision(old: Sequence[bool], new: Sequence[bool], *, batch: int = 50, cap: int = 200,
                        alpha: float = 0.05, test: str = "group-sequential") -> SequentialDecision:
    """Run the looks over paired outcomes in question order; stop at the first decisive look.

    `old[i]`, `new[i]`: whether the current / candidate prompt got question i right. With fewer outcomes
    than the next look needs, the result is "continue"."""
    if len(old) != len(new):
        raise ValueError(f"paired results differ in length ({len(old)} vs {len(new)})")
    if test not in TESTS:
        raise ValueError(f"Unknown sequential test '{test}'. Use one of: {', '.join(TESTS)}.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    schedule = look_schedule(batch, cap)
    run = _GroupSequential(alpha, cap) if test == "group-sequential" else None
    fixed = broke = 0
    seen = 0
    looks: list[int] = []
    out = SequentialDecision("continue", "not enough questions for the first look", test, 0)
    for k, n in enumerate(schedule):
        if n > len(old):
            break
        for a, b in zip(old[seen:n], new[seen:n]):
            fixed += bool(b and not a)
            broke += bool(a and not b)
        seen = n
        looks.append(n)
        last = k == len(schedule) - 1
        if run is not None:
            out = run.look(n, fixed, broke, first=k == 0, last=last)
        else:
            out = _e_value_look(alpha, fixed, broke, last)
        out.questions_used, out.looks, out.fixed, out.broke = n, list(looks), fixed, broke
        if out.decision != "continue":
            break
    return out


class _GroupSequential:
    """Exact boundaries by dynamic programming over the fixed count among discordant pairs, under H0."""

    def __init__(self, alpha: float, cap: int):
        self.alpha, self.cap = alpha, cap
        self.dist = [1.0]  # P0(fixed = f at the last look, never crossed), index f
        self.discordant = 0
        self.spent = 0.0  # exact P0 of having crossed at an earlier look

    def look(self, n: int, fixed: int, broke: int, first: bool, last: bool) -> SequentialDecision:
        d = fixed + broke
        self.dist = _convolve_half(self.dist, d - self.discordant)
        self.discordant = d
        budget = obf_spending(n / self.cap, self.alpha) - self.spent
        tail = [0.0] * (d + 2)  # tail[c] = P0(F >= c, not crossed before)
        for f in range(d, -1, -1):
            tail[f] = tail[f + 1] + self.dist[f]
        c = next((c for c in range(d + 1) if tail[c] <= budget + 1e-12), d + 1)
        p = min(1.0, self.spent + tail[min(fixed, d + 1)])  # stage-wise ordered p-value
        where = f"look {n} q: fixed {fixed}, broke {broke}"
        need = f"accept needs fixed >= {c}" if c <= d else "no count can accept yet"
        if fixed >= c:
            return SequentialDecision("accept", f"better ({where}; {need}; sequential p={p:.3g} <= alpha "
                                                f"spent {self.spent + tail[c]:.3g})", "group-sequential", n,
                                      p_value=p, boundary=c)
        mirrored = broke >= c  # as far below even as accepting would need above
        if last:
            return SequentialDecision("reject", f"not shown better at the cap ({where}; {need}): "
                                                f"the current prompt stays", "group-sequential", n, p_value=p, boundary=c)
        if mirrored or (not first and fixed <= broke):
            why = "significantly worse" if mirrored else "futility: not ahead after two batches"
            return SequentialDecision("reject", f"{why} ({where})", "group-sequential", n, p_value=p, boundary=c)
        self.spent += tail[c]
        self.dist = [x if f < c else 0.0 for f, x in enumerate(self.dist)]
        return SequentialDecision("continue", f"undecided ({where}; {need}): extending", "group-sequential", n,
                                  p_value=p, boundary=c)


def _e_value_look(alpha: float, fixed: int, broke: int, last: bool) -> SequentialDecision:
    e = mixture_e_value(fixed, broke)
    where = f"fixed {fixed}, broke {broke}"
    if e >= 1 / alpha:
        return SequentialDecision("accept", f"better ({where}; e={e:.3g} >= {1 / alpha:.3g})", "e-value", 0, e_value=e,
                                  p_value=min(1.0, 1 / e))
    if last or mixture_e_value(broke, fixed) >= 1 / alpha:
        why = "not shown better at the cap" if last else "significantly worse"
        return SequentialDecision("reject", f"{why} ({where}; e={e:.3g})", "e-value", 0, e_value=e,
                                  p_value=min(1.0, 1 / e))
    return SequentialDecision("continue", f"undecided ({where}; e={e:.3g}): extending", "e-value", 0, e_value=e,
                              p_value=min(1.0, 1 / e))


def mixture_e_value(fixed: int, broke: int, grid: int = 400) -> float:
    """E = 2 * integral_{1/2}^{1} (2p)^fixed (2(1-p))^broke dp (midpoint rule, in logs)."""
    logs = []
    for i in range(grid):
        p = 0.5 + (i + 0.5) / (2 * grid)
        logs.append(fixed * math.log(2 * p) + broke * math.log(2 * (1 - p)))
    m = max(logs)
    return math.exp(m) * sum(math.exp(x - m) for x in logs) / grid


def _convolve_half(dist: list[float], k: int) -> list[float]:
    """Add k fair coin flips to the distribution of a count."""
    for _ in range(max(0, k)):
        nxt = [0.0] * (len(dist) + 1)
        for f, x in enumerate(dist):
            nxt[f] += x / 2
            nxt[f + 1] += x / 2
        dist = nxt
    return dist


def _norm_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _norm_ppf(q: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _norm_cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2

"""How often each gate policy accepts noise, worse and better candidates (simulated paired outcomes).

Construction: each validation question is, independently, "fixed" (only the candidate right) with
probability p_fixed, "broke" (only the current prompt right) with p_broke, else concordant (both right
with probability 0.6, both wrong otherwise). Discordance d = p_fixed + p_broke, difference
delta = p_fixed - p_broke, so p_fixed = (d + delta) / 2 and p_broke = (d - delta) / 2:
equal (delta 0), 4 points worse (delta -0.04) and 10 points better (delta +0.10), at d = 10, 20, 30 %.
The fixed policies see the first 50 questions (as today); `adaptive` runs the real gate
(core.gate.gate, batches of 50 up to 200); "adaptive e-value" is the always-valid mixture e-value of
core.sequential on the same looks, for comparison (not a policy). Seeded; 2,000 sessions per cell.

Last line: false acceptance and power at d = 20 %, and mean_questions_adaptive = the LARGEST of the
adaptive gate's mean questions over the three d = 20 % cases (equal, worse, better).
Run: PYTHONPATH=. python bench/gate.py [--sessions 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.gate import gate  # noqa: E402
from core.sequential import sequential_decision  # noqa: E402

FIXED_POLICIES = ("strict", "tie", "significant", "always")
CASES = {"equal": 0.0, "worse4": -0.04, "better10": 0.10}
DISCORDANCE = (0.10, 0.20, 0.30)
FIRST, CAP = 50, 200


def paired(rng: random.Random, d: float, delta: float, n: int) -> tuple[dict[str, bool], dict[str, bool]]:
    """One session's paired outcomes (current, candidate) on n questions, as the construction says."""
    pf, pb = (d + delta) / 2, (d - delta) / 2
    old, new = {}, {}
    for i in range(n):
        u, qid = rng.random(), f"q{i}"
        if u < pf:
            old[qid], new[qid] = False, True
        elif u < pf + pb:
            old[qid], new[qid] = True, False
        else:
            old[qid] = new[qid] = rng.random() < 0.6
    return old, new


def run_cell(d: float, delta: float, sessions: int, seed: int) -> dict[str, tuple[float, float]]:
    """{policy: (acceptance rate, mean validation questions)} over `sessions` seeded sessions."""
    rng = random.Random(seed)
    acc = {p: 0 for p in (*FIXED_POLICIES, "adaptive", "adaptive e-value")}
    questions = dict.fromkeys(acc, 0)
    for _ in range(sessions):
        old, new = paired(rng, d, delta, CAP)
        first = list(old)[:FIRST]
        for p in FIXED_POLICIES:
            g = gate(p, {i: old[i] for i in first}, {i: new[i] for i in first})
            acc[p] += g.passed
            questions[p] += g.n
        g = gate("adaptive", old, new, 0.05, batch=FIRST, cap=CAP)
        acc["adaptive"] += g.passed
        questions["adaptive"] += g.questions_used
        e = sequential_decision(list(old.values()), list(new.values()), batch=FIRST, cap=CAP, test="e-value")
        acc["adaptive e-value"] += e.decision == "accept"
        questions["adaptive e-value"] += e.questions_used
    return {p: (acc[p] / sessions, questions[p] / sessions) for p in acc}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.sessions < 1:
        print("error: --sessions must be at least 1", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = {}
    for di, d in enumerate(DISCORDANCE):
        for ci, (case, delta) in enumerate(CASES.items()):
            results[d, case] = run_cell(d, delta, a.sessions, a.seed * 1000 + di * 10 + ci)
    print(f"{a.sessions} sessions per cell, seed {a.seed}, alpha 0.05; fixed policies on {FIRST} questions, "
          f"adaptive in batches of {FIRST} up to {CAP}")
    print(f"{'discord.':>8} {'policy':<17} {'accept|equal':>12} {'accept|-4pts':>12} {'power|+10pts':>12} "
          f"{'mean q equal':>12} {'mean q -4':>10} {'mean q +10':>10}")
    for d in DISCORDANCE:
        for p in results[d, "equal"]:
            r = [results[d, c][p] for c in CASES]
            print(f"{d:>8.0%} {p:<17} {r[0][0]:>12.4f} {r[1][0]:>12.4f} {r[2][0]:>12.4f} "
                  f"{r[0][1]:>12.1f} {r[1][1]:>10.1f} {r[2][1]:>10.1f}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    at = {c: results[0.20, c] for c in CASES}
    mean_q = max(at[c]["adaptive"][1] for c in CASES)
    print(f"false_accept_strict={at['equal']['strict'][0]:.4f} false_accept_adaptive={at['equal']['adaptive'][0]:.4f} "
          f"power_strict={at['better10']['strict'][0]:.4f} power_adaptive={at['better10']['adaptive'][0]:.4f} "
          f"mean_questions_adaptive={mean_q:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

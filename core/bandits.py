"""Best-arm identification: pick the best candidate prompt with a budget of forward calls.

An *arm* is a candidate prompt; a *pull* ``(arm, example)`` evaluates that prompt on one training
example and yields a reward in [0, 1] (1 = correct).  Pulls are expensive LLM calls, so every
algorithm asks for them in *batches*.  ``Bandit`` is an ask/tell object: ``next_pulls()`` hands out
the next batch, ``tell(rewards)`` takes its rewards back, ``result()`` / ``best(k)`` rank the arms
once ``next_pulls()`` is empty.  The caller evaluates each batch however it likes (ProTeGi: one
concurrent forward batch on the job's event loop).  ``select(..., evaluate)`` is the same thing
driven by a synchronous callback ``evaluate(list_of_pulls) -> rewards``.

Algorithms (``ALGORITHMS``):

* ``brute-force``  -- every arm on the same ``budget // K`` examples (one batch).  ProTeGi's ``bf``.
* ``successive-rejects`` -- Audibert & Bubeck (2010): K-1 phases; phase k brings every surviving
  arm to ``n_k = ceil((B - K) / (logbar(K) * (K + 1 - k)))`` pulls, ``logbar(K) = 1/2 + sum_{i=2..K} 1/i``,
  then rejects the arm with the lowest empirical mean.  One batch per phase.
* ``successive-halving`` -- Karnin, Koren & Somekh (2013): ``ceil(log2 K)`` rounds; round r gives
  each surviving arm ``floor(B / (|S_r| * ceil(log2 K)))`` more pulls, then keeps the top
  ``ceil(|S_r| / 2)``.  One batch per round.
* ``ucb`` / ``ucb-e`` -- batched UCB as in ProTeGi's ``UCBBanditEvaluator`` (microsoft/LMOps,
  ``prompt_optimization/evaluators.py``): each round draws ``samples_per_eval`` examples, picks the
  ``arms_per_round`` arms with the highest index and evaluates them all on that sample.
  Index for ``ucb``:   ``mean_i + c * sqrt(log(t) / n_i)``, t = total pulls so far (UCB1).
  Index for ``ucb-e``: ``mean_i + sqrt(a / n_i)`` (Audibert & Bubeck's UCB-E).
  The recommendation is the arm with the highest empirical mean (as in both papers and ProTeGi).

Where this module deliberately differs from the references:

* ProTeGi's UCB uses the *round* index as t and picks random arms in round 0 (so round 1, with
  log(1) = 0, is greedy); here t counts pulls, as in UCB1, and unpulled arms have an infinite index
  (the first rounds sweep the arms in index order).  ProTeGi's ``ucb-e`` computes
  ``mean + c * sqrt(c / n)``; here it is the paper's ``mean + sqrt(a / n)``.  With the default
  ``c = 1`` (ProTeGi's ``--c`` default) ProTeGi's form is ``a = 1``.
* UCB-E's theoretical ``a = 25/36 * (B - K) / H1`` needs the unknown hardness
  ``H1 = sum_i 1 / gap_i**2``.  The default assumes every gap is ``DEFAULT_GAP`` (0.1, i.e. ten accuracy
  points): ``a = 25/36 * (B - K) * DEFAULT_GAP**2 / (K - 1)``, floored at 1 (ProTeGi's value).
  Larger ``a`` explores more (towards uniform allocation), smaller ``a`` is greedier.
  ``c`` (ProTeGi's ``ucb_c``) applies to ``ucb`` only; UCB-E's ``a`` is its own setting (``ucb_e_a`` in
  ``ProtegiConfig``, passed as ``select(..., a=...)``).
* Successive halving ranks on the cumulative mean of all pulls so far (Karnin et al. use only the
  current round's samples); ProTeGi's code keeps arms scoring >= the round average, here it is the
  paper's top half.  SR's n_1 and SH's t_r are at least 1 (budget permitting), so tiny budgets
  still eliminate on data (ProTeGi's SR forces at least 4 samples per phase).

Sampling and budget rules, common to all algorithms:

* Never more than ``budget`` pulls.  If ``budget < K`` arms ``0 .. budget-1`` get one pull each
  (on one shared example) and all arms are ranked by mean.  With one arm nothing is pulled.
* Examples come from ``random.Random(seed)``.  All arms of a batch see the SAME examples (a paired
  comparison, as in ProTeGi), chosen among examples none of them has seen yet; an (arm, example)
  pair is never pulled twice.  An arm that has seen every example has an exact training mean and
  is never pulled again, so budget may be left unspent when the pool is small.
* Ties are broken towards the lower arm index: it ranks first, is preferred by UCB, and the higher
  index is the one rejected.  Arms never pulled have mean 0.0.
* A failed pull (``evaluate`` returns ``None`` for it: the call failed, which is not a wrong answer)
  spends budget but is left out of the arm's mean and pull count.  The pair stays unseen, so a later
  batch may draw it again (a retry within the budget); after ``MAX_ATTEMPTS`` failures it is given up.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Generator

Pull = tuple[int, int]  # (arm index, example index)
EvaluateBatch = Callable[[list[Pull]], list["float | None"]]  # one reward per pull, same order; None = failed
Plan = Generator[list[Pull], list["float | None"], list[int]]  # yields batches, is sent rewards, returns a ranking

ALGORITHMS = ("brute-force", "ucb", "ucb-e", "successive-rejects", "successive-halving")
DEFAULT_GAP = 0.1  # assumed gap between arms for UCB-E's default exploration parameter
MAX_ATTEMPTS = 2  # failed tries of one (arm, example) pair before it is given up


@dataclass
class BanditResult:
    algorithm: str
    means: list[float]  # empirical mean reward per arm over its answered pulls (0.0 where none)
    pulls: list[int]  # answered pulls per arm
    spent: int  # total pulls made (== sum(pulls) + sum(failed)); never exceeds the budget
    ranking: list[int]  # arm indices, best first
    rounds: list[dict] = field(default_factory=list)  # per round: {"pulls": n, "active": [...], ...}
    failed: list[int] = field(default_factory=list, compare=False)  # failed pulls per arm (spent, not in mean)

    def best(self, k: int = 1) -> list[int]:
        return self.ranking[:k]


class _Run:
    """Book-keeping shared by the algorithms: budget, per-arm statistics, paired batches."""

    def __init__(self, n_arms: int, n_examples: int, budget: int, seed: int):
        self.n_arms, self.n_examples, self.budget = n_arms, n_examples, budget
        self.rng = random.Random(seed)
        self.sums = [0.0] * n_arms
        self.pulls = [0] * n_arms
        self.seen: list[set[int]] = [set() for _ in range(n_arms)]  # answered or given up
        self.failed = [0] * n_arms
        self.attempts: dict[Pull, int] = {}  # failed tries per pair
        self.spent = 0
        self.rounds: list[dict] = []

    @property
    def left(self) -> int:
        return self.budget - self.spent

    def mean(self, arm: int) -> float:
        return self.sums[arm] / self.pulls[arm] if self.pulls[arm] else 0.0

    def by_mean(self, arms) -> list[int]:
        """Arms sorted best first: higher empirical mean, then lower index."""
        return sorted(arms, key=lambda i: (-self.mean(i), i))

    def batch(self, arms: list[int], m: int, partial: bool = False) -> Generator[list[Pull], list, int]:
        """Pull every arm in ``arms`` on the same ``m`` examples, as ONE batch (yielded; its rewards are sent back).

        ``m`` shrinks to fit the budget; if not even one pull per arm fits, the first arms get one
        pull each when ``partial`` is true, otherwise nothing happens.  Examples are drawn at
        random, preferring those unseen by every arm in ``arms``; an arm skips examples it has
        already seen.  Returns the number of pulls made.
        """
        m = min(m, self.n_examples)
        if not arms or m <= 0 or self.left <= 0:
            return 0
        if len(arms) * m > self.left:
            m = self.left // len(arms)
            if m == 0:
                if not partial:
                    return 0
                arms, m = arms[: self.left], 1
        seen_by_any = set().union(*(self.seen[a] for a in arms))
        fresh = [e for e in range(self.n_examples) if e not in seen_by_any]
        sample = self.rng.sample(fresh, min(m, len(fresh)))
        if len(sample) < m:  # pool nearly exhausted: add examples seen by the fewest of these arms
            rest = [e for e in range(self.n_examples) if e in seen_by_any]
            self.rng.shuffle(rest)
            rest.sort(key=lambda e: sum(e in self.seen[a] for a in arms))  # stable: random among equals
            sample += rest[: m - len(sample)]
        pulls = [(a, e) for a in arms for e in sample if e not in self.seen[a]]
        if not pulls:
            return 0
        rewards = yield pulls
        for (a, e), r in zip(pulls, rewards):
            if r is None:  # the call failed: not a wrong answer; retried later unless tried too often
                self.failed[a] += 1
                self.attempts[(a, e)] = self.attempts.get((a, e), 0) + 1
                if self.attempts[(a, e)] >= MAX_ATTEMPTS:
                    self.seen[a].add(e)
                continue
            self.sums[a] += float(r)
            self.pulls[a] += 1
            self.seen[a].add(e)
        self.spent += len(pulls)
        return len(pulls)

    def log(self, pulls: int, active: list[int], **extra) -> None:
        self.rounds.append({"pulls": pulls, "active": list(active), **extra})

    def result(self, algorithm: str, ranking: list[int]) -> BanditResult:
        means = [self.mean(i) for i in range(self.n_arms)]
        return BanditResult(algorithm, means, list(self.pulls), self.spent, ranking, self.rounds, list(self.failed))


def _brute_force(run: _Run) -> Plan:
    arms = list(range(run.n_arms))
    run.log((yield from run.batch(arms, run.budget // run.n_arms)), arms)
    return run.by_mean(arms)


def _successive_rejects(run: _Run) -> Plan:
    K = run.n_arms
    logbar = 0.5 + sum(1.0 / i for i in range(2, K + 1))
    active, rejected, n_prev = list(range(K)), [], 0
    for k in range(1, K):
        n_k = max(1, math.ceil((run.budget - K) / (logbar * (K + 1 - k))))
        pulled = yield from run.batch(active, n_k - n_prev)
        n_prev = n_k
        worst = run.by_mean(active)[-1]
        run.log(pulled, active, eliminated=[worst])
        active = [i for i in active if i != worst]
        rejected.append(worst)
    return run.by_mean(active) + rejected[::-1]


def _successive_halving(run: _Run) -> Plan:
    K = run.n_arms
    n_rounds = math.ceil(math.log2(K))
    active, dropped = list(range(K)), []
    for _ in range(n_rounds):
        pulled = yield from run.batch(active, max(1, run.budget // (len(active) * n_rounds)))
        ranked = run.by_mean(active)
        keep = ranked[: math.ceil(len(active) / 2)]
        run.log(pulled, active, eliminated=ranked[len(keep):])
        dropped.append(ranked[len(keep):])
        active = keep
    return run.by_mean(active) + [i for group in reversed(dropped) for i in group]


def _ucb(run: _Run, index: Callable[[int], float], samples_per_eval: int, arms_per_round: int) -> Plan:
    while run.left > 0:
        eligible = [i for i in range(run.n_arms) if len(run.seen[i]) < run.n_examples]
        if not eligible:
            break
        score = {i: index(i) if run.pulls[i] else math.inf for i in eligible}
        chosen = sorted(eligible, key=lambda i: (-score[i], i))[:arms_per_round]
        pulled = yield from run.batch(chosen, samples_per_eval, partial=True)
        if not pulled:
            break
        run.log(pulled, chosen)
    return run.by_mean(range(run.n_arms))


def default_ucb_e_a(n_arms: int, budget: int) -> float:
    """UCB-E's a = 25/36 * (B - K) / H1 with H1 = (K - 1) / DEFAULT_GAP**2, floored at 1."""
    return max(1.0, 25 / 36 * (budget - n_arms) * DEFAULT_GAP**2 / max(1, n_arms - 1))


def _check(algorithm: str, n_arms: int, n_examples: int, budget: int, samples_per_eval: int,
           arms_per_round: int) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if n_arms < 1:
        raise ValueError("n_arms must be >= 1")
    if n_examples < 1 or budget < 0 or samples_per_eval < 1 or arms_per_round < 1:
        raise ValueError("need n_examples >= 1, budget >= 0, samples_per_eval >= 1, arms_per_round >= 1")


def _plan(run: _Run, algorithm: str, c: float, a: float | None, samples_per_eval: int, arms_per_round: int) -> Plan:
    """The algorithm as a generator of batches: yields pulls, is sent their rewards, returns the ranking."""
    n_arms = run.n_arms
    if n_arms == 1:
        return [0]
    if run.budget < n_arms:
        arms = list(range(run.budget))
        run.log((yield from run.batch(arms, 1)), arms)
        return run.by_mean(range(n_arms))
    if algorithm == "brute-force":
        return (yield from _brute_force(run))
    if algorithm == "successive-rejects":
        return (yield from _successive_rejects(run))
    if algorithm == "successive-halving":
        return (yield from _successive_halving(run))
    if algorithm == "ucb":
        def index(i: int) -> float:
            return run.mean(i) + c * math.sqrt(math.log(max(run.spent, 1)) / run.pulls[i])
    else:
        a_ = default_ucb_e_a(n_arms, run.budget) if a is None else a

        def index(i: int) -> float:
            return run.mean(i) + math.sqrt(a_ / run.pulls[i])
    return (yield from _ucb(run, index, samples_per_eval, arms_per_round))


class Bandit:
    """Ask/tell best-arm identification: ``next_pulls()`` gives a batch, ``tell(rewards)`` answers it, until
    ``next_pulls()`` is empty; then ``result()`` / ``best(k)``.  No callbacks, no threads: drive it from any loop."""

    def __init__(self, algorithm: str, n_arms: int, n_examples: int, budget: int, *, seed: int = 0,
                 c: float = 1.0, a: float | None = None, samples_per_eval: int = 8, arms_per_round: int = 2):
        _check(algorithm, n_arms, n_examples, budget, samples_per_eval, arms_per_round)
        self.algorithm = algorithm
        self._run = _Run(n_arms, n_examples, budget, seed)
        self._plan = _plan(self._run, algorithm, c, a, samples_per_eval, arms_per_round)
        self._pending: list[Pull] = []
        self._ranking: list[int] | None = None
        self._advance(None)

    def _advance(self, rewards: list | None) -> None:
        try:
            self._pending = self._plan.send(rewards)
        except StopIteration as stop:
            self._pending, self._ranking = [], stop.value

    @property
    def done(self) -> bool:
        return self._ranking is not None

    def next_pulls(self) -> list[Pull]:
        """The batch waiting for rewards (the same until `tell`); empty when the selection is finished."""
        return list(self._pending)

    def tell(self, rewards: list["float | None"]) -> None:
        """Rewards for `next_pulls()`, same order; None = the call failed (retried later or given up)."""
        rewards = list(rewards)
        if self.done:
            raise ValueError("the selection is finished; there are no pulls to reward")
        if len(rewards) != len(self._pending):
            raise ValueError(f"evaluate returned {len(rewards)} rewards for {len(self._pending)} pulls")
        self._advance(rewards)

    def result(self) -> BanditResult:
        if self._ranking is None:
            raise ValueError("the selection is not finished: answer next_pulls() first")
        return self._run.result(self.algorithm, self._ranking)

    def best(self, k: int = 1) -> list[int]:
        return self.result().best(k)


def select(
    algorithm: str,
    n_arms: int,
    n_examples: int,
    budget: int,
    evaluate: EvaluateBatch,
    *,
    seed: int = 0,
    c: float = 1.0,
    a: float | None = None,
    samples_per_eval: int = 8,
    arms_per_round: int = 2,
) -> BanditResult:
    """Rank ``n_arms`` prompts using at most ``budget`` pulls on ``n_examples`` training examples.

    ``c`` is UCB's exploration constant (ProTeGi's default 1.0); ``a`` is UCB-E's exploration
    parameter (default ``default_ucb_e_a``); ``samples_per_eval`` and ``arms_per_round`` shape the
    UCB / UCB-E rounds.  See the module docstring for the algorithms and sampling rules.
    A ``Bandit`` driven by the synchronous ``evaluate`` callback.
    """
    bandit = Bandit(algorithm, n_arms, n_examples, budget, seed=seed, c=c, a=a,
                    samples_per_eval=samples_per_eval, arms_per_round=arms_per_round)
    while pulls := bandit.next_pulls():
        bandit.tell(evaluate(pulls))
    return bandit.result()


def budget_for(algorithm: str, n_arms: int, n_examples: int | None = None, *, per_arm: int = 32,
               samples_per_eval: int = 8, arms_per_round: int = 2) -> int:
    """A sensible default budget: ``per_arm`` pulls per arm, raised to what ``algorithm`` needs to
    be meaningful, and capped at ``n_arms * n_examples`` (every arm on every example)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if n_arms <= 1:
        return 0
    K = n_arms
    need = {
        "brute-force": K,
        # 4 pulls per arm in every round / the first phase (ProTeGi's SR minimum is 4)
        "successive-halving": 4 * K * math.ceil(math.log2(K)),
        "successive-rejects": K + math.ceil(4 * K * (0.5 + sum(1.0 / i for i in range(2, K + 1)))),
        # every arm swept once, then as much again for the adaptive rounds
        "ucb": 2 * samples_per_eval * arms_per_round * math.ceil(K / arms_per_round),
    }
    need["ucb-e"] = need["ucb"]
    budget = max(per_arm * K, need[algorithm])
    return budget if n_examples is None else min(budget, K * n_examples)

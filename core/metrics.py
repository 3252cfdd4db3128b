"""Scores for one prompt (accuracy, macro-F1, Wilson interval) and a paired test for two (exact McNemar)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence


def accuracy(correct: Sequence[bool]) -> float:
    """Fraction of True values; 0.0 for an empty sequence."""
    return sum(1 for c in correct if c) / len(correct) if len(correct) else 0.0


def macro_f1(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str]) -> float:
    """Per-class F1 averaged over the labels that occur in gold or pred; a None prediction counts as wrong.

    Labels that never occur in either are skipped (as sklearn's default label set and PubMedQA's
    evaluation.py do), so a validation subset without any "maybe" is not penalised for it.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length ({len(gold)} vs {len(pred)})")
    scores = []
    for label in labels:
        tp = sum(1 for g, p in zip(gold, pred) if g == label and p == label)
        fp = sum(1 for g, p in zip(gold, pred) if g != label and p == label)
        fn = sum(1 for g, p in zip(gold, pred) if g == label and p != label)
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0.0, 1.0) when n == 0."""
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class McNemarResult:
    """Discordant pairs (b: only A right, c: only B right) and the exact two-sided p-value."""

    b: int
    c: int
    p_value: float


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test on paired correctness: p = min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2)."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f"paired results differ in length ({len(a_correct)} vs {len(b_correct)})")
    b = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0)
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return McNemarResult(b, c, min(1.0, 2 * tail / 2**n))


@dataclass
class PairedOutcomes:
    """Correctness of two prompts on the questions both answered; `dropped` pairs had a failed call on a side."""

    ids: list[str]
    a: list[bool]
    b: list[bool]
    dropped: int


def paired_outcomes(a: Mapping[str, bool | None], b: Mapping[str, bool | None]) -> PairedOutcomes:
    """Pair two outcome maps (None = the call failed) on their shared ids, dropping pairs where either side failed."""
    shared = [i for i in a if i in b]
    ids = [i for i in shared if a[i] is not None and b[i] is not None]
    return PairedOutcomes(ids, [bool(a[i]) for i in ids], [bool(b[i]) for i in ids], len(shared) - len(ids))


# Student's t 0.975 quantiles for 1..30 degrees of freedom (two-sided 95 %); beyond 30, a Cornish-Fisher expansion
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"need df >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass
class SampleSummary:
    """Mean, sample standard deviation (n - 1) and the 95 % t-interval of the mean, over n runs.
    sd and the interval are None for fewer than two runs; mean is None for none."""

    n: int
    mean: float | None
    sd: float | None
    ci95: tuple[float, float] | None

    def to_json(self) -> dict:
        r = (lambda x: None if x is None else round(x, 6))
        return {"n": self.n, "mean": r(self.mean), "sd": r(self.sd),
                "ci95": [r(self.ci95[0]), r(self.ci95[1])] if self.ci95 is not None else None}


def summarise(values: Sequence[float]) -> SampleSummary:
    """Summary of independent runs' scores: mean ± t(0.975, n-1) · sd / sqrt(n) (a t-interval over runs)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return SampleSummary(0, None, None, None)
    mean = sum(xs) / n
    if n == 1:
        return SampleSummary(1, mean, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return SampleSummary(n, mean, sd, (mean - half, mean + half))

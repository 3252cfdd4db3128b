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

"""Per-sentence blame: each sentence of a prompt version, with the step, gradient and failures that introduced it.

Pure: it reads only what a session already holds (its accepted `versions`, its `steps` with their proposals,
decisions, forward reports and gates, and lineage.verdicts of its `events` for overrides); no files, no models.
A sentence belongs to the first version of the accepted chain where it (whitespace-normalised) appears; the k-th copy of a repeated sentence to the first
version holding k copies; a sentence deleted and later re-added to the version that re-added it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence

from .lineage import verdicts


class BlameError(ValueError):
    """A version that cannot be blamed (out of range, no versions yet); the message is for the user."""


@dataclass
class Failure:
    """A minibatch question the gradient was computed from, and what the prompt answered."""

    id: str
    gold: str | None
    answer: str | None  # the parsed answer; None when unparsed or not recorded
    feedback: str | None = None  # TextGrad: the loss text on this answer


@dataclass
class SentenceBlame:
    """One sentence of a version, attributed to the step that introduced it."""

    text: str
    step: int  # 0 = the seed prompt
    version: int  # the version that introduced it
    origin: str  # "seed" | "person" (a hand edit) | the candidate's origin ("update", "edit", "paraphrase", ...)
    gradient: str | None = None  # the textual gradient behind the accepted candidate
    gradient_id: str | None = None
    candidate_id: str | None = None
    failures: list[Failure] = field(default_factory=list)
    delta_pts: float | None = None  # the step's gate: candidate minus current validation accuracy, in points
    override: bool = False  # accepted although the gate did not pass (the person's override)

    def to_json(self) -> dict:
        return asdict(self)


class SessionLike(Protocol):
    versions: Sequence[Any]  # .number, .prompt, .step, .origin
    steps: Sequence[Any]  # .index, .outcome, .decision, .proposal, .forward, .gate
    # optional: `events` (a list of event dicts), read only through lineage.verdicts for the override flag


_ABBREVIATIONS = {"e.g.", "i.e.", "etc.", "vs.", "cf.", "al.", "dr.", "mr.", "mrs.", "ms.", "no.", "fig.", "approx."}
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+")
_LIST_MARKER = re.compile(r"^\(?(\d{1,3}|[A-Za-z])[.)]$")  # "1." or "a)" starting a list item


def split_sentences(prompt: str) -> list[str]:
    """The prompt's sentences in order: every line break ends one, and so does . ! ? before a space
    (not after an abbreviation like "e.g." or a list marker like "1."); blank lines are dropped."""
    out: list[str] = []
    for line in str(prompt or "").splitlines():
        start = 0
        for m in _SENTENCE_END.finditer(line):
            piece = line[start:m.end()].strip()
            last = piece.split()[-1].lower() if piece else ""
            if last in _ABBREVIATIONS or _LIST_MARKER.match(piece):
                continue
            out.append(piece)
            start = m.end()
        rest = line[start:].strip()
        if rest:
            out.append(rest)
    return out


def normalise_sentence(sentence: str) -> str:
    """The sentence with runs of whitespace as one space, stripped: what attribution compares."""
    return " ".join(sentence.split())


def _introducers(versions: Sequence[Any], upto: int) -> dict[str, list[int]]:
    """For versions[0..upto]: per normalised sentence, the index of the version that introduced each copy."""
    owners: dict[str, list[int]] = {}
    for i, v in enumerate(versions[: upto + 1]):
        counts = Counter(normalise_sentence(s) for s in split_sentences(v.prompt))
        owners = {k: owners.get(k, [])[:c] for k, c in counts.items()}  # a sentence gone is forgotten
        for k, c in counts.items():
            owners[k] += [i] * (c - len(owners[k]))
    return owners


def _accepted_step(steps: Sequence[Any], index: int) -> Any | None:
    return next((st for st in reversed(steps) if st.index == index and st.outcome == "accepted"), None)


def _candidate(step: Any, cid: str | None) -> Any | None:
    prop = getattr(step, "proposal", None)
    if prop is None or not cid:
        return None
    return next((c for c in prop.candidates if c.id == cid), None)


def _gradient(step: Any, cand: Any) -> Any | None:
    """The gradient a candidate came from (a paraphrase through the edit it rephrases)."""
    by_id = {c.id: c for c in step.proposal.candidates}
    seen: set[str] = set()
    while cand is not None and cand.gradient_id is None and cand.source_id and cand.id not in seen:
        seen.add(cand.id)
        cand = by_id.get(cand.source_id)
    gid = cand.gradient_id if cand is not None else None
    return next((g for g in step.proposal.gradients if g.id == gid), None) if gid else None


def _failures(step: Any, grad: Any) -> list[Failure]:
    """The gradient's failure ids with gold and answer from the step's forward report on the prompt it criticises."""
    reports = list(getattr(step, "forward", None) or [])
    report = next((r for r in reports if r.prompt == grad.parent), reports[0] if reports else None)
    rows = {r.id: r for r in report.rows} if report is not None else {}
    feedback = grad.feedback if isinstance(grad.feedback, dict) else {}
    out = []
    for qid in grad.failure_ids:
        row = rows.get(qid)
        out.append(Failure(str(qid), row.gold if row else None, row.parsed if row else None, feedback.get(qid)))
    return out


def _delta_pts(step: Any, overrides: dict[int, bool] | None) -> tuple[float | None, bool]:
    """The gate's score change in points, and whether the person overrode it (from the recorded verdicts when
    known, else: accepted although the gate did not pass)."""
    g = getattr(step, "gate", None)
    if g is None:
        return None, False
    old, new = g.old_accuracy, g.new_accuracy
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (old, new))
    override = overrides.get(step.index, False) if overrides is not None else not g.passed
    return (round(100 * (new - old), 1) if ok else None), override


def _attribute(text: str, key: str, index: int, version: Any, steps: Sequence[Any],
               overrides: dict[int, bool] | None) -> SentenceBlame:
    if index == 0 or version.origin == "seed":
        return SentenceBlame(text, 0, index, "seed")
    st = _accepted_step(steps, version.step)
    if st is None:  # a version whose step is not recorded (an odd bundle): what the version says
        return SentenceBlame(text, version.step, index, "person" if version.origin == "edit" else version.origin)
    delta, override = _delta_pts(st, overrides)
    decision = st.decision or {}
    cand = _candidate(st, decision.get("candidate"))
    if decision.get("action") == "edit" and not (
            cand is not None and key in {normalise_sentence(s) for s in split_sentences(cand.prompt)}):
        return SentenceBlame(text, st.index, index, "person", delta_pts=delta, override=override)
    if cand is None:
        return SentenceBlame(text, st.index, index, version.origin, delta_pts=delta, override=override)
    grad = _gradient(st, cand)
    return SentenceBlame(text, st.index, index, cand.origin, grad.text if grad else None, grad.id if grad else None,
                         cand.id, _failures(st, grad) if grad else [], delta, override)


def blame(session: SessionLike, version: int | None = None) -> list[SentenceBlame]:
    """Each sentence of version `version` (the current one when None), in order, with the step that introduced it."""
    versions = list(session.versions)
    if not versions:
        raise BlameError("This session has no prompt versions yet: score the seed prompt first.")
    n = len(versions) - 1 if version is None else version
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < len(versions):
        raise BlameError(f"There is no version {version!r}: this session has versions 0 to {len(versions) - 1}.")
    while getattr(versions[n], "reverted_to", None) is not None:  # a revert: blamed as the version it restores
        n = versions[n].reverted_to
    owners = _introducers(versions, n)
    events = getattr(session, "events", None)
    overrides = {i: v.override for i, v in verdicts(events).items()} if isinstance(events, list) else None
    seen: Counter = Counter()
    out = []
    for text in split_sentences(versions[n].prompt):
        key = normalise_sentence(text)
        index = owners[key][seen[key]]
        seen[key] += 1
        out.append(_attribute(text, key, index, versions[index], session.steps, overrides))
    return out

"""What the person marks on a session: disputed gold labels (or excluded questions) and locked sentences.

Pure helpers over recorded data (no files, no models): the fold (core/state.py) keeps the marks, the step
runner and the meta-prompts read them, History and the report show them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .blame import normalise_sentence, split_sentences
from .evaluate import EvalReport


@dataclass
class Dispute:
    """One 'label_disputed' event: the question, why, whether it is excluded, and when (the step then open or next)."""

    question: str
    reason: str
    exclude: bool
    step: int
    ts: float | None = None


def excluded_ids(disputes: list[Dispute]) -> set[str]:
    """Questions whose latest dispute excludes them."""
    latest = {d.question: d for d in disputes}
    return {q for q, d in latest.items() if d.exclude}


def disputed_ids(disputes: list[Dispute]) -> set[str]:
    """Questions whose latest dispute keeps them in (the label is disputed, not excluded)."""
    latest = {d.question: d for d in disputes}
    return {q for q, d in latest.items() if not d.exclude}


@dataclass
class GateWithout:
    """A gate's accuracies on every question it asked, and without the excluded ones it asked."""

    excluded_asked: list[str]  # excluded questions this gate's reports hold (asked before they were excluded)
    old_with: float
    new_with: float
    old_without: float | None  # None: every question it asked is now excluded
    new_without: float | None
    n_with: int
    n_without: int


def _without(rep: EvalReport, drop: set[str]) -> EvalReport:
    return EvalReport(rep.prompt, [r for r in rep.rows if r.id not in drop], list(rep.labels))


def gate_with_without(current: EvalReport | None, candidate: EvalReport | None,
                      excluded: set[str]) -> GateWithout | None:
    """The gate's scores with and without the excluded questions; None when its reports hold none of them."""
    if current is None or candidate is None:
        return None
    asked = sorted({r.id for r in candidate.rows} & excluded)
    if not asked:
        return None
    cur, new = _without(current, excluded), _without(candidate, excluded)
    return GateWithout(asked, current.accuracy, candidate.accuracy, cur.accuracy if cur.rows else None,
                       new.accuracy if new.rows else None, len(candidate.rows), len(new.rows))


# ---------------------------------------------------------------- locked sentences


def sentence_numbers(prompt: str, numbers: list[int]) -> list[str]:
    """The sentences numbered `numbers` (from 1) of the prompt; ValueError names a number out of range."""
    sentences = split_sentences(prompt)
    for n in numbers:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(sentences):
            raise ValueError(f"There is no sentence {n!r:.20}: the current prompt has sentences 1 to "
                             f"{len(sentences)}." if sentences else "The current prompt has no sentences.")
    return [sentences[n - 1] for n in numbers]


def active_locks(locked: list[str], prompt: str) -> list[tuple[int, str]]:
    """(number, sentence) of the prompt's sentences that are locked, in prompt order."""
    keys = set(locked)
    return [(n, s) for n, s in enumerate(split_sentences(prompt), 1) if normalise_sentence(s) in keys]


def broken_locks(prompt: str, locks: list[str]) -> list[str]:
    """The locked sentences (texts) that the prompt does not keep verbatim (whitespace-normalised)."""
    have = {normalise_sentence(s) for s in split_sentences(prompt)}
    return [s for s in locks if normalise_sentence(s) not in have]


def lock_flag(sentence: str) -> str:
    """The candidate flag for a changed locked sentence (the badge shows the part before the colon)."""
    short = sentence if len(sentence) <= 80 else sentence[:79] + "…"
    return f"changes locked sentence: {short}"


def locked_block(locks: list[str], parent: str) -> str:
    """The meta-prompts' {locked} text: the locked sentences the parent prompt holds, or "" (then the rendered
    prompt is byte-identical to one without locks)."""
    keys = {normalise_sentence(s) for s in locks}
    held = [s for s in split_sentences(parent) if normalise_sentence(s) in keys]
    if not held:
        return ""
    body = "\n".join(f"- {s}" for s in held)
    return ("A person locked these sentences of the current prompt: every new prompt must contain each of them "
            f"verbatim, word for word:\n<LOCKED>\n{body}\n</LOCKED>\n\n")

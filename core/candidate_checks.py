"""Candidate checks, before anyone pays to validate: degenerate spans are dropped; candidates that break a
mechanical constraint (word / character limits) or contain a task question's text are flagged."""

from __future__ import annotations

import re

from .lineage import Candidate, Proposal
from .person_marks import broken_locks, lock_flag
from .meta_prompts import LEGACY_TEMPLATES, TEMPLATES
from .tasks import Task

MIN_WORDS = 3  # fewer words than this is a fragment, not a prompt ("and", "Output:")
LEAK_WORDS = 12  # a shared run of this many words means the candidate copies a question
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}
_WORD = re.compile(r"[\w']+")
_LIMIT = re.compile(r"\b(under|below|fewer than|less than|at most|no more than|not more than|maximum of|max\.?|"
                    r"up to|within)\s+(\d[\d,]*)\s+(words?|characters?|chars?)\b", re.I)
_STRICT = ("under", "below", "fewer than", "less than")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _meta_wording() -> str:
    texts = [t.system + " " + t.user for t in TEMPLATES.values()]
    texts += [t.system + " " + t.user for v in LEGACY_TEMPLATES.values() for t in v.values()]
    return " " + " ".join(" ".join(_words(re.sub(r"\{\w+\}", " ", t))) for t in texts) + " "


_META = _meta_wording()


def degenerate(text: str) -> str | None:
    """Why a span is not a prompt at all (too short, or a piece of the meta-prompt's own wording), or None."""
    words = _words(text)
    if len(words) < MIN_WORDS:
        return f"only {len(words)} word{'s' if len(words) != 1 else ''}"
    if f" {' '.join(words)} " in _META:
        return "a fragment of the optimiser's own instructions"
    return None


def broken_constraints(text: str, constraints: list[str]) -> list[str]:
    """The word and character limits among `constraints` that the text breaks, as flags."""
    out = []
    for c in constraints:
        for m in _LIMIT.finditer(c):
            limit = int(m.group(2).replace(",", ""))
            unit = "words" if m.group(3).lower().startswith("word") else "characters"
            n = len(text.split()) if unit == "words" else len(text)
            over = n >= limit if m.group(1).lower() in _STRICT else n > limit
            if over:
                out.append(f"breaks constraint: {c.strip()} ({n} {unit})")
    return out


def _shingles(words: list[str]) -> set[int]:
    return {hash(tuple(words[i:i + LEAK_WORDS])) for i in range(len(words) - LEAK_WORDS + 1)}


def _index(task: Task) -> dict[str, set[int]]:
    idx = getattr(task, "_leak_index", None)
    if idx is None:
        idx = {}
        for split, examples in task.splits.items():
            sh: set[int] = set()
            for ex in examples:
                sh |= _shingles(_words("\n".join(str(v) for v in ex.inputs.values())))
            idx[split] = sh
        object.__setattr__(task, "_leak_index", idx)
    return idx


def leaked_splits(text: str, task: Task) -> list[str]:
    """Splits ("train", "val", "test") with a question sharing LEAK_WORDS consecutive words with the text."""
    mine = _shingles(_words(text))
    if not mine:
        return []
    return [split for split, sh in _index(task).items() if mine & sh]


def review(prop: Proposal, task: Task, constraints: list[str] | None = None,
           locked: list[str] | None = None) -> Proposal:
    """Drop degenerate candidates (saying so in the note) and flag the rest (constraints, leaks, changed
    locked sentences); returns the proposal."""
    kept: list[Candidate] = []
    dropped = []
    for c in prop.candidates:
        why = degenerate(c.prompt)
        if why:
            dropped.append(f"'{c.prompt[:40]}' ({why})")
            continue
        for flag in broken_constraints(c.prompt, constraints or []):
            if flag not in c.flags:
                c.flags.append(flag)
        c.leaks = leaked_splits(c.prompt, task)
        for split in c.leaks:
            flag = f"leaks {SPLIT_NAMES.get(split, split)} data"
            if flag not in c.flags:
                c.flags.append(flag)
        for sentence in broken_locks(c.prompt, locked or []):
            if lock_flag(sentence) not in c.flags:
                c.flags.append(lock_flag(sentence))
        kept.append(c)
    prop.candidates = kept
    if dropped:
        msg = f"Not candidates (degenerate spans): {', '.join(dropped)}."
        prop.note = f"{prop.note} {msg}" if prop.note else msg
    return prop

"""The sealed test split and the held-out confirmation slice: scoring prompt versions on them, on request,
recorded in the session log ('test_revealed', 'confirmation_scored'), and what the log says about it.

Scoring on test is a reveal: it needs an explicit reveal=True and is logged with the versions looked at;
every step decided after the first reveal is marked "chosen after looking at test". The confirmation slice
(split version 2 of the built-in tasks) is never used by any gate: its scores beside validation show overfitting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

from .evaluate import EvalReport, aevaluate
from .llm import ChatModel, Completion
from .progress import JobProgress, Spend
from .runner import CancelToken, Runner, run_job
from .session import Session, SessionError
from .tasks import Example, Task

SEALED_SPLIT = "test"
CONFIRMATION_SPLIT = "confirmation"
TEST_REVEALED = "test_revealed"
CONFIRMATION_SCORED = "confirmation_scored"
EVENT_TYPES = (TEST_REVEALED, CONFIRMATION_SCORED)
AFTER_TEST = "chosen after looking at test"
SEALED_MESSAGE = ("The test split is sealed: scoring on it is a reveal, recorded in the session log, and every step "
                  "decided after it is marked as chosen after looking at test")


class TestSealed(SessionError):
    """Scoring on the test split was asked for without the explicit reveal."""

    __test__ = False  # not a pytest class


@dataclass
class Entry:
    """One prompt to score: a session version (version = its number) or a baseline (version None)."""

    name: str
    prompt: str
    version: int | None = None


def evaluate_entries(entries: list[Entry], examples: list[Example], model: ChatModel, *, task: Task, runner: Runner,
                     on_progress: "Callable[[str, JobProgress], None] | JobProgress | None" = None,
                     cancel: CancelToken | None = None, phase: str = "test",
                     max_tokens: int | None = None) -> dict[str, EvalReport]:
    """Every prompt on the same examples, concurrently, as one job with ONE counter (no logging: see score_split).
    `on_progress` is a callback (phase, JobProgress) or the job's own JobProgress."""
    kw = {} if max_tokens is None else {"max_tokens": max_tokens}
    if isinstance(on_progress, JobProgress):
        job = on_progress
    else:
        job = JobProgress(listener=(lambda jp: on_progress(jp.phase, jp)) if on_progress else None)
    job.plan(phase, len(entries) * len(examples))

    async def go() -> list[EvalReport]:
        return await asyncio.gather(*(aevaluate(e.prompt, examples, model, task=task, runner=runner, cancel=cancel,
                                                job=job, phase=phase, **kw) for e in entries))

    reports = run_job(go, model)
    return {e.name: r for e, r in zip(entries, reports)}


def version_entries(session: Session, numbers: list[int]) -> list[Entry]:
    """Entries for session versions by number; SessionError naming the first unknown one."""
    out = []
    for n in numbers:
        if not isinstance(n, int) or not 0 <= n < len(session.versions):
            raise SessionError(f"Version {n} does not exist; this session has v0 to v{len(session.versions) - 1}.")
        v = session.versions[n]
        out.append(Entry(f"v{v.number}", v.prompt, v.number))
    return out


def spend_of(reports: dict[str, EvalReport]) -> Spend:
    """What the scoring cost, by the ledger's rules (`Spend.add` on each row's call)."""
    sp = Spend()
    for rep in reports.values():
        for r in rep.rows:
            sp.add(Completion(error=r.error, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                              cost_usd=r.cost_usd, cached=r.cached))
    return sp


def score_split(session: Session, entries: list[Entry], split: str, *, limit: int | None = None, reveal: bool = False,
                on_progress: "Callable[[str, JobProgress], None] | JobProgress | None" = None,
                cancel: CancelToken | None = None) -> dict[str, EvalReport]:
    """Score entries on a split with the session's forward model. Test needs reveal=True; test and confirmation
    scores are logged (the event is the record that they were looked at), so a read-only session refuses them."""
    if split == SEALED_SPLIT and not reveal:
        raise TestSealed(SEALED_MESSAGE + "; reveal it explicitly to score on it.")
    logged = split in (SEALED_SPLIT, CONFIRMATION_SPLIT)
    if logged and (session.readonly or session._log is None):
        raise SessionError(f"This session is open read-only, so scoring on {split} cannot be recorded; "
                           "open it for writing first.")
    if not entries:
        raise SessionError("Choose at least one prompt to score.")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise SessionError(f"The question limit must be a whole number >= 0 (0 = all), got {limit!r}.")
    if split not in session.task.splits:
        raise SessionError(f"This task has no {split} split"
                           + (" (built-in tasks carve one from split version 2; custom files have none)."
                              if split == CONFIRMATION_SPLIT else "."))
    examples = session.task.split(split)
    if limit:
        examples = examples[:limit]
    if not examples:
        raise SessionError(f"This task has no {split} questions.")
    if session.models is None:
        raise SessionError("No models are connected to this session.")
    m = session.models
    reports = evaluate_entries(entries, examples, m.forward, task=session.task, runner=m.runner,
                               on_progress=on_progress, cancel=cancel, phase=split,
                               max_tokens=session.config.forward_max_tokens)
    answered = [r for rep in reports.values() for r in rep.rows if not r.error]
    if logged and answered:  # nothing answered = nothing seen: no event
        scores = [{"name": e.name, "version": e.version, **{k: reports[e.name].summary()[k] for k in
                                                             ("accuracy", "correct", "n", "errors")}}
                  for e in entries]
        keys = [r.key for rep in reports.values() for r in rep.rows if r.key]
        session._emit({"type": TEST_REVEALED if split == SEALED_SPLIT else CONFIRMATION_SCORED, "split": split,
                       "versions": [e.version for e in entries if e.version is not None],
                       "baselines": [e.name for e in entries if e.version is None], "n": len(examples),
                       "scores": scores, "cancelled": any(r.cancelled for r in reports.values()),
                       "spend": spend_of(reports).to_json(), "keys": keys})
    return reports


# ---------------------------------------------------------------- what the log says


def reveals(session: Session) -> list[dict]:
    """The 'test_revealed' events, oldest first."""
    return [ev for ev in session.events if ev.get("type") == TEST_REVEALED]


def steps_after_reveal(session: Session) -> set[int]:
    """Indexes of the steps with a decision or gate event after the first look at test."""
    out: set[int] = set()
    seen = False
    for ev in session.events:
        t = ev.get("type")
        if t == TEST_REVEALED:
            seen = True
        elif seen and t in ("decision", "gate") and isinstance(ev.get("step"), int):
            out.add(ev["step"])
    return out


def reveal_summary(session: Session) -> str:
    """One sentence: how often test was looked at, which versions, and which steps came after."""
    evs = reveals(session)
    if not evs:
        return "Test split: sealed, never looked at."
    versions = sorted({v for ev in evs for v in ev.get("versions", []) if isinstance(v, int)})
    after = sorted(steps_after_reveal(session))
    shown = ", ".join(f"v{v}" for v in versions) or "baselines only"
    text = f"Test split looked at {len(evs)} time(s) ({shown})"
    return text + (f"; steps {AFTER_TEST}: {', '.join(map(str, after))}." if after else
                   "; no step was decided after that.")


@dataclass
class ConfirmationRow:
    """One version: its validation accuracy beside its latest confirmation-slice accuracy (None: not scored)."""

    version: int
    step: int
    origin: str
    val_accuracy: float
    val_n: int
    confirmation_accuracy: float | None = None
    confirmation_n: int = 0

    @property
    def gap(self) -> float | None:
        """Validation minus confirmation accuracy: a gap that widens over versions is overfitting to validation."""
        return None if self.confirmation_accuracy is None else self.val_accuracy - self.confirmation_accuracy


def confirmation_rows(session: Session) -> list[ConfirmationRow]:
    """Every version (the seed and each accepted one) with its latest recorded confirmation score."""
    latest: dict[int, dict] = {}
    for ev in session.events:
        if ev.get("type") == CONFIRMATION_SCORED:
            for sc in ev.get("scores", []):
                if (isinstance(sc, dict) and isinstance(sc.get("version"), int)
                        and isinstance(sc.get("accuracy"), (int, float)) and isinstance(sc.get("n", 0), int)):
                    latest[sc["version"]] = sc
    rows = []
    for v in session.versions:
        sc = latest.get(v.number)
        rows.append(ConfirmationRow(v.number, v.step, v.origin, v.accuracy, v.report.n,
                                    None if sc is None else float(sc["accuracy"]),
                                    0 if sc is None else int(sc.get("n", 0))))
    return rows

"""The session log's events: one dataclass per event type, the one registry of their names and field types,
the schema version and the migrations that bring an older log up to it.

A log's schema is the `schema` of its first ('created') event; a log written before versions has none and is
schema 1. Reading runs MIGRATIONS[n - 1] for every n from the log's schema up to SCHEMA_VERSION. Files are
never rewritten: events appended to an older log are written in the current schema, so a migration must leave
events already in the newer form unchanged. A bundle's content hashes are checked on the events as exported,
before any migration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from .bundle_schema import (BOOL, COUNT, GATE_RESULT, LOOK, OSTR, PROPOSAL, REAL, REPORT, SPEND, STR, STRS, ListOf,
                            MapOf, NUM, OneOf, Opt, Record, SchemaError, Spec, _what)

SCHEMA_VERSION = 2
ANY = Spec()


def _f(spec: Spec, default: Any = dataclasses.MISSING) -> Any:
    """A field with its JSON type; a field with a default is optional in the log."""
    if default is dataclasses.MISSING:
        return field(metadata={"spec": spec})
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


@dataclass(kw_only=True)
class Event:
    """Fields every event may carry: when it was written, what its calls cost, the cache keys they used."""

    type: ClassVar[str] = ""
    ts: float | None = _f(REAL, None)
    spend: dict | None = _f(SPEND, None)
    keys: list[str] | None = _f(STRS, None)

    def to_json(self) -> dict:
        """The log line's object: type first, then ts, the event's own fields, spend and keys. A field that is
        None and whose type does not allow null is left out."""
        out: dict[str, Any] = {"type": self.type}
        names = [f for f in dataclasses.fields(self) if f.name not in _COMMON] + \
            [f for f in dataclasses.fields(self) if f.name in _COMMON]
        names.sort(key=lambda f: 0 if f.name == "ts" else 1)
        for f in names:
            v = getattr(self, f.name)
            if v is None and not isinstance(f.metadata["spec"], Opt):
                continue
            out[f.name] = v
        return out


_COMMON = ("ts", "spend", "keys")


@dataclass(kw_only=True)
class Created(Event):
    type: ClassVar[str] = "created"
    config: dict = _f(ANY)  # checked field by field by bundle_schema.check_config and SessionConfig.check
    id: str | None = _f(STR, None)
    schema: int | None = _f(COUNT, None)
    imported: dict | None = _f(ANY, None)  # written by import_bundle, never by the bundle itself


@dataclass(kw_only=True)
class Repointed(Event):
    type: ClassVar[str] = "repointed"
    forward: str | None = _f(STR, None)
    forward_base_url: str | None = _f(OSTR, None)
    backward: str | None = _f(STR, None)
    backward_base_url: str | None = _f(OSTR, None)
    prices: dict | None = _f(MapOf(ListOf(NUM, 2)), None)


@dataclass(kw_only=True)
class Baseline(Event):
    type: ClassVar[str] = "baseline"
    prompt: str = _f(STR)
    report: dict = _f(REPORT)


@dataclass(kw_only=True)
class StepStarted(Event):
    type: ClassVar[str] = "step_started"
    step: int = _f(COUNT)
    attempt: int = _f(COUNT)
    parent_version: int = _f(COUNT)
    beam: list[str] = _f(STRS)
    minibatch_ids: list[str] = _f(STRS)


@dataclass(kw_only=True)
class Forward(Event):
    type: ClassVar[str] = "forward"
    step: int = _f(COUNT)
    reports: list[dict] = _f(ListOf(REPORT))


@dataclass(kw_only=True)
class ProposalMade(Event):
    type: ClassVar[str] = "proposal"
    step: int = _f(COUNT)
    proposal: dict = _f(PROPOSAL)


@dataclass(kw_only=True)
class ProposalRetried(Event):
    """The open step's proposal again, its failed calls re-sent (same minibatch, samples and seeds: the calls
    that had succeeded come from the cache); it replaces the step's proposal."""

    type: ClassVar[str] = "proposal_retried"
    step: int = _f(COUNT)
    attempt: int = _f(COUNT)
    retried: int = _f(COUNT)  # how many failed calls were sent again
    proposal: dict = _f(PROPOSAL)


@dataclass(kw_only=True)
class Reverted(Event):
    """The person reverted the session to an earlier version: a new version with that version's prompt."""

    type: ClassVar[str] = "reverted"
    to_version: int = _f(COUNT)


@dataclass(kw_only=True)
class Decision(Event):
    type: ClassVar[str] = "decision"
    ACTIONS: ClassVar[tuple[str, ...]] = ("accept", "edit", "reject", "skip")
    step: int = _f(COUNT)
    action: str = _f(OneOf(ACTIONS))
    candidate: str | None = _f(OSTR, None)
    prompt: str | None = _f(OSTR, None)
    override: bool | None = _f(BOOL, None)  # True: taken although it changes a locked sentence


@dataclass(kw_only=True)
class Validation(Event):
    type: ClassVar[str] = "validation"
    step: int = _f(COUNT)
    candidate_report: dict = _f(REPORT)
    current_report: dict = _f(REPORT)
    gate: dict = _f(GATE_RESULT)


@dataclass(kw_only=True)
class Gate(Event):
    type: ClassVar[str] = "gate"
    step: int = _f(COUNT)
    verdict: bool = _f(BOOL)
    accepted: bool = _f(BOOL)
    override: bool | None = _f(BOOL, None)


@dataclass(kw_only=True)
class Auto(Event):
    type: ClassVar[str] = "auto"
    steps: int | None = _f(Opt(COUNT))  # None: the automatic run is over
    policy: str | None = _f(STR, None)


@dataclass(kw_only=True)
class Stopped(Event):
    type: ClassVar[str] = "stopped"
    reason: str = _f(STR)


@dataclass(kw_only=True)
class SpendOnly(Event):
    """Calls paid for by a phase that stopped part-way, or the one-second interim flush of a running phase."""

    type: ClassVar[str] = "spend"
    spend: dict = _f(SPEND)
    step: int | None = _f(COUNT, None)
    phase: str | None = _f(STR, None)
    reason: str | None = _f(STR, None)


@dataclass(kw_only=True)
class TestRevealed(Event):
    """A scoring on the sealed test split (the record that it was looked at)."""

    type: ClassVar[str] = "test_revealed"
    __test__ = False  # not a pytest class
    split: str = _f(STR)
    versions: list[int] = _f(ListOf(COUNT))
    baselines: list[str] = _f(STRS, [])
    n: int | None = _f(COUNT, None)
    scores: list[dict] = _f(LOOK.optional["scores"], [])
    cancelled: bool | None = _f(BOOL, None)


@dataclass(kw_only=True)
class ConfirmationScored(TestRevealed):
    """A scoring on the held-out confirmation slice (never used by a gate)."""

    type: ClassVar[str] = "confirmation_scored"


@dataclass(kw_only=True)
class LabelDisputed(Event):
    """The person disputes a question's gold label (with a reason), or excludes the question from minibatches
    and gates from now on (`exclude`); the data is never changed. A later one for the question replaces it."""

    type: ClassVar[str] = "label_disputed"
    question: str = _f(STR)
    reason: str = _f(STR)
    exclude: bool = _f(BOOL)


@dataclass(kw_only=True)
class SentencesLocked(Event):
    """Sentences of the current prompt (version `version`, numbered from 1 as core/blame.split_sentences splits
    it) that every candidate must keep verbatim."""

    type: ClassVar[str] = "sentences_locked"
    version: int = _f(COUNT)
    numbers: list[int] = _f(ListOf(COUNT))
    sentences: list[str] = _f(STRS)


@dataclass(kw_only=True)
class SentencesUnlocked(SentencesLocked):
    type: ClassVar[str] = "sentences_unlocked"


EVENT_CLASSES: tuple[type[Event], ...] = (Created, Repointed, Baseline, StepStarted, Forward, ProposalMade, Decision,
                                          Validation, Gate, Auto, Stopped, SpendOnly, TestRevealed, ConfirmationScored,
                                          ProposalRetried, Reverted, LabelDisputed, SentencesLocked,
                                          SentencesUnlocked)
BY_TYPE: dict[str, type[Event]] = {c.type: c for c in EVENT_CLASSES}

# the names, for code that reads events as dicts
CREATED, REPOINTED, BASELINE, STEP_STARTED, FORWARD, PROPOSAL_MADE, DECISION, VALIDATION, GATE, AUTO, STOPPED, \
    SPEND, TEST_REVEALED, CONFIRMATION_SCORED, PROPOSAL_RETRIED, REVERTED, LABEL_DISPUTED, SENTENCES_LOCKED, \
    SENTENCES_UNLOCKED = (c.type for c in EVENT_CLASSES)
PERSON_MARKS = (LABEL_DISPUTED, SENTENCES_LOCKED, SENTENCES_UNLOCKED)  # what the person marks between phases


def _record(cls: type[Event]) -> Record:
    req, opt = {}, {}
    for f in dataclasses.fields(cls):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        (opt if has_default else req)[f.name] = f.metadata["spec"]
    return Record(req, opt)


EVENTS: dict[str, Record] = {t: _record(c) for t, c in BY_TYPE.items()}  # the field types, by event type


def check(ev: Any, where: str = "") -> None:
    """One event against its type's fields; SchemaError names the first field that is off."""
    if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
        raise SchemaError("it is not an event (no 'type')")
    if ev["type"] not in EVENTS:
        raise SchemaError(f"its type '{ev['type'][:40]}' is not a known event type")
    EVENTS[ev["type"]].check(ev, where)
    if ev["type"] == DECISION and ev["action"] in ("accept", "edit") and not isinstance(ev.get("prompt"), str):
        raise SchemaError(f"{_dot(where, 'prompt')} must be text for an '{ev['action']}' decision, "
                          f"not {_what(ev.get('prompt'))}")


def _dot(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse(ev: dict) -> Event:
    """The typed event of a checked dict (fields it does not know are left out)."""
    cls = BY_TYPE[ev["type"]]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in ev.items() if k in names})


# ---------------------------------------------------------------- schema versions


def _v1_to_v2(events: list[dict]) -> list[dict]:
    """Schema 2 stamps the schema on 'created' and records the template version in every config (a config
    written before template versions ran version 1)."""
    first = events[0]
    cfg = first.get("config")
    if isinstance(cfg, dict) and "template_version" not in cfg:
        cfg = {**cfg, "template_version": 1}
    return [{**first, "config": cfg, "schema": 2}] + events[1:]


MIGRATIONS: list[Callable[[list[dict]], list[dict]]] = [_v1_to_v2]  # MIGRATIONS[n - 1]: schema n -> n + 1
assert len(MIGRATIONS) == SCHEMA_VERSION - 1


def schema_of(events: list[dict]) -> int:
    """The schema a log or bundle was written in (1 when its first event carries none)."""
    s = events[0].get("schema", 1) if events and isinstance(events[0], dict) else 1
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise SchemaError(f"its event schema {s!r:.40} is not a version number")
    if s > SCHEMA_VERSION:
        raise SchemaError(f"it was written by a newer Prompt Gradient Studio (event schema {s}; this version reads "
                          f"schema 1 to {SCHEMA_VERSION}): update the app to open it")
    return s


def upgrade(events: list[dict]) -> list[dict]:
    """The events in the current schema (the input is not changed); SchemaError for a newer one."""
    for n in range(schema_of(events), SCHEMA_VERSION):
        events = MIGRATIONS[n - 1](events)
    return events

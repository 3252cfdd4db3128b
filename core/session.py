"""A tuning session: the facade over its event log, its state and its step runner.

    core/events.py      the event types (one registry), schema version and migrations
    core/event_log.py   events.jsonl: append + fsync, process and thread locks, torn-tail repair, read
    core/state.py       fold(events, task) -> SessionState, pure
    core/estimate.py    calls and cost of the next phase, budget checks
    core/step_runner.py the phases and the events they write (one step's whole data flow)

Every mutation goes through `Session.emit`, under one lock: it writes the event (fsynced before it returns,
so a crash loses at most the call in flight and `Session.open` resumes exactly) and folds it into the state.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from . import estimate
from . import events as E
from . import paths
from . import person_marks as marks
from .bundle_schema import SchemaError
from .config import (DEFAULT_PRESET, METHODS, PRESETS, BudgetExceeded, SessionConfig, SessionError,  # noqa: F401
                     SessionLocked, UnpricedBudget, default_policy, price_key)
from .engine import PhaseProgress, StepContext
from .event_log import EventLog
from .gate import GateResult
from .llm import OLLAMA_BASE_URL, LLMError, parse_spec
from .runner import CancelToken
from .state import EventDoesNotFit, SessionState, Step, Version, apply, compact_report, fold  # noqa: F401 - re-exported
from .step_runner import Models, StepRunner, hash_seed, make_engine  # noqa: F401
from .tasks import Example, Task, TaskError, task_from_spec
from .textgrad import MemoryItem

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


def sessions_root(root: Path | str | None = None) -> Path:
    """The sessions folder given, else the default one (core/paths.py), looked up now."""
    return Path(root) if root is not None else paths.sessions_dir()


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def load_session_task(spec: dict, folder: Path, content: bytes | None = None) -> Task:
    """The task a session's spec names (a custom file from `folder` unless `content`); SessionError if it cannot load."""
    try:
        return task_from_spec(spec, folder, content)
    except (TaskError, OSError) as exc:
        raise SessionError(f"Cannot load the session's task: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SessionError(f"The session's task settings {spec!r:.200} are invalid ({type(exc).__name__}: {exc}).") from None


class Session:
    """Open with `Session.create` or `Session.open`; one writer at a time (a file lock between processes, a
    lock around every event inside one)."""

    def __init__(self, root: Path, sid: str, readonly: bool = False):
        self.root, self.id, self.readonly = Path(root), sid, readonly
        self.dir = self.root / sid
        self.log = EventLog(self.dir, sid)
        self.folded = SessionState()  # what the events add up to
        self.models: Models | None = None  # the session's own models (CLI, tests); app jobs pass theirs
        self.warnings: list[str] = []
        self.lock = threading.RLock()  # every mutation: emit, and decisions that read then write
        self.runner = StepRunner(self)

    # ---------- the state, as attributes ----------
    config = property(lambda self: self.folded.config)
    task = property(lambda self: self.folded.task)
    versions = property(lambda self: self.folded.versions)
    steps = property(lambda self: self.folded.steps)
    spend = property(lambda self: self.folded.spend)
    stopped = property(lambda self: self.folded.stopped)
    auto = property(lambda self: self.folded.auto)
    bundle_events = property(lambda self: self.folded.bundle_events)
    servers_confirmed = property(lambda self: self.folded.servers_confirmed)
    events = property(lambda self: self.folded.events)
    disputes = property(lambda self: self.folded.disputes)

    @property
    def current(self) -> Version:
        return self.folded.current

    @property
    def step(self) -> Step | None:
        return self.folded.step

    @property
    def state(self) -> str:
        """new | ready | stopped | started | proposed | decided | validated."""
        return self.folded.status

    @property
    def next_step_index(self) -> int:
        return self.folded.next_step_index

    def val_examples(self) -> list[Example]:
        return self.folded.val_examples()

    def rejections_in_a_row(self) -> int:
        return self.folded.rejections_in_a_row()

    def beam(self) -> list[str]:
        return self.folded.beam()

    def memory(self) -> list[MemoryItem]:
        return self.folded.memory()

    def heldout_leaks(self, prompt: str) -> list[str]:
        return self.folded.heldout_leaks(prompt)

    def servers_when(self, kind: str, step: int | None = None, attempt: int | None = None) -> tuple[tuple, tuple]:
        return self.folded.servers_when(kind, step, attempt)

    # ---------- files ----------
    @property
    def events_path(self) -> Path:
        return self.log.path

    @property
    def writable(self) -> bool:
        return not self.readonly and self.log.writable

    @property
    def _log(self) -> EventLog | None:  # read by core/testlock.py: None when this session cannot write
        return self.log if self.writable else None

    def _acquire(self) -> None:
        self.log.acquire()

    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def emit(self, event: E.Event | dict) -> dict:
        """Write one event and fold it into the state, under the session's lock; returns it as logged."""
        d = event.to_json() if isinstance(event, E.Event) else dict(event)
        with self.lock:
            if not self.writable:
                raise SessionError("This session is open read-only.")
            logged = self.log.append(d, check=self._refuse_malformed)
            apply(self.folded, logged, checked=True)
            return logged

    _emit = emit  # the name core/testlock.py calls

    def _refuse_malformed(self, ev: dict) -> None:
        try:
            E.check(ev)
        except SchemaError as exc:
            raise SessionError(f"Refused to write a malformed '{str(ev.get('type'))[:40]}' event ({exc}).") from None

    # ---------- construction ----------
    @classmethod
    def create(cls, config: SessionConfig, *, root: Path | str | None = None, models: Models | None = None,
               data: tuple[str, bytes] | None = None, sid: str | None = None, offline: bool = False,
               price_overrides: dict | None = None) -> "Session":
        """Check config, snapshot its prices, load the task (custom data is copied into the session folder),
        log 'created'. `offline` (replay) keeps the recorded config and skips checking the model providers."""
        config.check(check_models=not offline)
        if not offline:
            config = replace(config, prices=config.snapshot_prices(price_overrides))
            config.check_budget_priced()  # before anything is written or paid
        sid = sid or new_session_id()
        if not _ID.match(sid):
            raise SessionError(f"'{sid}' is not a session id.")
        s = cls(sessions_root(root), sid)
        if s.events_path.exists():
            raise SessionError(f"Session {sid} already exists.")
        fresh = not s.dir.exists()
        cfg = asdict(config)
        if not isinstance(cfg["task"], dict):
            raise SessionError("The session's task must be a mapping like {\"name\": \"pubmedqa\"}.")
        if data is not None:
            name, content = data
            safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", os.path.basename(name))[:80] or "data.csv"
            cfg["task"] = {**cfg["task"], "file": safe}
            task = load_session_task(cfg["task"], s.dir, content)  # checked before anything is written
            try:
                s.dir.mkdir(parents=True, exist_ok=True)
                (s.dir / safe).write_bytes(content)
            except OSError as exc:
                raise SessionError(f"Cannot write the session folder {s.dir} ({type(exc).__name__}: "
                                   f"{exc.strerror or exc}).") from None
        elif "file" in cfg["task"]:
            raise SessionError("The session's task reads a data file, but no data was given.")
        else:
            task = load_session_task(cfg["task"], s.dir)  # a task that cannot load writes nothing
        try:
            s._acquire()
            s.models = models
            s.folded = SessionState(task=task)
            s.emit(E.Created(id=sid, config=cfg, schema=E.SCHEMA_VERSION))
        except (SessionError, OSError) as exc:  # a full or read-only disk leaves no half-made session behind
            s.close()
            if fresh and not isinstance(exc, SessionLocked):
                import shutil

                shutil.rmtree(s.dir, ignore_errors=True)
            if isinstance(exc, SessionError):
                raise
            raise SessionError(f"Cannot write the session folder {s.dir} ({exc.strerror or exc}).") from None
        return s

    @classmethod
    def open(cls, sid: str, *, root: Path | str | None = None, models: Models | None = None,
             readonly: bool = False) -> "Session":
        if not _ID.match(sid or ""):
            raise SessionError(f"'{sid}' is not a session id.")
        s = cls(sessions_root(root), sid, readonly)
        if not s.events_path.exists():
            raise SessionError(f"No session '{sid}' in {s.root}.")
        if not readonly:
            s._acquire()
        try:
            s.folded = s._load(s.log.read(readonly=readonly, warnings=s.warnings))
        except Exception:
            s.close()
            raise
        s.models = models
        return s

    def _load(self, raw: list[dict]) -> SessionState:
        """The state of a log's events: migrated to the current schema, config checked, task loaded, folded."""
        corrupt = "the file is corrupt and the session cannot be opened. Restore the file."
        try:
            events = E.upgrade(raw)
        except SchemaError as exc:
            raise SessionError(f"Session {self.id} cannot be opened: {exc}.") from None
        try:
            E.check(events[0])
            config = SessionConfig.from_json(events[0]["config"])
        except SchemaError as exc:
            raise SessionError(f"Session {self.id}: event 1 of events.jsonl ('created') is malformed: {exc}; "
                               f"{corrupt}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise SessionError(f"Session {self.id}: event 1 of events.jsonl ('created') is malformed ("
                               f"{type(exc).__name__}); {corrupt}") from None
        self._check_stored_config(config)
        task = load_session_task(config.task, self.dir)
        checked = self._check_fields(events)
        if not checked:  # a reader sees what the events say; unknown ones are left out
            events = [ev for ev in events if ev.get("type") in E.EVENTS]
        try:
            return fold(events, task, checked=not checked)
        except EventDoesNotFit as exc:
            raise SessionError(f"Session {self.id}: event {exc.n} of events.jsonl ('{exc.type}') {exc.why}; "
                               f"{corrupt}") from None

    def _check_fields(self, events: list[dict]) -> bool:
        """Every event's type and field types (core/events.py); the first that is off refuses a writer in one
        line, and is a warning for a reader (an older version may have written odd values): False then."""
        for n, ev in enumerate(events, 1):
            try:
                E.check(ev)
            except SchemaError as exc:
                what = f"event {n} of events.jsonl ('{str(ev.get('type'))[:40]}') is malformed: {exc}"
                if not self.readonly:
                    raise SessionError(f"Session {self.id}: {what}; the file is corrupt and the session cannot be "
                                       f"opened for writing. Restore the file, or open it read-only to export it.") from None
                self.warnings.append(f"The {what}; shown as recorded, read-only.")
                return False
        return True

    def _check_stored_config(self, config: SessionConfig) -> None:
        """A stored setting out of range (an old or edited session) is one clear line; a reader gets a warning."""
        try:
            config.check(check_models=False)
        except SessionError as exc:
            if not self.readonly:
                raise SessionError(f"Session {self.id} has a setting that is not allowed: {exc} "
                                   f"Open it read-only to export it.") from None
            self.warnings.append(f"This session has a setting that is not allowed: {exc}")

    # ---------- estimates and budget (core/estimate.py) ----------
    def _price_overrides(self, models: Models | None = None) -> dict | None:
        return getattr(models if models is not None else self.models, "price_overrides", None)

    def estimate_step(self, models: Models | None = None) -> dict:
        """Calls and cost of the next step (minibatch, proposal, bandit, validation), before it runs."""
        m = models if models is not None else self.models
        return estimate.step(self.folded, cached=m is not None and m.cached, price_overrides=self._price_overrides(m))

    def estimate_baseline(self, models: Models | None = None) -> dict:
        return estimate.baseline(self.folded, price_overrides=self._price_overrides(models))

    def check_budget(self, est: dict, models: Models | None = None) -> None:
        self.runner.check_budget(est, models)

    # ---------- phases (core/step_runner.py) ----------
    def _ctx(self, step: int, attempt: int, cancel: CancelToken | None, progress: PhaseProgress | None) -> StepContext:
        return self.runner.context(self.runner.models(None), step, attempt, cancel, progress)

    def run_baseline(self, *, progress: PhaseProgress | None = None, cancel: CancelToken | None = None,
                     models: Models | None = None) -> Version:
        """Step 0: the seed prompt scored on validation, so the first gate compares against something real."""
        return self.runner.baseline(models=models, progress=progress, cancel=cancel)

    def start_step(self, *, progress: PhaseProgress | None = None, cancel: CancelToken | None = None,
                   regenerate: bool = False, models: Models | None = None) -> Step:
        """Sample the minibatch, answer it, and propose gradients and candidates."""
        return self.runner.start_step(models=models, progress=progress, cancel=cancel, regenerate=regenerate)

    def retry_failed(self, *, progress: PhaseProgress | None = None, cancel: CancelToken | None = None,
                     models: Models | None = None) -> Step:
        """Send the open proposal's failed calls again (the others come from the cache): 'proposal_retried'."""
        return self.runner.retry_failed(models=models, progress=progress, cancel=cancel)

    def decide(self, action: str, candidate: str | None = None, prompt: str | None = None,
               override: bool = False) -> Step:
        """accept (a candidate id) | edit (your own text) | reject (all) | skip; a decision not yet validated
        may be changed by deciding again; `override` takes a prompt that changes a locked sentence."""
        return self.runner.decide(action, candidate, prompt, override=override)

    def revert(self, version: int) -> Version:
        """Make an earlier version's prompt current again, as a new version (a 'reverted' event)."""
        return self.runner.revert(version)

    def validate(self, *, progress: PhaseProgress | None = None, cancel: CancelToken | None = None,
                 models: Models | None = None) -> GateResult:
        """Score the chosen prompt and the current one on the same validation questions; compute the gate."""
        return self.runner.validate(models=models, progress=progress, cancel=cancel)

    def confirm(self, accept: bool | None = None) -> Step:
        """Record the gate: the policy's verdict, or the person's override (accept True/False)."""
        return self.runner.confirm(accept)

    # ---------- what the person marks (core/person_marks.py) ----------
    def dispute(self, question_id: str, reason: str, exclude: bool = False) -> marks.Dispute:
        """Dispute a question's gold label (with a reason), or exclude it from minibatches and gates from now on;
        the data and earlier steps stay as they are."""
        qid, why = str(question_id or "").strip(), " ".join(str(reason or "").split())
        if not why:
            raise SessionError("Say why the label is disputed (a reason).")
        split = next((name for name, exs in self.task.splits.items() if any(e.id == qid for e in exs)), None)
        if split is None:
            raise SessionError(f"There is no question '{_printable(qid, 60)}' in this session's task.")
        if split not in ("train", "val"):
            raise SessionError(f"Question '{_printable(qid, 60)}' is in the sealed {split} split: disputes are for "
                               f"training and validation questions.")
        self.emit(E.LabelDisputed(question=qid, reason=why, exclude=bool(exclude)))
        return self.disputes[-1]

    def lock_sentences(self, numbers: list[int]) -> list[str]:
        """Lock sentences of the current prompt (numbered from 1 as core/blame.split_sentences splits it):
        the edit and update calls are told to keep them verbatim, and a candidate changing one is flagged."""
        return self._mark_sentences(numbers, E.SentencesLocked)

    def unlock_sentences(self, numbers: list[int]) -> list[str]:
        return self._mark_sentences(numbers, E.SentencesUnlocked)

    def _mark_sentences(self, numbers: list[int], kind: type[E.SentencesLocked]) -> list[str]:
        with self.lock:
            cur = self.current
            try:
                texts = marks.sentence_numbers(cur.prompt, list(numbers))
            except ValueError as exc:
                raise SessionError(str(exc)) from None
            if not texts:
                raise SessionError("Say which sentences (numbers from 1).")
            self.emit(kind(version=cur.number, numbers=list(numbers), sentences=texts))
            return texts

    def active_locks(self) -> list[str]:
        return self.folded.active_locks()

    def stop(self, reason: str) -> None:
        self.emit(E.Stopped(reason=reason))

    def plan_auto(self, steps: int, *, more: bool = False) -> None:
        self.runner.plan_auto(steps, more=more)

    def run_auto(self, steps: int, *, policy: str | None = None, on_step: Callable[["Session", Step], None] | None = None,
                 progress: PhaseProgress | None = None, cancel: CancelToken | None = None,
                 models: Models | None = None) -> str:
        """Run until `steps` steps are done, patience, budget or cancel (the automatic policy)."""
        return self.runner.run_auto(steps, models=models, policy=policy, on_step=on_step, progress=progress,
                                    cancel=cancel)

    # ---------- servers ----------
    def servers_text(self) -> str:
        """The models and servers this session would contact, as one line of plain text."""
        c = self.config
        return (f"forward {_printable(c.forward)} at {_printable(server_text(c.forward, c.forward_base_url))}, "
                f"backward {_printable(c.backward)} at {_printable(server_text(c.backward, c.backward_base_url))}")

    def repoint(self, forward_base_url: str | None, backward_base_url: str | None, *,
                forward: str | None = None, backward: str | None = None, price_overrides: dict | None = None) -> None:
        """Name the servers (and optionally the models) the next calls go to; logged as a 'repointed' event.
        For an imported session this is the confirmation its calls wait for."""
        f, b = (forward or self.config.forward).strip(), (backward or self.config.backward).strip()
        fu, bu = ((u or "").strip() or None for u in (forward_base_url, backward_base_url))
        for spec, url in ((f, fu), (b, bu)):
            try:
                parse_spec(spec, url)
            except LLMError as exc:
                raise SessionError(str(exc)) from None
        with self.lock:
            moved = replace(self.config, forward=f, backward=b, forward_base_url=fu, backward_base_url=bu, prices={})
            moved.check_budget_priced(price_overrides)
            self.emit(E.Repointed(forward=f, forward_base_url=fu, backward=b, backward_base_url=bu,
                                  prices=moved.snapshot_prices(price_overrides)))
            self.models = None  # models built for the old servers must not be used


def _printable(text: str, limit: int = 200) -> str:
    """Text from a bundle fit for one line: control characters shown as '?', cut to `limit`."""
    out = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"


def server_text(spec: str, base_url: str | None) -> str:
    """Where calls for a model spec go, as plain text (a provider's own endpoint when no base URL is set)."""
    if base_url:
        return base_url
    provider = (spec or "").partition(":")[0].strip().lower()
    if provider == "ollama":
        return os.environ.get("OLLAMA_BASE_URL") or OLLAMA_BASE_URL
    if provider == "openai-compatible":
        return os.environ.get("OPENAI_BASE_URL") or "(no base URL)"
    if provider == "openai":  # the SDK reads OPENAI_BASE_URL itself
        return os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1 (OpenAI)"
    if provider == "anthropic":
        return os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com (Anthropic)"
    return f"no server (local '{provider}' provider)"


def list_sessions(root: Path | str | None = None) -> list[dict]:
    """Sessions on disk, newest first, read from their first and last events only."""
    out = []
    root = sessions_root(root)
    if not root.is_dir():
        return out
    for d in root.iterdir():
        p = d / "events.jsonl"
        if not (d.is_dir() and _ID.match(d.name) and p.is_file()):
            continue
        try:
            with open(p, encoding="utf-8") as f:
                first = json.loads(f.readline())
            cfg = first.get("config", {})
            task = cfg.get("task", {})
            out.append({"id": d.name, "created": first.get("ts", 0), "method": cfg.get("method"),
                        "task": task.get("name") or task.get("file"), "title": cfg.get("title", ""),
                        "size": p.stat().st_size})
        except (OSError, ValueError, AttributeError):
            out.append({"id": d.name, "created": 0, "method": "?", "task": "(unreadable)", "title": "", "size": 0})
    return sorted(out, key=lambda x: -x["created"])


def delete_session(sid: str, root: Path | str | None = None) -> None:
    import shutil

    if not _ID.match(sid or ""):
        raise SessionError(f"'{sid}' is not a session id.")
    root = sessions_root(root)
    d = root / sid
    s = Session(root, sid)
    s._acquire()  # refuses while another writer has it
    s.close()
    shutil.rmtree(d)

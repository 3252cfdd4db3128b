"""A tuning session: config, the step state machine and its append-only event log.

States of the current step: (none) → proposed → decided → validated → (gate) → done.
Every transition is one JSON line in `sessions/<id>/events.jsonl`, flushed and fsynced before
the call returns, so a crash loses at most the call in flight and `Session.open` resumes exactly.
A phase that stops part-way (failed calls, cancel, auth error) logs what it spent as a 'spend' event.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .checks import CheckError, check_session_values, check_settings
from .engine import Cancelled, PhaseProgress, Spend, StepContext, forward_batch, normalise
from .evaluate import EvalReport
from .gate import POLICIES, GateResult, gate
from .sequential import look_schedule
from .lineage import Proposal
from .llm import OLLAMA_BASE_URL, ChatModel, ClientOptions, LLMError, make_model, price_for, estimate_tokens, parse_spec
from .meta_prompts import TEMPLATE_VERSION, Templates
from .protegi import PRESETS as PROTEGI_PRESETS, ProtegiConfig, ProtegiEngine, calls_per_parent
from .runner import CancelToken, Runner, run_sync
from .tasks import Example, Task, TaskError, load_custom, load_task
from .textgrad import LEGACY_PRESETS as TEXTGRAD_LEGACY, PRESETS as TEXTGRAD_PRESETS, MemoryItem, TextGradConfig, TextGradEngine
from . import candidate_checks as checks
from . import paths

METHODS = ("protegi", "textgrad")
PRESETS = {"protegi": PROTEGI_PRESETS, "textgrad": TEXTGRAD_PRESETS}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


def sessions_root(root: Path | str | None = None) -> Path:
    """The sessions folder given, else the default one (core/paths.py), looked up now."""
    return Path(root) if root is not None else paths.sessions_dir()


class SessionError(RuntimeError):
    """A session that cannot be opened or advanced; the message is for the user."""


class SessionLocked(SessionError):
    pass


class BudgetExceeded(SessionError):
    pass


class UnpricedBudget(SessionError):
    """A USD budget with a model whose price is unknown: its calls would count as $0, so it could never stop."""

    def __init__(self, specs: list[str]):
        self.specs = specs
        names = ", ".join(specs)
        model = specs[0].partition(":")[2].partition(" @ ")[0] if specs else "model"
        super().__init__(f"No price is known for {names}, so a USD budget cannot be kept: set its price (USD per 1M "
                         f"tokens; pgs: PGS_PRICES='{{\"{model}\": [input, output]}}', the app: Settings, Prices) "
                         f"or drop the USD budget.")


def price_key(spec: str, base_url: str | None) -> str:
    """How a model is named in a config's price snapshot: its spec, and its server when one is set."""
    return f"{spec} @ {base_url}" if base_url else spec


@dataclass
class SessionConfig:
    task: dict  # {"name": "pubmedqa", "seed": 0, "val_size": 50} or {"file": "data.csv", "input_cols": [...], ...}
    method: str = "textgrad"
    preset: str = "AutoMedPrompt paper"
    forward: str = "openai:gpt-4o-mini"
    backward: str = "openai:gpt-4o"
    forward_base_url: str | None = None
    backward_base_url: str | None = None
    seed_prompt: str = "You are a helpful, creative, and smart assistant."
    seed: int = 0
    policy: str = "strict"
    alpha: float = 0.05
    patience: int = 3
    budget_usd: float | None = None
    budget_calls: int | None = None
    val_limit: int | None = None  # validate on the first N validation questions
    gate_batch: int = 50  # adaptive gate: validation questions per look
    gate_cap: int = 200  # adaptive gate: at most this many validation questions per gate
    forward_max_tokens: int = 512
    params: dict = field(default_factory=dict)  # overrides of the preset's fields
    templates: dict = field(default_factory=dict)  # meta-prompt overrides {name: {"system","user"}}
    title: str = ""
    # meta-prompt templates and paper presets this session runs with; a config recorded without it is version 1
    template_version: int = TEMPLATE_VERSION
    # USD per 1M tokens [input, output] by price_key(spec, base_url), fixed when the session is created or
    # re-pointed; a model missing here (a log from before snapshots) is priced by the table
    prices: dict = field(default_factory=dict)

    @staticmethod
    def from_json(d: dict) -> "SessionConfig":
        """A recorded config (event log, bundle): one written before template versions is version 1."""
        return SessionConfig(**{"template_version": 1, **d})

    def model_price(self, spec: str, base_url: str | None, overrides: dict | None = None) -> tuple[float, float] | None:
        """USD per 1M tokens (input, output) for a model of this config: the snapshot, else the table (with
        `overrides` by model name); None when unknown or the provider is missing here."""
        snap = self.prices.get(price_key(spec, base_url)) if isinstance(self.prices, dict) else None
        if snap is not None:
            return (float(snap[0]), float(snap[1]))
        try:
            return price_for(parse_spec(spec, base_url), overrides)
        except LLMError:
            return None

    def _models(self) -> list[tuple[str, str | None]]:
        return [(self.forward, self.forward_base_url), (self.backward, self.backward_base_url)]

    def snapshot_prices(self, overrides: dict | None = None) -> dict:
        """The snapshot to record: this config's own prices, plus the table's for its models that have one."""
        out = dict(self.prices)
        for spec, url in self._models():
            price = self.model_price(spec, url, overrides)
            if price is not None:
                out.setdefault(price_key(spec, url), [price[0], price[1]])
        return out

    def unpriced(self, overrides: dict | None = None) -> list[str]:
        """This config's models with no known price (their calls would count as $0)."""
        out: list[str] = []
        for spec, url in self._models():
            if self.model_price(spec, url, overrides) is None and price_key(spec, url) not in out:
                out.append(price_key(spec, url))
        return out

    def check_budget_priced(self, overrides: dict | None = None) -> None:
        """A USD budget needs every model priced; raises UnpricedBudget before any call otherwise."""
        missing = self.unpriced(overrides) if self.budget_usd is not None else []
        if missing:
            raise UnpricedBudget(missing)

    def validate(self, check_models: bool = True) -> None:
        if self.method not in METHODS:
            raise SessionError(f"Unknown method '{self.method}'. Use one of: {', '.join(METHODS)}.")
        if self.preset not in PRESETS[self.method]:
            raise SessionError(f"Unknown preset '{self.preset}' for {self.method}. "
                               f"Presets: {', '.join(PRESETS[self.method])}.")
        if self.template_version not in (1, TEMPLATE_VERSION):
            raise SessionError(f"Unknown template version {self.template_version!r} (this app knows 1 and "
                               f"{TEMPLATE_VERSION}).")
        if self.policy not in POLICIES:
            raise SessionError(f"Unknown policy '{self.policy}'. Use one of: {', '.join(POLICIES)}.")
        try:
            check_session_values(self)
        except CheckError as exc:
            raise SessionError(str(exc)) from None
        if not (isinstance(self.gate_batch, int) and isinstance(self.gate_cap, int) and 1 <= self.gate_batch
                <= self.gate_cap <= 100_000):
            raise SessionError(f"The adaptive gate needs 1 <= gate_batch <= gate_cap <= 100000 (got "
                               f"{self.gate_batch!r}, {self.gate_cap!r}).")
        if not (isinstance(self.prices, dict) and all(
                isinstance(k, str) and isinstance(v, (list, tuple)) and len(v) == 2 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < float("inf") for x in v)
                for k, v in self.prices.items())):
            raise SessionError("The session's prices must map model specs to [input, output] USD per 1M tokens.")
        if not self.seed_prompt.strip():
            raise SessionError("The seed prompt is empty: write one (the AutoMedPrompt seed is a good start).")
        for spec, url in ((self.forward, self.forward_base_url), (self.backward, self.backward_base_url)):
            if not check_models:
                break
            try:
                parse_spec(spec, url)
            except LLMError as exc:
                raise SessionError(str(exc)) from None
        fields = (ProtegiConfig if self.method == "protegi" else TextGradConfig).__dataclass_fields__
        bad = [k for k in self.params if k not in fields]
        if bad:
            raise SessionError(f"Unknown {self.method} settings: {', '.join(bad)}.")
        try:
            check_settings(ProtegiConfig if self.method == "protegi" else TextGradConfig, self.params)
        except CheckError as exc:
            raise SessionError(str(exc)) from None

    def engine_config(self) -> ProtegiConfig | TextGradConfig:
        base = PRESETS[self.method][self.preset]
        if self.method == "textgrad":
            base = TEXTGRAD_LEGACY.get(self.template_version, {}).get(self.preset, base).for_task(self.task.get("name"))
        return type(base)(**{**asdict(base), **self.params})


@dataclass
class Version:
    number: int
    prompt: str
    step: int
    report: EvalReport
    origin: str  # "seed" | "candidate" | "edit"

    @property
    def accuracy(self) -> float:
        return self.report.accuracy


@dataclass
class Step:
    index: int
    attempt: int
    parent_version: int
    beam: list[str]
    minibatch_ids: list[str]
    forward: list[EvalReport] = field(default_factory=list)
    proposal: Proposal | None = None
    decision: dict | None = None  # {"action", "candidate", "prompt"}
    candidate_report: EvalReport | None = None
    current_report: EvalReport | None = None
    gate: GateResult | None = None
    outcome: str | None = None  # "accepted" | "rejected" | "skipped"
    spend: Spend = field(default_factory=Spend)

    @property
    def status(self) -> str:
        if self.outcome:
            return "done"
        if self.gate is not None:
            return "validated"
        if self.decision is not None:
            return "decided"
        if self.proposal is not None:
            return "proposed"
        return "started"


@dataclass
class Models:
    """The live models for a session; keys stay in memory, inside the SDK clients."""

    forward: ChatModel
    backward: ChatModel
    runner: Runner
    price_overrides: dict = field(default_factory=dict)  # by model name, for models the snapshot lacks

    @staticmethod
    def from_config(cfg: SessionConfig, runner: Runner, keys: dict[str, str] | None = None,
                    options: ClientOptions | None = None, price_overrides: dict | None = None) -> "Models":
        """Models whose calls cost what the config's price snapshot says (the table for a model it lacks)."""
        keys = keys or {}

        def build(spec: str, url: str | None) -> ChatModel:
            s = parse_spec(spec, url)
            return make_model(s, api_key=keys.get(s.provider), options=options,
                              price=cfg.model_price(spec, url, price_overrides))

        return Models(build(cfg.forward, cfg.forward_base_url), build(cfg.backward, cfg.backward_base_url), runner,
                      dict(price_overrides or {}))


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def compact_report(r: EvalReport) -> dict:
    d = r.to_json()
    for row in d["rows"]:
        row.pop("input", None)  # derivable from the task
    return d


class Session:
    """Open with `Session.create` or `Session.open`; one writer at a time (file lock)."""

    def __init__(self, root: Path, sid: str, readonly: bool = False):
        self.root, self.id, self.readonly = Path(root), sid, readonly
        self.dir = self.root / sid
        self.config: SessionConfig | None = None
        self.task: Task | None = None
        self.versions: list[Version] = []
        self.steps: list[Step] = []
        self.spend = Spend()
        self.stopped: str | None = None
        self.auto: dict | None = None  # the automatic run in progress: {"steps", "policy"}
        self.bundle_events: int | None = None  # imported: how many of the events came from the bundle
        self.servers_confirmed = True  # False for an imported session until the user names its servers
        self.events: list[dict] = []
        self.models: Models | None = None
        self.warnings: list[str] = []
        self._log = None
        self._lock = None

    # ---------- files ----------
    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    def _acquire(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            f = open(self.dir / ".lock", "a+")
        except OSError as exc:
            raise SessionError(f"Cannot write the session folder {self.dir} ({type(exc).__name__}: "
                               f"{exc.strerror or exc}). Choose another with PGS_SESSIONS_DIR or --sessions-dir.") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            who = f.read().strip() or "another process"
            f.close()
            raise SessionLocked(f"Session {self.id} is open for writing in another process ({who}). "
                                f"Close it there, or open this one read-only.") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
        except OSError as exc:
            f.close()
            raise SessionError(f"Cannot write the session folder {self.dir} ({exc.strerror or exc}). Free space, "
                               f"or choose another with PGS_SESSIONS_DIR or --sessions-dir.") from None
        self._lock = f
        self._log = open(self.events_path, "a", encoding="utf-8")

    def close(self) -> None:
        for f in (self._log, self._lock):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._log = self._lock = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _emit(self, event: dict) -> dict:
        if self.readonly or self._log is None:
            raise SessionError("This session is open read-only.")
        event = {"type": event.pop("type"), "ts": round(time.time(), 3), **event}
        self._append_line((json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8"))
        self._apply(event)
        return event

    def _append_line(self, line: bytes) -> None:
        """Append one whole event line and fsync; on a full or read-only disk cut any torn part off again."""
        fd = self._log.fileno()
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise SessionError(f"Cannot write session {self.id} ({exc.strerror or exc}); the session is kept as it "
                               f"was before this event. Free space, then `pgs resume {self.id}`.") from None

    # ---------- construction ----------
    @classmethod
    def create(cls, config: SessionConfig, *, root: Path | str | None = None, models: Models | None = None,
               data: tuple[str, bytes] | None = None, sid: str | None = None, offline: bool = False,
               price_overrides: dict | None = None) -> "Session":
        """Validate config, snapshot its prices, load the task (custom data is copied into the session folder),
        log 'created'. `offline` (replay) keeps the recorded config and skips checking the model providers."""
        config.validate(check_models=not offline)
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
            s._task_from(cfg["task"], content)  # validate before writing anything
            try:
                s.dir.mkdir(parents=True, exist_ok=True)
                (s.dir / safe).write_bytes(content)
            except OSError as exc:
                raise SessionError(f"Cannot write the session folder {s.dir} ({type(exc).__name__}: "
                                   f"{exc.strerror or exc}).") from None
        elif "file" in cfg["task"]:
            raise SessionError("The session's task reads a data file, but no data was given.")
        else:
            s._task_from(cfg["task"])  # a task that cannot load writes nothing
        try:
            s._acquire()
            s.models = models
            s._emit({"type": "created", "id": sid, "config": cfg})
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
            for n, ev in enumerate(s._read_events(), 1):
                try:
                    s._apply(ev)
                except SessionError:
                    raise
                except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                    raise SessionError(f"Session {sid}: event {n} of events.jsonl ('{ev.get('type')}') is malformed "
                                       f"or does not fit the events before it ({type(exc).__name__}); the file is "
                                       f"corrupt and the session cannot be opened. Restore the file.") from None
        except Exception:
            s.close()
            raise
        s.models = models
        return s

    def _read_events(self) -> list[dict]:
        lines = self.events_path.read_bytes().split(b"\n")
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line.decode("utf-8"))
                if not isinstance(ev, dict) or "type" not in ev:
                    raise ValueError("not an event")
            except (ValueError, UnicodeDecodeError):
                if n >= len(lines) - 1:  # a torn last line from a crash: the call in flight is lost
                    self.warnings.append(f"Ignored an incomplete last line in events.jsonl (line {n}).")
                    if not self.readonly and self._log is not None:
                        self._truncate_tail(sum(len(x) + 1 for x in lines[: n - 1]))
                    break
                if self.readonly and out:  # a reader may still look at (and export) what came before
                    self.warnings.append(f"events.jsonl line {n} is corrupt: showing the {len(out)} events before "
                                         f"it, read-only.")
                    break
                raise SessionError(f"Session {self.id}: events.jsonl line {n} is corrupt; the session cannot be "
                                   f"resumed safely. Restore the file or export what loads read-only.") from None
            out.append(ev)
        if not out or out[0].get("type") != "created":
            raise SessionError(f"Session {self.id}: events.jsonl does not start with a 'created' event.")
        return out

    def _truncate_tail(self, size: int) -> None:
        with open(self.events_path, "r+b") as f:
            f.truncate(size)

    def _task_from(self, spec: dict, content: bytes | None = None) -> Task:
        try:
            if "file" in spec:
                f = spec["file"]
                if not isinstance(f, str) or not f or f != os.path.basename(f) or f.startswith("."):
                    raise TaskError(f"the data file name {f!r} is not a plain file name")
                if content is None:
                    content = (self.dir / f).read_bytes()
                kw = {k: spec[k] for k in ("input_cols", "label_col", "id_col", "choices_col", "labels",
                                           "val_size", "test_size", "seed", "header", "option_cols",
                                           "label_threshold") if spec.get(k) is not None}
                return load_custom(content, spec["file"], **kw)
            kw = {k: spec[k] for k in ("seed", "val_size", "train_size", "test_size", "confirm_size")
                  if spec.get(k) is not None}
            # a spec from before split versions keeps the original carving, so old sessions load the same questions
            return load_task(spec["name"], split_version=spec.get("split_version", 1), **kw)
        except (TaskError, OSError) as exc:
            raise SessionError(f"Cannot load the session's task: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SessionError(f"The session's task settings {spec!r:.200} are invalid ({type(exc).__name__}: {exc}).") from None

    def _check_stored_config(self) -> None:
        """A stored setting out of range (an old or edited session) is one clear line; a reader gets a warning."""
        try:
            self.config.validate(check_models=False)
        except SessionError as exc:
            if not self.readonly:
                raise SessionError(f"Session {self.id} has a setting that is not allowed: {exc} "
                                   f"Open it read-only to export it.") from None
            self.warnings.append(f"This session has a setting that is not allowed: {exc}")

    # ---------- state from events ----------
    def _apply(self, ev: dict) -> None:
        self.events.append(ev)
        t = ev["type"]
        if t == "created":
            self.config = SessionConfig.from_json(ev["config"])
            self._check_stored_config()
            self.task = self._task_from(self.config.task)
            marker = ev.get("imported")
            if marker:  # written by import_bundle, never by the bundle: events before its count are the bundle's
                n = marker.get("events") if isinstance(marker, dict) else None
                self.bundle_events = n if isinstance(n, int) and n > 0 else 1
                self.servers_confirmed = False
        elif t == "repointed":
            if not (isinstance(ev["forward"], str) and isinstance(ev["backward"], str) and all(
                    isinstance(ev.get(k), (str, type(None))) for k in ("forward_base_url", "backward_base_url"))):
                raise ValueError("repointed: specs and base URLs must be text")
            self.config = replace(self.config, forward=ev["forward"], backward=ev["backward"],
                                  forward_base_url=ev.get("forward_base_url"),
                                  backward_base_url=ev.get("backward_base_url"),
                                  prices=ev["prices"] if isinstance(ev.get("prices"), dict) else self.config.prices)
            if self.bundle_events is None or len(self.events) > self.bundle_events:
                self.servers_confirmed = True  # the user named them here, after the import
        elif t == "baseline":
            rep = self._report(ev["report"])
            self.versions = [Version(0, ev["prompt"], 0, rep, "seed")]
        elif t == "step_started":
            step = Step(ev["step"], ev["attempt"], ev["parent_version"], ev["beam"], ev["minibatch_ids"])
            if self.steps and self.steps[-1].index == step.index and self.steps[-1].outcome is None:
                step.spend = self.steps[-1].spend
                self.steps[-1] = step
            else:
                self.steps.append(step)
        elif t == "forward":
            self.steps[-1].forward = [self._report(r) for r in ev["reports"]]
        elif t == "proposal":
            self.steps[-1].proposal = Proposal.from_json(ev["proposal"])
        elif t == "decision":
            self.steps[-1].decision = {k: ev.get(k) for k in ("action", "candidate", "prompt")}
            if ev["action"] in ("reject", "skip"):
                self.steps[-1].outcome = "rejected" if ev["action"] == "reject" else "skipped"
        elif t == "validation":
            st = self.steps[-1]
            st.candidate_report = self._report(ev["candidate_report"])
            st.current_report = self._report(ev["current_report"])
            st.gate = GateResult.from_json(ev["gate"])
        elif t == "gate":
            st = self.steps[-1]
            st.outcome = "accepted" if ev["accepted"] else "rejected"
            if ev["accepted"]:
                d = st.decision or {}
                self.versions.append(Version(len(self.versions), d["prompt"], st.index, st.candidate_report,
                                             "edit" if d.get("action") == "edit" else "candidate"))
        elif t == "auto":
            self.auto = {"steps": ev["steps"], "policy": ev["policy"]} if ev.get("steps") else None
        elif t == "stopped":
            self.stopped = ev["reason"]
            self.auto = None
        if "spend" in ev:
            sp = Spend(**ev["spend"])
            self.spend.merge(sp)
            if self.steps and (t in ("forward", "proposal", "validation") or (
                    t == "spend" and ev.get("step") == self.steps[-1].index and self.steps[-1].outcome is None)):
                self.steps[-1].spend.merge(sp)

    def _report(self, d: dict) -> EvalReport:
        rep = EvalReport.from_json({**d, "rows": [{"input": "", **r} for r in d["rows"]]})
        if self.task is not None:
            for row in rep.rows:
                if not row.input:
                    try:
                        row.input = self._rendered(row.id)
                    except KeyError:
                        pass
        return rep

    def _rendered(self, eid: str) -> str:
        """A question as the model saw it, rendered once and shared by every report that shows it (50 steps
        of validation would otherwise keep 5,000 copies of the same 50 texts alive)."""
        if not hasattr(self, "_inputs"):
            self._inputs: dict[str, str] = {}
        text = self._inputs.get(eid)
        if text is None:
            text = self._inputs[eid] = self.task.render(self._example(eid))
        return text

    def _example(self, eid: str) -> Example:
        if not hasattr(self, "_by_id"):
            self._by_id = {ex.id: ex for split in self.task.splits.values() for ex in split}
        return self._by_id[eid]

    # ---------- read helpers ----------
    @property
    def current(self) -> Version:
        if not self.versions:
            raise SessionError("Score the seed prompt first (the baseline).")
        return self.versions[-1]

    @property
    def step(self) -> Step | None:
        return self.steps[-1] if self.steps and self.steps[-1].outcome is None else None

    @property
    def state(self) -> str:
        if not self.versions:
            return "new"
        if self.stopped:
            return "stopped"
        return self.step.status if self.step else "ready"

    def val_examples(self) -> list[Example]:
        val = self.task.split("val")
        limit = self.config.val_limit or getattr(self.config.engine_config(), "val_questions", None)
        val = val[:limit] if limit else val
        return val[: self.config.gate_cap] if self.config.policy == "adaptive" else val

    def rejections_in_a_row(self) -> int:
        n = 0
        for st in reversed(self.steps):
            if st.outcome == "accepted":
                break
            if st.outcome in ("rejected", "skipped"):
                n += 1
        return n

    def beam(self) -> list[str]:
        """Prompts to expand next: the current prompt, then (ProTeGi) the best other screened prompts."""
        cur = self.current.prompt
        beam = [cur]
        if self.config.method != "protegi":
            return beam
        size = self.config.engine_config().beam
        last = next((s for s in reversed(self.steps) if s.outcome and s.proposal and s.proposal.bandit), None)
        if last is not None and last.decision and last.decision.get("action") != "reject":
            for p in last.proposal.bandit.get("ranking", []):
                if len(beam) >= size:
                    break
                if normalise(p) not in {normalise(b) for b in beam}:
                    beam.append(p)
        return beam

    def memory(self) -> list[MemoryItem]:
        out = []
        for st in self.steps:
            if st.proposal and st.proposal.gradients and st.decision and st.decision.get("prompt"):
                acc = st.candidate_report.accuracy if st.candidate_report else None
                g = st.proposal.gradients[0]  # the feedback on the step's parent, from which the revision came
                out.append(MemoryItem(st.decision["prompt"], acc, g.text, st.outcome == "accepted", parent=g.parent))
        return out

    def heldout_leaks(self, prompt: str) -> list[str]:
        """Validation/test splits whose question text the prompt contains: such a prompt fails the gate
        unless the person overrides it."""
        return [s for s in checks.leaked_splits(prompt, self.task) if s in ("val", "test")]

    # ---------- estimates and budget ----------
    def estimate_step(self) -> dict:
        """Calls and cost of the next step (minibatch, proposal, bandit, validation), before it runs."""
        cfg = self.config.engine_config()
        n_val = len(self.val_examples())
        beam = len(self.beam()) if self.versions else 1
        if self.config.method == "protegi":
            fwd = beam * cfg.minibatch
            opt = beam * calls_per_parent(cfg, cfg.errors_per_group)
            bandit = cfg.bandit_budget if cfg.bandit != "none" else 0
        else:
            fwd, opt, bandit = cfg.batch_size, cfg.batch_size + 1 + max(1, cfg.candidates), 0
        n_val = self._validation_calls()
        calls = fwd + opt + bandit + n_val
        return {"forward": fwd, "optimiser": opt, "bandit": bandit, "validation": n_val, "calls": calls,
                "cost_usd": self._cost(fwd + bandit + n_val, forward=True) + self._cost(opt, forward=False)}

    def _validation_calls(self) -> int:
        """The candidate's validation calls, plus the current prompt's unless the cache has them."""
        n = len(self.val_examples())
        if self.config.policy == "adaptive" and self.versions:  # at most the cap; known answers are free
            return n + sum(1 for e in self.val_examples() if e.id not in self._known_current())
        cached = self.models is not None and self.models.runner.cache is not None
        return n if cached else 2 * n

    def estimate_baseline(self) -> dict:
        n = len(self.val_examples())
        return {"calls": n, "cost_usd": self._cost(n, forward=True)}

    def _cost(self, calls: int, forward: bool) -> float:
        cfg = self.config
        spec, url = (cfg.forward, cfg.forward_base_url) if forward else (cfg.backward, cfg.backward_base_url)
        try:
            parse_spec(spec, url)
        except LLMError:  # a provider this machine lacks (offline replay): no estimate
            return 0.0
        price = cfg.model_price(spec, url, self._price_overrides())  # the session's snapshot
        if not price or calls == 0:
            return 0.0
        sample = self.task.split("val")[:20] or self.task.split("train")[:20]
        tin = sum(estimate_tokens(self.task.render(e)) for e in sample) / max(1, len(sample))
        tin += estimate_tokens(self.current.prompt if self.versions else cfg.seed_prompt)
        tout = 150.0
        if not forward:
            tin, tout = tin * 4, 400.0
        return calls * (tin * price[0] + tout * price[1]) / 1e6

    def _price_overrides(self) -> dict | None:
        return getattr(self.models, "price_overrides", None)

    def check_budget(self, estimate: dict) -> None:
        cfg = self.config
        cfg.check_budget_priced(self._price_overrides())  # a log from before snapshots, or an unpriced re-point
        if cfg.budget_calls is not None and self.spend.calls + estimate["calls"] > cfg.budget_calls:
            self._stop_for_budget(f"calls: {self.spend.calls} made + about {estimate['calls']} for the next "
                                  f"stage > budget {cfg.budget_calls}")
        if cfg.budget_usd is not None and self.spend.cost_usd + estimate["cost_usd"] > cfg.budget_usd:
            self._stop_for_budget(f"cost: ${self.spend.cost_usd:.4f} spent + about ${estimate['cost_usd']:.4f} "
                                  f"for the next stage > budget ${cfg.budget_usd:.4f}")

    def _stop_for_budget(self, why: str) -> None:
        self._emit({"type": "stopped", "reason": f"budget: {why}"})
        raise BudgetExceeded(f"Stopped before exceeding the budget ({why}).")

    # ---------- actions ----------
    def _need_models(self) -> Models:
        if not self.servers_confirmed:
            raise SessionError("This session came from a bundle: confirm or change the servers it would contact "
                               f"({self.servers_text()}) before any call.")
        if self.models is None:
            raise SessionError("No models are connected to this session (read-only, or replay without a bundle).")
        return self.models

    def _ctx(self, step: int, attempt: int, cancel: CancelToken | None, progress: PhaseProgress | None) -> StepContext:
        m = self._need_models()
        return StepContext(task=self.task, runner=m.runner, forward_model=m.forward, backward_model=m.backward,
                           templates=Templates(self.config.templates, self.config.template_version), train=self.task.split("train"),
                           seed=hash_seed(self.config.seed, step, attempt), attempt=attempt,
                           prefix=f"s{step}.", cancel=cancel, on_progress=progress,
                           forward_max_tokens=self.config.forward_max_tokens,
                           flush=lambda sp, keys: self._emit({"type": "spend", "step": step, "phase": "interim",
                                                              "spend": sp.to_json(), "keys": keys}))

    def _run(self, coro_fn: Callable[[], Any], ctx: StepContext | None = None, phase: str = "",
             check: Callable[[Any], None] | None = None) -> Any:
        """Run a phase on one event loop; if it stops (failed calls, cancel, auth error, Ctrl-C), the calls it
        already paid for are logged as a 'spend' event, so the spend shown equals the spend made."""
        m = self._need_models()

        async def go():
            try:
                return await coro_fn()
            finally:
                await m.forward.aclose()
                await m.backward.aclose()

        try:
            out = run_sync(go())
            if check is not None:
                check(out)
            return out
        except BaseException as exc:
            if ctx is not None:
                self._record_unfinished(ctx, phase, exc)
            raise

    def _record_unfinished(self, ctx: StepContext, phase: str, exc: BaseException) -> None:
        sp = ctx.spend
        if not sp.calls or self.readonly or self._log is None:  # failed calls cost nothing: no event
            return
        paid = Spend(calls=sp.calls, failed=sp.failed, input_tokens=sp.input_tokens,
                     output_tokens=sp.output_tokens, cost_usd=sp.cost_usd)  # cache hits are not spend
        step = self.step.index if (phase != "baseline" and self.step is not None) else 0
        try:
            self._emit({"type": "spend", "step": step, "phase": phase, "reason": type(exc).__name__,
                        "spend": paid.to_json(), "keys": ctx.keys})
        except (OSError, SessionError):
            pass
        ctx.spend, ctx.keys = Spend(), []

    def run_baseline(self, *, progress: PhaseProgress | None = None, cancel: CancelToken | None = None) -> Version:
        """Step 0: the seed prompt scored on validation, so the first gate compares against something real."""
        if self.versions:
            return self.versions[0]
        self.check_budget(self.estimate_baseline())
        ctx = self._ctx(0, 0, cancel, progress)

        async def go():
            rows = await forward_batch(ctx, [self.config.seed_prompt] * len(self.val_examples()),
                                       self.val_examples(), phase="baseline")
            return EvalReport(self.config.seed_prompt, rows, list(self.task.labels))

        rep = self._run(go, ctx, "baseline", check=lambda r: self._check_errors(r, "baseline", partial=False))
        self._emit({"type": "baseline", "prompt": self.config.seed_prompt, "report": compact_report(rep),
                    "spend": ctx.spend.to_json(), "keys": ctx.keys})
        return self.versions[0]

    def _check_errors(self, rep: EvalReport, what: str, partial: bool = True) -> None:
        """Refuse to record a phase whose calls all failed; scores (baseline, validation) also refuse partial
        failures: a failed call is not a wrong answer, and a gate must not rest on one."""
        bad = [r for r in rep.rows if r.error]
        if rep.rows and len(bad) == len(rep.rows):
            raise SessionError(f"Every call of the {what} failed ({bad[0].error}). Nothing was recorded; "
                               f"check the model settings and try again.")
        if bad and not partial:
            cached = self.models is not None and self.models.runner.cache is not None
            raise SessionError(f"{len(bad)} of {len(rep.rows)} calls of the {what} failed (first: {bad[0].error}). "
                               f"Nothing was recorded; try again" + (" (the answers received are cached, so only the "
                                                                     "failed calls are sent again)." if cached else "."))

    def start_step(self, *, progress: PhaseProgress | None = None, cancel: CancelToken | None = None,
                   regenerate: bool = False) -> Step:
        """Sample the minibatch, answer it, and propose gradients and candidates."""
        self.current  # noqa: B018 - requires the baseline
        if self.stopped:
            raise SessionError(f"This session has stopped ({self.stopped}).")
        open_step = self.step
        if open_step is not None and open_step.status not in ("started", "proposed"):
            raise SessionError(f"Step {open_step.index} is {open_step.status}; finish it first.")
        if open_step is not None and (open_step.status == "proposed") and not regenerate:
            return open_step
        index = open_step.index if open_step else (self.steps[-1].index + 1 if self.steps else 1)
        attempt = (open_step.attempt + (1 if open_step.status == "proposed" else 0)) if open_step else 0
        self.check_budget(self.estimate_step())
        cfg = self.config.engine_config()
        size = cfg.minibatch if self.config.method == "protegi" else cfg.batch_size
        train = self.task.split("train")
        rng = random.Random(hash_seed(self.config.seed, index, attempt, "minibatch"))
        batch = rng.sample(train, min(size, len(train)))
        beam = self.beam()
        self._emit({"type": "step_started", "step": index, "attempt": attempt,
                    "parent_version": self.current.number, "beam": beam, "minibatch_ids": [e.id for e in batch]})
        ctx = self._ctx(index, attempt, cancel, progress)
        engine = make_engine(self.config)

        async def forward_then_propose():  # one event loop and one client for the whole step
            rows = await asyncio.gather(*(forward_batch(ctx, [p] * len(batch), batch, phase="minibatch") for p in beam))
            reports = [EvalReport(p, r, list(self.task.labels)) for p, r in zip(beam, rows)]
            self._check_errors(reports[0], "minibatch")
            self._emit({"type": "forward", "step": index, "reports": [compact_report(r) for r in reports],
                        "spend": ctx.spend.to_json(), "keys": ctx.keys})
            ctx.spend, ctx.keys = Spend(), []
            if isinstance(engine, TextGradEngine):
                return await engine.propose(ctx, beam, reports, memory=self.memory())
            return await engine.propose(ctx, beam, reports)

        prop = self._run(forward_then_propose, ctx, "step")
        checks.review(prop, self.task, getattr(cfg, "constraints", []))
        self._emit({"type": "proposal", "step": index, "proposal": prop.to_json(), "spend": ctx.spend.to_json(),
                    "keys": ctx.keys})
        return self.steps[-1]

    def decide(self, action: str, candidate: str | None = None, prompt: str | None = None) -> Step:
        """accept (a candidate id) | edit (your own text) | reject (all) | skip. A decision not yet validated
        may be changed (e.g. when its validation keeps failing: a prompt longer than the model's context)."""
        st = self.step
        if st is None or st.status not in ("proposed", "decided"):
            raise SessionError("There is no proposal waiting for a decision.")
        if action == "accept":
            if not candidate:
                raise SessionError("Say which candidate to accept.")
            try:
                prompt = st.proposal.candidate(candidate).prompt
            except KeyError as exc:
                raise SessionError(str(exc.args[0])) from None
        elif action == "edit":
            if not (prompt or "").strip():
                raise SessionError("The edited prompt is empty.")
        elif action not in ("reject", "skip"):
            raise SessionError(f"Unknown action '{action}'. Use accept, edit, reject or skip.")
        if prompt is not None and action in ("accept", "edit") and normalise(prompt) == normalise(self.current.prompt):
            raise SessionError("That is the current prompt unchanged; edit it, or reject.")
        self._emit({"type": "decision", "step": st.index, "action": action, "candidate": candidate,
                    "prompt": prompt if action in ("accept", "edit") else None})
        return st

    def validate(self, *, progress: PhaseProgress | None = None, cancel: CancelToken | None = None) -> GateResult:
        """Score the chosen prompt and the current one on the same validation questions; compute the gate."""
        st = self.step
        if st is None or st.status not in ("decided", "validated"):
            raise SessionError("Choose a candidate (or edit one) before validating.")
        if st.gate is not None:
            return st.gate
        if self.config.policy == "adaptive":
            return self._validate_adaptive(st, progress, cancel)
        n_val = self._validation_calls()
        self.check_budget({"calls": n_val, "cost_usd": self._cost(n_val, forward=True)})
        ctx = self._ctx(st.index, st.attempt, cancel, progress)
        new_prompt, val = st.decision["prompt"], self.val_examples()

        async def go():
            cur_rows, new_rows = await asyncio.gather(
                forward_batch(ctx, [self.current.prompt] * len(val), val, phase="validation"),
                forward_batch(ctx, [new_prompt] * len(val), val, phase="validation"))
            labels = list(self.task.labels)
            return EvalReport(self.current.prompt, cur_rows, labels), EvalReport(new_prompt, new_rows, labels)

        def check(reports):
            for r in reports:
                self._check_errors(r, "validation", partial=False)

        cur, new = self._run(go, ctx, "validation", check=check)
        g = gate(self.config.policy, cur.correct_by_id(), new.correct_by_id(), self.config.alpha)
        self._emit({"type": "validation", "step": st.index, "candidate_report": compact_report(new),
                    "current_report": compact_report(cur), "gate": g.to_json(), "spend": ctx.spend.to_json(),
                    "keys": ctx.keys})
        return g

    def _known_current(self) -> dict[str, Any]:
        """The current prompt's validation answers already recorded (its own and earlier gates' reports)."""
        prompt, known = self.current.prompt, {}
        reports = [self.current.report] + [r for st in self.steps for r in (st.current_report, st.candidate_report) if r]
        for rep in reports:
            if rep.prompt == prompt:
                known.update({r.id: r for r in rep.rows if not r.error})
        return known

    def _validate_adaptive(self, st: Step, progress: PhaseProgress | None, cancel: CancelToken | None) -> GateResult:
        """The adaptive gate: score a batch for the candidate (the current prompt's answers are reused when
        known), look, and extend batch by batch until the sequential test decides or the cap is reached."""
        pool, batch, new_prompt = self.val_examples(), self.config.gate_batch, st.decision["prompt"]
        known, labels = self._known_current(), list(self.task.labels)
        ctx = self._ctx(st.index, st.attempt, cancel, progress)
        cur_rows: list = []
        new_rows: list = []
        for n in look_schedule(batch, len(pool)):
            part = pool[len(new_rows):n]
            missing = [e for e in part if e.id not in known]
            try:
                self.check_budget({"calls": len(part) + len(missing),
                                   "cost_usd": self._cost(len(part) + len(missing), forward=True)})
            except BudgetExceeded as exc:
                self._record_unfinished(ctx, "validation", exc)
                raise

            async def go(part=part, missing=missing):
                cur, new = await asyncio.gather(
                    forward_batch(ctx, [self.current.prompt] * len(missing), missing, phase="validation"),
                    forward_batch(ctx, [new_prompt] * len(part), part, phase="validation"))
                return EvalReport(self.current.prompt, cur, labels), EvalReport(new_prompt, new, labels)

            def check(reports):
                for r in reports:
                    self._check_errors(r, "validation", partial=False)

            cur, new = self._run(go, ctx, "validation", check=check)
            known.update({r.id: r for r in cur.rows})
            cur_rows += [known[e.id] for e in part]
            new_rows += new.rows
            g = gate("adaptive", {r.id: r.correct for r in cur_rows}, {r.id: r.correct for r in new_rows},
                     self.config.alpha, batch=batch, cap=len(pool))
            if g.decided:
                break
        self._emit({"type": "validation", "step": st.index,
                    "candidate_report": compact_report(EvalReport(new_prompt, new_rows, labels)),
                    "current_report": compact_report(EvalReport(self.current.prompt, cur_rows, labels)),
                    "gate": g.to_json(), "spend": ctx.spend.to_json(), "keys": ctx.keys})
        return g

    def confirm(self, accept: bool | None = None) -> Step:
        """Record the gate: the policy's verdict, or the person's override (accept True/False)."""
        st = self.step
        if st is None or st.gate is None:
            raise SessionError("Validate the chosen prompt first.")
        verdict = st.gate.passed and not self.heldout_leaks(st.decision["prompt"])  # an override is explicit
        final = verdict if accept is None else bool(accept)
        self._emit({"type": "gate", "step": st.index, "verdict": verdict, "accepted": final,
                    "override": accept is not None and final != verdict})
        return self.steps[-1]

    def stop(self, reason: str) -> None:
        self._emit({"type": "stopped", "reason": reason})

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
        moved = replace(self.config, forward=f, backward=b, forward_base_url=fu, backward_base_url=bu, prices={})
        moved.check_budget_priced(price_overrides)
        self._emit({"type": "repointed", "forward": f, "forward_base_url": fu, "backward": b, "backward_base_url": bu,
                    "prices": moved.snapshot_prices(price_overrides)})
        self.models = None  # models built for the old servers must not be used

    def servers_when(self, kind: str, step: int | None = None, attempt: int | None = None) -> tuple[tuple, tuple]:
        """((forward, url), (backward, url)) in effect when the last recorded `kind` event (of this step and
        attempt) was written; the current ones when there is none. Replay keys its responses with them."""
        c = self.events[0]["config"]
        now = ((c["forward"], c.get("forward_base_url")), (c["backward"], c.get("backward_base_url")))
        found = None
        for ev in self.events[1:]:
            if ev["type"] == "repointed":
                now = ((ev["forward"], ev.get("forward_base_url")), (ev["backward"], ev.get("backward_base_url")))
            elif ev["type"] == kind and (step is None or ev.get("step") == step) and (
                    attempt is None or ev.get("attempt") == attempt):
                found = now
        cfg = self.config
        return found or ((cfg.forward, cfg.forward_base_url), (cfg.backward, cfg.backward_base_url))

    # ---------- automatic policy ----------
    def plan_auto(self, steps: int, *, more: bool = False) -> None:
        """Record the automatic run to finish: `steps` more finished steps. An interrupted run keeps its
        target unless `more` (resume --steps N: N more from now)."""
        if self.auto is None or more:
            done = sum(1 for s in self.steps if s.outcome)
            self._emit({"type": "auto", "steps": done + steps, "policy": self.config.policy})

    def run_auto(self, steps: int, *, policy: str | None = None, on_step: Callable[["Session", Step], None] | None = None,
                 progress: PhaseProgress | None = None, cancel: CancelToken | None = None) -> str:
        """Run until `steps` steps are done (counting earlier ones of this run), patience, budget or cancel.
        The automatic policy accepts the top-ranked unflagged candidate and applies the gate's verdict."""
        if policy and policy != self.config.policy:
            raise SessionError("The gate policy is fixed when the session is created.")
        self.plan_auto(steps)  # before the baseline: a crash during it keeps the requested run for resume
        if not self.versions:
            self.run_baseline(progress=progress, cancel=cancel)
        target = self.auto["steps"]
        try:
            while sum(1 for s in self.steps if s.outcome) < target:
                if self.rejections_in_a_row() >= self.config.patience:
                    self._emit({"type": "stopped", "reason": f"patience: {self.config.patience} rejections in a row"})
                    return self.stopped
                st = self.step
                if st is None or st.status == "started":
                    st = self.start_step(progress=progress, cancel=cancel)
                if st.status == "proposed":
                    # flagged = the model ignored the output tags (e.g. it refused): a person may take it, the policy won't
                    cur = normalise(self.current.prompt)
                    # so are candidates the checks flagged: cut off, breaking a constraint, leaking data
                    pick = next((c for c in st.proposal.candidates
                                 if not c.flagged and not c.flags and normalise(c.prompt) != cur), None)
                    if pick is None:
                        self.decide("skip")
                        if on_step:
                            on_step(self, st)
                        continue
                    self.decide("accept", candidate=pick.id)
                if st.status == "decided":
                    self.validate(progress=progress, cancel=cancel)
                if self.step is not None and self.step.status == "validated":
                    self.confirm()
                if on_step:
                    on_step(self, self.steps[-1])
        except BudgetExceeded:
            return self.stopped or "budget"
        except Cancelled:  # the person pressed Stop: this automatic run is over (a crash keeps it for resume)
            self._emit({"type": "auto", "steps": None, "policy": self.config.policy})
            raise
        self._emit({"type": "auto", "steps": None, "policy": self.config.policy})
        return "done"


DEFAULT_PRESET = "recommended"  # what a new session starts with, for either method (the paper presets stay faithful)


def default_policy(preset: str) -> str:
    """The gate policy a new session starts with: adaptive for the "recommended" presets, else strict."""
    return "adaptive" if preset == "recommended" else "strict"


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


def make_engine(cfg: SessionConfig) -> ProtegiEngine | TextGradEngine:
    ec = cfg.engine_config()
    return ProtegiEngine(ec) if cfg.method == "protegi" else TextGradEngine(ec)


def hash_seed(*parts: Any) -> int:
    """A stable seed from parts (Python's hash() of str is salted per process)."""
    import hashlib

    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


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

"""Studies: a grid of ordinary headless sessions (seeds x backward models x validation sizes x bandits x presets),
run concurrently under one shared per-provider concurrency limit (core/limits.SharedRunner), resumable.

A study is a small JSON manifest, <data>/studies/<id>.json (written atomically), listing each run's settings
and its session id, fixed before any run starts: running the study again opens the unfinished sessions
(Session.open + run_auto) and skips the finished ones. Results are read from the sessions themselves.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, Callable

from . import paths
from .bandits import ALGORITHMS
from .config import DEFAULT_PRESET, PRESETS, SessionConfig, SessionError, default_policy
from .engine import Cancelled
from .llm import LLMError
from .metrics import SampleSummary, summarise
from .runner import CancelToken
from .session import Models, Session, load_session_task
from .testlock import score_split, version_entries

INTERVAL = "95 % t-interval over runs: mean ± t(0.975, n-1) · sd / sqrt(n), sd with n - 1"
BANDIT_ALIASES = {"sr": "successive-rejects", "sh": "successive-halving", "bf": "brute-force"}
_STUDY_ID = re.compile(r"^study-[A-Za-z0-9_\-]{1,40}$")
MAX_RUNS = 500


class StudyError(SessionError):
    """A study that cannot be planned, read or resumed; the message is for the user."""


@dataclass(frozen=True)
class StudyPreset:
    """A check a study preset runs: the axis it varies and how many seeds."""

    name: str
    about: str
    seeds: int = 3
    val_sizes: tuple[int, ...] = ()
    bandits: tuple[str, ...] = ()
    backwards_needed: int = 1
    method: str | None = None


STUDY_PRESETS: dict[str, StudyPreset] = {p.name: p for p in (
    StudyPreset("stability over 5 seeds", "the same settings rerun with five seeds", seeds=5),
    StudyPreset("backward model ablation", "each backward model (--backward A,B) over three seeds", backwards_needed=2),
    StudyPreset("validation 50 vs 200", "a 50- and a 200-question validation set over three seeds",
                val_sizes=(50, 200)),
    StudyPreset("UCB vs Successive Rejects", "ProTeGi's candidate bandit, UCB against Successive Rejects, over "
                "three seeds", bandits=("ucb", "successive-rejects"), method="protegi"),
)}


@dataclass(frozen=True)
class RunSettings:
    """What one run of a study varies; everything else is the study's."""

    seed: int
    backward: str
    val_size: int | None = None
    bandit: str | None = None
    preset: str = DEFAULT_PRESET

    def setting(self) -> tuple:
        """The run's setting: its settings without the seed (the runs of a setting differ only by seed)."""
        return (self.backward, self.val_size, self.bandit, self.preset)


@dataclass
class StudySpec:
    """The study's fixed part and its grid."""

    task: dict  # a session's task spec (built-in: name, seed, split_version; custom: load_custom keywords + file)
    method: str
    forward: str
    backwards: list[str]
    steps: int
    seeds: int = 3
    val_sizes: list[int | None] = field(default_factory=lambda: [None])
    bandits: list[str | None] = field(default_factory=lambda: [None])
    presets: list[str] = field(default_factory=lambda: [DEFAULT_PRESET])
    base_url: str | None = None
    backward_base_url: str | None = None
    val_limit: int | None = None
    patience: int = 3
    data_file: str | None = None  # a custom task's file (absolute), read when a run's session is created
    reveal_test: bool = False  # score each finished run's final prompt on the sealed test split (logged)
    test_limit: int | None = None
    preset_study: str | None = None

    @property
    def task_name(self) -> str:
        return self.task.get("name") or os.path.basename(self.data_file or "") or "?"

    def grid(self) -> list[RunSettings]:
        """Every run, setting by setting, seeds innermost."""
        return [RunSettings(seed, b, v, bd, p) for b, v, bd, p, seed in
                product(self.backwards, self.val_sizes, self.bandits, self.presets, range(self.seeds))]

    def check(self) -> None:
        """One clear line (StudyError) for a grid that cannot run; each run's config is checked too."""
        if not 1 <= self.seeds <= 100:
            raise StudyError(f"--seeds must be 1 to 100 (got {self.seeds}).")
        if not self.backwards or any(not b.strip() for b in self.backwards):
            raise StudyError("--backward needs at least one model spec (comma-separated for an ablation).")
        if any(b is not None for b in self.bandits) and self.method != "protegi":
            raise StudyError("--bandits compares ProTeGi's candidate bandits: use --method protegi.")
        for b in self.bandits:
            if b is not None and b not in ALGORITHMS:
                raise StudyError(f"Unknown bandit '{b}'. Use: {', '.join(ALGORITHMS)} (sr, sh, bf for short).")
        for p in self.presets:
            if p not in PRESETS.get(self.method, {}):
                raise StudyError(f"Unknown preset '{p}' for {self.method}. Presets: "
                                 f"{', '.join(PRESETS.get(self.method, {}))}.")
        for v in self.val_sizes:
            if v is not None and not (isinstance(v, int) and 1 <= v <= 100_000):
                raise StudyError(f"--val-sizes must be whole numbers from 1 (got {v!r}).")
        for axis in (self.backwards, self.val_sizes, self.bandits, self.presets):
            if len(set(axis)) != len(axis):
                raise StudyError(f"A study axis lists a value twice: {', '.join(map(str, axis))}.")
        n = len(self.grid())
        if n > MAX_RUNS:
            raise StudyError(f"This study has {n} runs; at most {MAX_RUNS} are allowed.")
        for r in self.grid()[:: self.seeds]:  # one per setting: the seed does not change what is valid
            self.session_config(r).check()

    def check_tasks(self) -> None:
        """Each validation size's task loads (a size the data cannot hold is refused before anything is written)."""
        content = None
        if self.data_file:
            try:
                content = Path(self.data_file).read_bytes()
            except OSError as exc:
                raise StudyError(f"Cannot read {self.data_file}: {exc.strerror or exc}.") from None
        for v in self.val_sizes:
            task = dict(self.task, **({"val_size": v} if v is not None else {}))
            if self.data_file:
                task["file"] = os.path.basename(self.data_file)
            try:
                load_session_task(task, Path(self.data_file or ".").parent, content)
            except SessionError as exc:
                raise StudyError(f"Validation size {v or 'default'}: {exc}") from None

    def session_config(self, r: RunSettings) -> SessionConfig:
        """The ordinary session config of one run."""
        task = dict(self.task)
        if r.val_size is not None:
            task["val_size"] = r.val_size
        return SessionConfig(task=task, method=self.method, preset=r.preset, forward=self.forward, backward=r.backward,
                             forward_base_url=self.base_url, backward_base_url=self.backward_base_url or self.base_url,
                             seed=r.seed, policy=default_policy(r.preset), patience=self.patience,
                             val_limit=self.val_limit, params={"bandit": r.bandit} if r.bandit else {})


def parse_bandits(text: str | None) -> list[str | None]:
    """`ucb,sr` -> ["ucb", "successive-rejects"]; None -> [None] (the preset's own bandit)."""
    if not text:
        return [None]
    return [BANDIT_ALIASES.get(x.strip().lower(), x.strip().lower()) for x in text.split(",") if x.strip()]


def apply_preset(spec: StudySpec, name: str, seeds_given: bool) -> StudySpec:
    """The grid a study preset asks for (its axis and seed count; an explicit --seeds wins)."""
    preset = STUDY_PRESETS.get(name)
    if preset is None:
        raise StudyError(f"Unknown study preset '{name}'. Presets: {'; '.join(STUDY_PRESETS)}.")
    if preset.method and spec.method != preset.method:
        raise StudyError(f"The study preset '{name}' needs --method {preset.method}.")
    if len(spec.backwards) < preset.backwards_needed:
        raise StudyError(f"The study preset '{name}' needs {preset.backwards_needed} backward models: "
                         f"--backward SPEC1,SPEC2.")
    spec.preset_study = name
    if not seeds_given:
        spec.seeds = preset.seeds
    if preset.val_sizes:
        spec.val_sizes = list(preset.val_sizes)
    if preset.bandits:
        spec.bandits = list(preset.bandits)
    return spec


# ---------------------------------------------------------------- the manifest


def studies_root(sessions: Path | str | None = None) -> Path:
    """PGS_STUDIES_DIR, else `studies` beside the sessions folder."""
    value = os.environ.get("PGS_STUDIES_DIR")
    if value:
        return Path(value).expanduser()
    return (Path(sessions) if sessions is not None else paths.sessions_dir()).parent / "studies"


@dataclass
class StudyRun:
    """One run: its settings, its session (id fixed when the study is planned) and how it last ended."""

    settings: RunSettings
    session: str
    status: str = "pending"  # pending | running | done | failed
    error: str | None = None


@dataclass
class Study:
    id: str
    spec: StudySpec
    runs: list[StudyRun]
    created: float = 0.0
    path: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @staticmethod
    def plan(spec: StudySpec, root: Path | str) -> "Study":
        """A new study: checked, its manifest written before any run starts."""
        spec.check()
        spec.check_tasks()
        sid = "study-" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        runs = [StudyRun(r, f"{sid[6:]}-r{n:03d}") for n, r in enumerate(spec.grid(), 1)]
        study = Study(sid, spec, runs, time.time(), Path(root) / f"{sid}.json")
        study.save()
        return study

    @staticmethod
    def load(study_id: str, root: Path | str) -> "Study":
        if not _STUDY_ID.match(study_id or ""):
            raise StudyError(f"'{study_id}' is not a study id (they look like study-20261202-013000-ab12cd).")
        path = Path(root) / f"{study_id}.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            spec = StudySpec(**d["spec"])
            runs = [StudyRun(RunSettings(**r["settings"]), str(r["session"]), str(r.get("status", "pending")),
                             r.get("error")) for r in d["runs"]]
        except FileNotFoundError:
            raise StudyError(f"No study '{study_id}' in {root}.") from None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StudyError(f"The study manifest {path} cannot be read ({type(exc).__name__}); restore it.") from None
        try:
            spec.check()
        except SessionError as exc:
            raise StudyError(f"The study manifest {path} has a setting that is not allowed: {exc}") from None
        if [r.settings for r in runs] != spec.grid():
            raise StudyError(f"The study manifest {path} lists runs its grid does not have; restore it.")
        return Study(study_id, spec, runs, float(d.get("created", 0)), path)

    def to_json(self) -> dict:
        return {"id": self.id, "created": self.created, "spec": asdict(self.spec),
                "runs": [{"settings": asdict(r.settings), "session": r.session, "status": r.status, "error": r.error}
                         for r in self.runs]}

    def save(self) -> None:
        """The manifest, whole or not at all (a temporary file beside it, fsynced, then a rename)."""
        assert self.path is not None
        with self._lock:
            data = json.dumps(self.to_json(), indent=1).encode("utf-8")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".study-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise

    def set_status(self, run: StudyRun, status: str, error: str | None = None) -> None:
        run.status, run.error = status, error
        self.save()


def list_studies(root: Path | str) -> list[dict]:
    """Studies on disk, newest first: id, created, runs, finished runs, task, method."""
    out = []
    root = Path(root)
    if not root.is_dir():
        return out
    for p in root.glob("study-*.json"):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            out.append({"id": p.stem, "created": float(d.get("created", 0)), "runs": len(d["runs"]),
                        "done": sum(1 for r in d["runs"] if r.get("status") == "done"),
                        "task": d["spec"]["task"].get("name") or os.path.basename(d["spec"].get("data_file") or "?"),
                        "method": d["spec"]["method"], "preset_study": d["spec"].get("preset_study")})
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return sorted(out, key=lambda x: -x["created"])


# ---------------------------------------------------------------- running


def finished(s: Session, steps: int) -> bool:
    """A run is over when its session stopped (patience) or has decided the study's `steps` steps."""
    return bool(s.stopped) or (bool(s.versions) and s.folded.finished_steps >= steps)


def final_test(s: Session) -> float | None:
    """The latest test score of the session's final version (None while test is sealed for it)."""
    if not s.versions:
        return None
    final = s.versions[-1].number
    out = None
    for ev in s.events:
        if ev.get("type") == "test_revealed":
            for sc in ev.get("scores") or []:
                if sc.get("version") == final and isinstance(sc.get("accuracy"), (int, float)) and sc.get("n"):
                    out = float(sc["accuracy"])
    return out


def run_study(study: Study, *, sessions: Path | str, models_for: Callable[[SessionConfig], Models],
              parallel: int = 4, say: Callable[[str], None] = print, test_runner: Any = None,
              cancel: CancelToken | None = None) -> list[StudyRun]:
    """Run (or resume) every unfinished run, `parallel` at a time; each run's calls go through the runner
    `models_for` gives (one SharedRunner for all, so the per-provider limit is the study's); `test_runner`
    (e.g. core/batch.BatchAsRunner) scores the test reveals instead. Ctrl-C (or `cancel`) stops every run at
    once; the runs stay unfinished for the next resume. Returns the runs."""
    total = len(study.runs)
    steps = study.spec.steps
    cancel = cancel or CancelToken()
    say_lock = threading.Lock()

    def tell(text: str) -> None:
        with say_lock:
            say(text)

    def one(n: int, run: StudyRun) -> None:
        name = f"run {n}/{total} [{settings_text(run.settings)}]"
        try:
            s = _open_or_create(study, run, sessions, models_for)
        except (SessionError, LLMError, OSError) as exc:
            study.set_status(run, "failed", str(exc))
            tell(f"{name}: failed: {exc}")
            return
        with s:
            try:
                if finished(s, steps) and (not study.spec.reveal_test or final_test(s) is not None):
                    if run.status != "done":
                        study.set_status(run, "done")
                    tell(f"{name}: session {s.id} already finished, skipped")
                    return
                study.set_status(run, "running")
                tell(f"{name}: session {s.id} {'resumed' if s.versions else 'started'}")
                s.models = models_for(s.config)
                if not finished(s, steps):
                    remaining = steps - s.folded.finished_steps
                    if s.auto is None:  # a run cancelled before: plan only what the study still needs
                        s.plan_auto(remaining)
                    s.run_auto(remaining, cancel=cancel, on_step=lambda _s, st: tell(
                        f"{name}: step {st.index} {st.outcome or 'open'}"))
                if study.spec.reveal_test and final_test(s) is None:
                    if test_runner is not None:
                        s.models = replace(s.models, runner=test_runner)
                    _reveal_final(s, study.spec.test_limit)
                study.set_status(run, "done")
                r = run_result(s, run, steps)
                test = "" if r.test is None else f", test {r.test:.3f}"
                tell(f"{name}: done: val {r.baseline_val:.3f} -> {r.final_val:.3f}{test}, {r.calls} calls, "
                     f"${r.cost_usd:.4f}")
            except Cancelled:
                tell(f"{name}: stopped; pgs study --resume {study.id} continues it")
            except (SessionError, LLMError, OSError) as exc:
                study.set_status(run, "failed", str(exc))
                tell(f"{name}: failed: {exc}")

    todo = list(enumerate(study.runs, 1))
    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(todo) or 1)), thread_name_prefix="study")
    try:
        for fut in [pool.submit(one, n, r) for n, r in todo]:
            fut.result()  # a bug in one run is raised here, after the others finished
    except BaseException:  # Ctrl-C or a bug: no run is started after it, the running ones abort their calls
        cancel.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return study.runs


def _open_or_create(study: Study, run: StudyRun, sessions: Path | str,
                    models_for: Callable[[SessionConfig], Models]) -> Session:
    root = Path(sessions)
    if (root / run.session / "events.jsonl").exists():
        return Session.open(run.session, root=root)
    cfg = study.spec.session_config(run.settings)
    data = None
    if study.spec.data_file:
        try:
            data = (os.path.basename(study.spec.data_file), Path(study.spec.data_file).read_bytes())
        except OSError as exc:
            raise StudyError(f"Cannot read the study's data file {study.spec.data_file}: "
                             f"{exc.strerror or exc}.") from None
    return Session.create(replace(cfg, title=f"{study.id}: {settings_text(run.settings)}"), root=root,
                          sid=run.session, data=data)


def _reveal_final(s: Session, limit: int | None) -> None:
    score_split(s, version_entries(s, [s.versions[-1].number]), "test", limit=limit, reveal=True)


# ---------------------------------------------------------------- results


@dataclass
class RunResult:
    """One run as its session records it."""

    session: str
    settings: RunSettings
    status: str
    final_val: float | None = None
    baseline_val: float | None = None
    test: float | None = None
    calls: int = 0
    cost_usd: float = 0.0
    steps: int = 0
    accepted: int = 0
    error: str | None = None

    def to_json(self) -> dict:
        return {"session": self.session, **asdict(self.settings), "status": self.status, "final_val": self.final_val,
                "baseline_val": self.baseline_val, "test": self.test, "calls": self.calls,
                "cost_usd": round(self.cost_usd, 6), "steps": self.steps, "accepted": self.accepted,
                **({"error": self.error} if self.error else {})}


def run_result(s: Session | None, run: StudyRun, steps: int) -> RunResult:
    """What a run's session says (a run whose session does not exist yet has no scores)."""
    if s is None:
        return RunResult(run.session, run.settings, run.status, error=run.error)
    vals = [v.accuracy for v in s.versions]
    return RunResult(run.session, run.settings, "done" if finished(s, steps) else run.status,
                     vals[-1] if vals else None, vals[0] if vals else None, final_test(s), s.spend.calls,
                     s.spend.cost_usd, sum(1 for st in s.steps if st.outcome),
                     sum(1 for st in s.steps if st.outcome == "accepted"), run.error)


def read_results(study: Study, sessions: Path | str) -> list[RunResult]:
    """Every run's result, read from its session (read-only, so a running study can be looked at)."""
    out = []
    for run in study.runs:
        try:
            s = Session.open(run.session, root=sessions, readonly=True)
        except SessionError:
            out.append(run_result(None, run, study.spec.steps))
            continue
        with s:
            out.append(run_result(s, run, study.spec.steps))
    return out


@dataclass
class SettingSummary:
    """The finished runs of one setting (or of the whole study): final validation and test across seeds."""

    label: str
    setting: dict
    runs: int
    final_val: SampleSummary
    test: SampleSummary
    calls: int
    cost_usd: float

    def to_json(self) -> dict:
        return {"label": self.label, **self.setting, "runs": self.runs, "final_val": self.final_val.to_json(),
                "test": self.test.to_json() if self.test.n else None, "calls": self.calls,
                "cost_usd": round(self.cost_usd, 6)}


AXES = ("backward", "val_size", "bandit", "preset")


def settings_text(r: RunSettings) -> str:
    return (f"seed {r.seed}, backward {r.backward}, val {r.val_size or 'task default'}, "
            f"bandit {r.bandit or 'preset'}, {r.preset}")


def setting_label(r: RunSettings, varying: list[str]) -> str:
    """The setting in words, naming only the axes the study varies."""
    if not varying:
        return "all runs"
    words = {"backward": f"backward {r.backward}", "val_size": f"val {r.val_size or 'default'}",
             "bandit": f"bandit {r.bandit or 'preset'}", "preset": f"preset {r.preset}"}
    return " · ".join(words[a] for a in varying)


def varying_axes(results: list[RunResult]) -> list[str]:
    return [a for a in AXES if len({getattr(r.settings, a) for r in results}) > 1]


def _summary(label: str, setting: dict, rs: list[RunResult]) -> SettingSummary:
    done = [r for r in rs if r.final_val is not None and r.status == "done"]
    return SettingSummary(label, setting, len(done), summarise([r.final_val for r in done]),
                          summarise([r.test for r in done if r.test is not None]),
                          sum(r.calls for r in rs), sum(r.cost_usd for r in rs))


def summarise_study(results: list[RunResult]) -> tuple[list[SettingSummary], SettingSummary]:
    """Per setting (in grid order) and overall, over the finished runs."""
    varying = varying_axes(results)
    groups: dict[tuple, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.settings.setting(), []).append(r)
    per = [_summary(setting_label(rs[0].settings, varying), {a: getattr(rs[0].settings, a) for a in AXES}, rs)
           for rs in groups.values()]
    return per, _summary("overall", {}, results)


def study_json(study: Study, results: list[RunResult]) -> dict:
    """The --json line of `pgs study`."""
    per, overall = summarise_study(results)
    return {"study": study.id, "manifest": str(study.path), "preset_study": study.spec.preset_study,
            "task": study.spec.task, "method": study.spec.method, "forward": study.spec.forward,
            "steps": study.spec.steps, "interval": INTERVAL, "runs": [r.to_json() for r in results],
            "settings": [p.to_json() for p in per], "overall": overall.to_json(),
            "finished": sum(1 for r in results if r.status == "done"), "total": len(results)}

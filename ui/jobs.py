"""Long jobs: one worker thread per job, held by a process-wide registry (`st.cache_resource`).

The registry also holds the one writable `Session` object per open session (it owns the writer
lock), so reruns, page switches and other tabs all see the same session and the same running job.
Workers never call `st.*`: they update the `Job` (phase, progress, partial results), and an
`st.fragment(run_every=1.0)` redraws it. With PGS_INLINE_JOBS=1 a job runs synchronously in the
script thread instead (AppTest runs scripts synchronously).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from core import paths
from core.cache import CacheError, ResponseCache
from core.engine import Cancelled
from core.llm import LLMError, RetryNotice, for_surface, redact
from core.runner import CancelToken, Progress
from core.session import Session, SessionError, SessionLocked
from core.tasks import TaskError

from .render import md_escape
from .status import phase_label, retry_text

USER_ERRORS = (SessionError, LLMError, TaskError, CacheError, ValueError)
MAX_FINISHED = 40


class JobBusy(RuntimeError):
    """Another job is already running on this session."""


@dataclass
class Job:
    id: str
    kind: str  # "baseline" | "step" | "validate" | "auto" | "evaluate"
    label: str
    owner: str  # the session key "root::sid"
    status: str = "running"  # running | done | error | cancelled
    phase: str = "starting"
    progress: Progress | None = None
    phases: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    result: Any = None
    partial: list[Any] = field(default_factory=list)  # e.g. steps finished by an auto-run
    cancel: CancelToken = field(default_factory=CancelToken)
    thread: threading.Thread | None = None
    seen: bool = False  # the finished result was shown once
    _parts: dict = field(default_factory=dict, repr=False)  # phase -> {id: Progress} of its batches
    retry: tuple[RetryNotice, float, int] | None = None  # the latest SDK retry: (notice, when, calls done then)

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started

    def on_progress(self, phase: str, p: Progress) -> None:
        """A PhaseProgress callback (called from the worker's event loop): the phase's batches summed."""
        self.phase = phase
        if phase not in self.phases:
            self.phases.append(phase)
        parts = self._parts.setdefault(phase, {})
        parts[id(p)] = p
        agg = Progress()
        for q in list(parts.values()):
            for k in ("done", "total", "cached", "failed", "input_tokens", "output_tokens", "cost_usd", "saved_usd"):
                setattr(agg, k, getattr(agg, k) + getattr(q, k))
        self.progress = agg

    def on_retry(self, notice: RetryNotice) -> None:
        """A ClientOptions.on_retry callback (the worker's event loop): shown until the next call finishes."""
        self.retry = (notice, time.time(), self.progress.done if self.progress else 0)

    def retry_line(self) -> str | None:
        if self.retry is None or not self.running:
            return None
        notice, at, done = self.retry
        if self.progress is not None and self.progress.done > done:
            return None
        return retry_text(notice, at)

    def fraction(self) -> float:
        p = self.progress
        if p is None or not p.total:
            return 0.0
        return min(1.0, p.done / p.total)


def session_key(root: Path | str, sid: str) -> str:
    return f"{Path(root).resolve()}::{sid}"


def error_message(exc: BaseException) -> str:
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    return f"Unexpected error ({type(exc).__name__}): {exc}"


class Registry:
    """Jobs, open sessions and response caches for this server process."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[str, Job] = {}
        self.sessions: dict[str, Session] = {}
        self.readonly: dict[str, tuple[Session, tuple[int, int], str]] = {}
        self.caches: dict[str, ResponseCache] = {}
        self.imported: set[str] = set()  # session keys imported from a bundle by this process

    # ---------- jobs ----------
    def start(self, kind: str, label: str, owner: str, fn: Callable[[Job], Any], *,
              inline: bool | None = None, secrets: list[str] | None = None) -> Job:
        """Run fn(job) in a worker thread (or inline); one running job per owner."""
        with self.lock:
            busy = self.active(owner)
            if busy is not None:
                raise JobBusy(f"'{busy.label}' is still running on this session; wait for it or cancel it.")
            job = Job(uuid.uuid4().hex[:10], kind, label, owner)
            self.jobs[job.id] = job
            self._prune()
        if inline is None:
            inline = os.environ.get("PGS_INLINE_JOBS", "") not in ("", "0")
        if inline:
            _work(job, fn, secrets or [])
        else:
            job.thread = threading.Thread(target=_work, args=(job, fn, secrets or []), daemon=True,
                                          name=f"pgs-job-{job.id}")
            job.thread.start()
        return job

    def get(self, job_id: str | None) -> Job | None:
        return self.jobs.get(job_id or "")

    def active(self, owner: str) -> Job | None:
        for job in self.jobs.values():
            if job.owner == owner and job.running:
                return job
        return None

    def latest(self, owner: str, kinds: tuple[str, ...] | None = None) -> Job | None:
        found = [j for j in self.jobs.values() if j.owner == owner and (kinds is None or j.kind in kinds)]
        return max(found, key=lambda j: j.started) if found else None

    def _prune(self) -> None:
        done = sorted((j for j in self.jobs.values() if not j.running), key=lambda j: j.started)
        for j in done[:-MAX_FINISHED] if len(done) > MAX_FINISHED else []:
            self.jobs.pop(j.id, None)

    # ---------- sessions ----------
    def session(self, root: Path, sid: str) -> tuple[Session, str | None]:
        """The session, writable when this process can hold its lock; else read-only with the reason."""
        key = session_key(root, sid)
        with self.lock:
            s = self.sessions.get(key)
            if s is not None:
                return s, None
            try:
                s = Session.open(sid, root=root)
                self.sessions[key] = s
                self.readonly.pop(key, None)
                return s, None
            except SessionLocked as exc:
                reason = str(exc)
            except SessionError as exc:  # e.g. a corrupt line: what loads can still be shown and exported
                reason = f"{exc} Showing what loads, read-only."
            path = Path(root) / sid / "events.jsonl"
            st_ = path.stat()
            stamp = (st_.st_mtime_ns, st_.st_size)
            cached = self.readonly.get(key)
            if cached is not None and cached[1] == stamp:
                return cached[0], reason
            s = Session.open(sid, root=root, readonly=True)
            self.readonly[key] = (s, stamp, reason)
            return s, reason

    def add_session(self, s: Session) -> None:
        with self.lock:
            self.sessions[session_key(s.root, s.id)] = s

    def close_session(self, root: Path, sid: str) -> None:
        key = session_key(root, sid)
        with self.lock:
            if self.active(key) is not None:
                raise JobBusy("A job is running on this session; cancel it first.")
            s = self.sessions.pop(key, None)
            self.readonly.pop(key, None)
        if s is not None:
            s.close()

    # ---------- caches ----------
    def cache(self, directory: str | None = None) -> ResponseCache:
        """The response cache for a directory (default: core/paths.py, looked up now); raises CacheError."""
        d = str(directory or paths.cache_dir())
        with self.lock:
            c = self.caches.get(d)
            if c is None:
                c = self.caches[d] = ResponseCache(d)
            return c


def _work(job: Job, fn: Callable[[Job], Any], secrets: list[str]) -> None:
    try:
        job.result = fn(job)
        job.status = "cancelled" if job.cancel.cancelled else "done"
    except Cancelled:
        job.status = "cancelled"
    except BaseException as exc:  # noqa: BLE001 - a worker must never die silently
        job.status = "error"
        job.error = redact(for_surface(error_message(exc), "app"), secrets)
        if not isinstance(exc, USER_ERRORS):
            sys.stderr.write(redact(traceback.format_exc(), secrets))
    finally:
        job.finished = time.time()


@st.cache_resource(show_spinner=False)
def registry() -> Registry:
    """The process-wide registry: survives reruns and page switches."""
    return Registry()


# ---------- drawing ----------
def _progress_text(job: Job) -> str:
    p = job.progress
    retry = job.retry_line()
    if p is None or not p.total:
        return f"{job.label} · waiting for the first answers · {job.elapsed:.0f}s" + (f" · {retry}" if retry else "")
    bits = [f"{job.label}", f"phase: {phase_label(job.phase)}"]
    if p is not None and p.total:
        bits.append(f"{p.done}/{p.total} calls")
        if p.cached:
            bits.append(f"{p.cached} from cache")
        if p.failed:
            bits.append(f"{p.failed} failed")
    bits.append(f"{job.elapsed:.0f}s")
    return " · ".join(bits) + (f" · {retry}" if retry else "")


def draw_running(job: Job, *, key: str) -> None:
    st.progress(job.fraction(), text=_progress_text(job))
    if job.partial:
        st.caption(f"Finished so far: {len(job.partial)}")
    if job.cancel.cancelled:
        st.caption("Stopping after the calls in flight… (finished calls are cached and recorded)")
    else:
        st.button("Stop" if job.kind == "auto" else "Cancel", key=f"cancel_{key}", icon=":material/stop:",
                  on_click=job.cancel.cancel,
                  help="stop launching calls; finished calls stay cached and recorded steps stay recorded")


def draw_finished(job: Job, *, key: str) -> None:
    """A finished job's outcome: success once; an error or a cancellation until dismissed."""
    if job.seen:
        return
    if job.status == "done":
        st.success(f"{job.label} finished in {job.elapsed:.1f}s.", icon=":material/check_circle:")
        job.seen = True
        return
    c = st.columns([6, 1], vertical_alignment="center")
    if job.status == "error":
        c[0].error(f"{job.label} failed: {md_escape(job.error)}", icon=":material/error:")
    else:
        c[0].warning(f"{job.label} was cancelled after {job.elapsed:.0f}s. Finished calls are cached; "
                     "running it again resumes cheaply.", icon=":material/stop:")
    c[1].button("Dismiss", key=f"dismiss_{key}", on_click=lambda: setattr(job, "seen", True))


def job_panel(job: Job | None, *, key: str, live: Callable[[], None] | None = None,
              version: Callable[[], object] | None = None) -> None:
    """Progress with a cancel button while running, redrawn every second, with a full rerun when the
    job ends or `version()` changes (e.g. a new event in the session log); else the finished outcome."""
    if job is None:
        return
    if not job.running:
        draw_finished(job, key=key)
        return
    reg = registry()
    seen_version = version() if version else None

    @st.fragment(run_every=1.0)
    def _panel() -> None:
        j = reg.get(job.id)
        if j is None or not j.running or (version is not None and version() != seen_version):
            st.rerun()
        with st.container(border=True):
            draw_running(j, key=key)
            if live is not None:
                live()

    _panel()

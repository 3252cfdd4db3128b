"""Running many calls at once: a concurrency limit per provider, the cache, cancellation (in-flight
requests are aborted), progress and partial results; `run_job` runs one job on one event loop.
Retries, backoff and Retry-After are the SDKs' own."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from .cache import ResponseCache, cache_key
from .llm import AuthError, ChatModel, Completion, LLMError, Request, redact
from .progress import JobProgress, Progress, ProgressFn  # noqa: F401 - Progress re-exported (ui, cli, tests)

T = TypeVar("T")

CANCELLED = "cancelled before it started"


@dataclass
class BatchResult:
    completions: list[Completion]  # one per request, in order; not-started ones carry CANCELLED
    progress: Progress
    cancelled: bool = False
    fatal: str | None = None  # e.g. authentication failed: the batch stopped at once


class CancelToken:
    """A thread-safe flag a UI button or signal handler sets: no call is launched after it, and the
    batches running when it is set abort their in-flight requests (through `on_cancel`)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()

    def on_cancel(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Call `fn` (from the cancelling thread) when cancelled, at once if already; returns an unsubscribe."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return lambda: self._unsubscribe(fn)
        fn()
        return lambda: None

    def _unsubscribe(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if fn in self._callbacks:
                self._callbacks.remove(fn)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class Runner:
    cache: ResponseCache | None = None
    concurrency: int = 8
    _sems: dict = field(default_factory=dict, repr=False)

    def _sem(self, model: ChatModel) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        k = (id(loop), model.spec.provider, model.spec.base_url)
        sem = self._sems.get(k)
        if sem is None:
            if len(self._sems) > 64:
                self._sems.clear()
            sem = self._sems[k] = asyncio.Semaphore(max(1, self.concurrency))
        return sem

    def lookup(self, model: ChatModel, req: Request) -> Completion | None:
        if self.cache is None or not req.use_cache:
            return None
        return self.cache.get(cache_key(model.spec, req))

    async def arun(self, model: ChatModel, requests: Sequence[Request], *,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   on_result: Callable[[Completion], None] | None = None,
                   job: JobProgress | None = None, phase: str = "") -> BatchResult:
        """Answer every request (cache first); `on_result` sees each completion the moment it lands, `job`
        counts them under `phase`. A cancel aborts the requests in flight: they come back as CANCELLED."""
        prog = Progress(total=len(requests))
        results: list[Completion | None] = [None] * len(requests)
        state = {"fatal": None}
        keys = [cache_key(model.spec, r) if self.cache is not None else "" for r in requests]

        def finish(i: int, c: Completion, seconds: float | None = None, sent: bool = True) -> None:
            c.key = keys[i]
            results[i] = c
            prog.add(c)
            if on_result:
                on_result(c)
            if job is not None:
                job.land(phase, c, seconds, sent=sent)
            if progress:
                progress(prog)

        if job is not None:
            job.ask(phase, len(requests))
        pending = []
        for i, req in enumerate(requests):  # cache hits first, without touching the network
            hit = self.cache.get(keys[i]) if (self.cache is not None and req.use_cache) else None
            if hit is not None:
                finish(i, hit, sent=False)
            else:
                pending.append(i)
        if progress and not pending:
            progress(prog)

        sem = self._sem(model)
        tasks: list[asyncio.Future] = []
        loop = asyncio.get_running_loop()

        def abort_all() -> None:
            for t in tasks:
                t.cancel()

        def on_cancel() -> None:  # from whichever thread pressed stop
            try:
                loop.call_soon_threadsafe(abort_all)
            except RuntimeError:  # the loop is already closed: nothing is in flight
                pass

        async def one(i: int) -> None:
            async with sem:
                if state["fatal"] or (cancel is not None and cancel.cancelled):
                    return
                t0 = time.monotonic()
                if job is not None:
                    job.launch(phase)
                try:
                    c = await model.acomplete(requests[i])
                except asyncio.CancelledError:
                    if job is not None:
                        job.drop(phase)
                    raise
                except AuthError as exc:
                    if job is not None:
                        job.drop(phase)
                    state["fatal"] = str(exc)
                    me = asyncio.current_task()
                    for t in tasks:  # stop the batch at once
                        if t is not me:
                            t.cancel()
                    return
                except LLMError as exc:
                    c = Completion(error=str(exc), model=str(model.spec))
                except BaseException:
                    if job is not None:
                        job.drop(phase)
                    raise
            if c.error is None and self.cache is not None:
                try:
                    self.cache.put(keys[i], c)
                except Exception:  # noqa: BLE001 - a full disk must not lose the answer
                    pass
            finish(i, c, time.monotonic() - t0)

        if pending:
            # one gather, not a wait(FIRST_COMPLETED) loop: that re-registers every pending task on each
            # wake-up, O(n^2) (8,000 calls cost 3.4 s of event-loop CPU)
            tasks += [asyncio.ensure_future(one(i)) for i in pending]
            unsubscribe = cancel.on_cancel(on_cancel) if cancel is not None else (lambda: None)
            try:
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                unsubscribe()
                for t in tasks:
                    t.cancel()
            for i, r in zip(pending, outcomes):  # a model or callback bug is a failed result, not a lost one
                if isinstance(r, Exception) and results[i] is None:
                    secrets = [os.environ.get("OPENAI_API_KEY"), os.environ.get("ANTHROPIC_API_KEY"),
                               getattr(model, "_api_key", None)]
                    finish(i, Completion(error=redact(f"{type(r).__name__}: {r}", secrets)[:500], model=str(model.spec)),
                           sent=False)
        if job is not None:
            job.unask(phase, sum(c is None for c in results))
        cancelled = bool(cancel is not None and cancel.cancelled)
        out = [c if c is not None else Completion(error=state["fatal"] or CANCELLED, model=str(model.spec))
               for c in results]
        return BatchResult(out, prog, cancelled=cancelled and any(c is None for c in results),
                           fatal=state["fatal"])

    def run(self, model: ChatModel, requests: Sequence[Request], **kw) -> BatchResult:
        """Synchronous wrapper: the batch as one job (`run_job`), the client closed after."""
        return run_job(lambda: self.arun(model, requests, **kw), model)


def run_job(coro_fn: Callable[[], Awaitable[T]], *models: Any) -> T:
    """Run one job (`coro_fn()`) on ONE event loop, then close the models' clients on that same loop.

    Every phase of a job runs here, with the bandit's batches and cancellation on the same loop. Called
    from a thread whose loop is running (a notebook cell, Playwright's sync API) the job gets its own loop in
    one worker thread and this call blocks until it ends, as a synchronous call should."""

    async def job() -> T:
        try:
            return await coro_fn()
        finally:
            closed: set[int] = set()
            for m in models:
                if m is not None and id(m) not in closed:
                    closed.add(id(m))
                    await m.aclose()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(job())
    box: dict[str, Any] = {}

    def in_thread() -> None:
        try:
            box["value"] = asyncio.run(job())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=in_thread, name="pgs-job", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine from sync code on one fresh event loop (closes nothing: see `run_job`)."""
    return run_job(lambda: coro)

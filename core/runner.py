"""Running many calls at once: a concurrency limit per provider, the cache, cancellation,
progress and partial results. Retries, backoff and Retry-After are the SDKs' own."""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .cache import ResponseCache, cache_key
from .llm import AuthError, ChatModel, Completion, LLMError, Request, redact

CANCELLED = "cancelled before it started"


@dataclass
class Progress:
    done: int = 0
    total: int = 0
    cached: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0

    def add(self, c: Completion) -> None:
        self.done += 1
        self.cached += c.cached
        self.failed += c.error is not None
        self.input_tokens += c.input_tokens
        self.output_tokens += c.output_tokens
        self.cost_usd += c.cost_usd
        self.saved_usd += c.saved_usd

    @property
    def calls(self) -> int:
        """Network calls made (finished, not from the cache)."""
        return self.done - self.cached


ProgressFn = Callable[[Progress], None]


@dataclass
class BatchResult:
    completions: list[Completion]  # one per request, in order; not-started ones carry CANCELLED
    progress: Progress
    cancelled: bool = False
    fatal: str | None = None  # e.g. authentication failed: the batch stopped at once

    def raise_for_fatal(self) -> None:
        if self.fatal:
            raise LLMError(self.fatal)


class CancelToken:
    """A thread-safe flag a UI button or signal handler sets to stop launching calls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

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
                   on_result: Callable[[Completion], None] | None = None) -> BatchResult:
        """Answer every request (cache first); `on_result` sees each completion the moment it lands."""
        prog = Progress(total=len(requests))
        results: list[Completion | None] = [None] * len(requests)
        state = {"fatal": None}
        keys = [cache_key(model.spec, r) if self.cache is not None else "" for r in requests]

        def finish(i: int, c: Completion) -> None:
            c.key = keys[i]
            results[i] = c
            prog.add(c)
            if on_result:
                on_result(c)
            if progress:
                progress(prog)

        pending = []
        for i, req in enumerate(requests):  # cache hits first, without touching the network
            hit = self.cache.get(keys[i]) if (self.cache is not None and req.use_cache) else None
            if hit is not None:
                finish(i, hit)
            else:
                pending.append(i)
        if progress and not pending:
            progress(prog)

        sem = self._sem(model)
        tasks: list[asyncio.Future] = []

        async def one(i: int) -> None:
            async with sem:
                if state["fatal"] or (cancel is not None and cancel.cancelled):
                    return
                try:
                    c = await model.acomplete(requests[i])
                except AuthError as exc:
                    state["fatal"] = str(exc)
                    me = asyncio.current_task()
                    for t in tasks:  # stop the batch at once
                        if t is not me:
                            t.cancel()
                    return
                except LLMError as exc:
                    c = Completion(error=str(exc), model=str(model.spec))
            if c.error is None and self.cache is not None:
                try:
                    self.cache.put(keys[i], c)
                except Exception:  # noqa: BLE001 - a full disk must not lose the answer
                    pass
            finish(i, c)

        if pending:
            # one gather, not a wait(FIRST_COMPLETED) loop: that re-registers every pending task on each
            # wake-up, O(n^2) (8,000 calls cost 3.4 s of event-loop CPU)
            tasks += [asyncio.ensure_future(one(i)) for i in pending]
            try:
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                for t in tasks:
                    t.cancel()
            for i, r in zip(pending, outcomes):  # a model or callback bug is a failed result, not a lost one
                if isinstance(r, Exception) and results[i] is None:
                    secrets = [os.environ.get("OPENAI_API_KEY"), os.environ.get("ANTHROPIC_API_KEY"),
                               getattr(model, "_api_key", None)]
                    finish(i, Completion(error=redact(f"{type(r).__name__}: {r}", secrets)[:500], model=str(model.spec)))
        cancelled = bool(cancel is not None and cancel.cancelled)
        out = [c if c is not None else Completion(error=state["fatal"] or CANCELLED, model=str(model.spec))
               for c in results]
        return BatchResult(out, prog, cancelled=cancelled and any(c is None for c in results),
                           fatal=state["fatal"])

    def run(self, model: ChatModel, requests: Sequence[Request], **kw) -> BatchResult:
        """Synchronous wrapper: runs the batch on a fresh event loop and closes the client after."""
        return run_sync(self._run_and_close(model, requests, **kw))

    async def _run_and_close(self, model: ChatModel, requests: Sequence[Request], **kw) -> BatchResult:
        try:
            return await self.arun(model, requests, **kw)
        finally:
            await model.aclose()


def run_sync(coro):
    """Run a coroutine from sync code, even when the calling thread already has a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001
            box["e"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


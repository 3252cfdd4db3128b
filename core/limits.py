"""One concurrency limit per provider shared by many jobs: a study's runs each run their phases on their own
event loop (core/runner.run_job) in their own thread, and asyncio.Semaphore holds only within one loop."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field

from .runner import Runner


class _Waiter:
    __slots__ = ("loop", "future", "granted")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.loop, self.future, self.granted = loop, future, False


class SharedLimit:
    """At most `n` holders at once across threads and event loops (an async context manager, first come first served)."""

    def __init__(self, n: int):
        self.n = max(1, int(n))
        self._free = self.n
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    @property
    def in_use(self) -> int:
        return self.n - self._free

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            w = _Waiter(loop, loop.create_future())
            self._waiters.append(w)
        try:
            await w.future
        except BaseException:  # cancelled while waiting: give back a slot handed over meanwhile
            with self._lock:
                granted = w.granted
                if not granted:
                    self._waiters.remove(w)
            if granted:
                self.release()
            raise

    def release(self) -> None:
        """Hand the slot to the longest waiter (on its own loop), else free it."""
        with self._lock:
            while self._waiters:
                w = self._waiters.popleft()
                w.granted = True
                try:
                    w.loop.call_soon_threadsafe(_grant, w.future)
                    return
                except RuntimeError:  # its loop is closed: nobody waits there any more
                    w.granted = False
            self._free += 1

    async def __aenter__(self) -> "SharedLimit":
        await self.acquire()
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()


def _grant(future: asyncio.Future) -> None:
    if not future.done():  # a waiter cancelled meanwhile releases the slot itself (it sees `granted`)
        future.set_result(None)


@dataclass
class SharedRunner(Runner):
    """A Runner whose `concurrency` per provider (and base URL) holds across every thread and event loop using
    it: one for all the runs of a study."""

    _limits: dict = field(default_factory=dict, repr=False)
    _limits_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _sem(self, model) -> SharedLimit:  # type: ignore[override]
        key = (model.spec.provider, model.spec.base_url)
        with self._limits_lock:
            limit = self._limits.get(key)
            if limit is None:
                limit = self._limits[key] = SharedLimit(self.concurrency)
            return limit

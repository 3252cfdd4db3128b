"""Counting calls. `Spend` is the ledger (what was paid: calls, cached, failed, tokens, cost), the one
counter every spend figure comes from; `Progress` is one batch's raw tally for a progress bar; `JobProgress`
is one job's progress (the phase running, k of N calls, elapsed time, time left) with the job's `Spend`."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .llm import Completion, TextSoFar

LIVE_TEXTS_KEPT = 8  # the latest streamed replies a job keeps for the page (older calls drop off)

# internal phase / template names -> the names a person reads
PHASE_NAMES = {"minibatch": "forward", "protegi.gradient": "gradient", "protegi.edit": "edit",
               "protegi.paraphrase": "paraphrase", "textgrad.loss": "loss", "textgrad.gradient": "gradient",
               "textgrad.update": "update", "backward": "optimiser"}


def phase_name(phase: str) -> str:
    """The human name of a phase ('protegi.gradient' -> 'gradient'); unknown names pass through."""
    return PHASE_NAMES.get(phase, phase)


@dataclass
class Spend:
    """Calls, tokens and cost actually made. A cache hit counts as saved, not spent; a failed call that
    returned no tokens cost nothing and counts as failed, not as a call."""

    calls: int = 0
    cached: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0

    def add(self, c: Completion) -> None:
        if c.cached:
            self.cached += 1
            self.saved_usd += c.saved_usd
            return
        if c.error is not None and not c.input_tokens:
            self.failed += 1
            return
        self.calls += 1
        self.input_tokens += c.input_tokens
        self.output_tokens += c.output_tokens
        self.cost_usd += c.cost_usd

    @property
    def requests(self) -> int:
        """Network requests that came back (paid calls and failed ones; cache hits are not requests)."""
        return self.calls + self.failed

    def merge(self, other: "Spend") -> None:
        for k in Spend.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in Spend.__dataclass_fields__}


@dataclass
class Progress:
    """One batch's tally for a progress bar: `done` of `total` results. Not the ledger (`Spend`): its tokens
    include what cache hits hold, `failed` counts every failed result, `requests` every network request
    that came back, paid or not. What a batch cost is `Spend`, fed the same completions."""

    total: int = 0
    done: int = 0
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
    def requests(self) -> int:
        """Network requests that came back (finished, not from the cache)."""
        return self.done - self.cached


ProgressFn = Callable[[Progress], None]


@dataclass
class PhaseCount:
    """One phase of a job: `total` calls (planned by the engine when it starts, or asked by its batches),
    `done` landed, `in_flight` sent and waiting."""

    name: str
    planned: int = 0
    asked: int = 0
    done: int = 0
    in_flight: int = 0

    @property
    def total(self) -> int:
        return max(self.planned, self.asked)


@dataclass
class JobProgress:
    """One counter per job, passed as the `progress` of every phase of it. `phase` is what is running now
    ('gradient + edit' when ProTeGi's error groups overlap), `done` of `total` its calls; `spend` is the
    whole job's. Listeners are called from the job's event loop after every change."""

    listener: Callable[["JobProgress"], None] | None = None
    phases: list[PhaseCount] = field(default_factory=list)
    spend: Spend = field(default_factory=Spend)
    started: float = field(default_factory=time.monotonic)
    latency_s: float = 0.0  # summed over the network calls landed so far
    latency_n: int = 0
    max_in_flight: int = 0
    _last: str = "starting"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _texts: dict[int, TextSoFar] = field(default_factory=dict, repr=False, compare=False)

    # ---- fed by the engines (plans) and the runner (batches, calls) ----
    def _phase(self, name: str) -> PhaseCount:
        name = phase_name(name)
        for p in self.phases:
            if p.name == name:
                return p
        self.phases.append(PhaseCount(name))
        return self.phases[-1]

    def _change(self, phase: str, fn: Callable[[PhaseCount], None], *, current: bool = True) -> None:
        with self._lock:
            p = self._phase(phase)
            fn(p)
            if current:
                self._last = p.name
        if self.listener is not None:
            self.listener(self)

    def plan(self, phase: str, calls: int) -> None:
        """Say how many calls `phase` will make, before it starts (the engine knows); `add_plan` corrects it.
        A phase that already ran to its end in this job (the next step of an auto-run) starts its count again."""
        def f(p: PhaseCount) -> None:
            if p.done and not p.in_flight and p.done >= p.asked:
                p.asked = p.done = 0
            p.planned = max(0, int(calls))
        self._change(phase, f, current=self._last == "starting")  # the job's first plan is what it starts with

    def add_plan(self, phase: str, delta: int) -> None:
        """Fewer (or more) calls than planned: e.g. a gradient gave fewer reasons, so fewer edits follow."""
        def f(p: PhaseCount) -> None:
            p.planned = max(0, p.planned + int(delta))
        self._change(phase, f, current=False)

    def ask(self, phase: str, n: int) -> None:
        """A batch of `n` calls of `phase` starts (cache hits included)."""
        def f(p: PhaseCount) -> None:
            p.asked += n
        self._change(phase, f)

    def launch(self, phase: str) -> None:
        """One call of `phase` is sent now."""
        def f(p: PhaseCount) -> None:
            p.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, sum(q.in_flight for q in self.phases))
        self._change(phase, f)

    def land(self, phase: str, c: Completion, seconds: float | None = None, *, sent: bool = True) -> None:
        """One call of `phase` finished (`sent` False: answered without a launch, e.g. from the cache)."""
        def f(p: PhaseCount) -> None:
            p.done += 1
            if sent:
                p.in_flight = max(0, p.in_flight - 1)
            self.spend.add(c)
            if sent and seconds is not None and not c.cached:
                self.latency_s += seconds
                self.latency_n += 1
        self._change(phase, f)

    def drop(self, phase: str) -> None:
        """One sent call of `phase` will not land (cancelled, or its batch stopped)."""
        def f(p: PhaseCount) -> None:
            p.in_flight = max(0, p.in_flight - 1)
        self._change(phase, f)

    def unask(self, phase: str, n: int) -> None:
        """`n` calls of a batch never landed (cancelled, stopped): they leave the count."""
        def f(p: PhaseCount) -> None:
            p.asked = max(p.done, p.asked - n)
            p.planned = min(p.planned, p.asked)
        if n > 0:
            self._change(phase, f)

    def end(self, phase: str) -> None:
        """`phase` is over: its N becomes the calls it made (a bandit may stop under its budget)."""
        def f(p: PhaseCount) -> None:
            p.planned = p.asked = p.done + p.in_flight
        self._change(phase, f, current=False)

    def show_text(self, t: TextSoFar) -> None:
        """A ClientOptions.on_text callback: keeps the latest text of each streamed call (display only)."""
        with self._lock:
            self._texts.pop(t.call, None)
            self._texts[t.call] = t
            while len(self._texts) > LIVE_TEXTS_KEPT:
                self._texts.pop(next(iter(self._texts)))

    def live_texts(self) -> list[TextSoFar]:
        """The latest text of each recent streamed call, in the order the calls started."""
        with self._lock:
            return sorted(self._texts.values(), key=lambda t: t.call)

    # ---- read by the UI and the CLI ----
    def running(self) -> list[PhaseCount]:
        """The phases with calls in flight or still to send; else the last one that moved."""
        with self._lock:
            live = [p for p in self.phases if p.in_flight or p.done < p.asked]
            if not live:
                live = [p for p in self.phases if p.name == self._last]
            return [PhaseCount(p.name, p.planned, p.asked, p.done, p.in_flight) for p in live]

    @property
    def phase(self) -> str:
        return " + ".join(p.name for p in self.running()) or self._last

    @property
    def done(self) -> int:
        return sum(p.done for p in self.running())

    @property
    def total(self) -> int:
        return sum(p.total for p in self.running())

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def eta_s(self) -> float | None:
        """Time left in the running phase(s): calls left x mean latency so far / calls side by side.
        None until a network call of this job has landed."""
        if not self.latency_n:
            return None
        left = self.total - self.done
        if left <= 0:
            return 0.0
        side_by_side = max(1, min(left, self.max_in_flight))
        return math.ceil(left / side_by_side) * self.latency_s / self.latency_n

    # the batch counters, so a renderer written for `Progress` reads a JobProgress too
    @property
    def cached(self) -> int:
        return self.spend.cached

    @property
    def failed(self) -> int:
        return self.spend.failed

    @property
    def calls(self) -> int:
        return self.spend.calls

    @property
    def input_tokens(self) -> int:
        return self.spend.input_tokens

    @property
    def output_tokens(self) -> int:
        return self.spend.output_tokens

    @property
    def cost_usd(self) -> float:
        return self.spend.cost_usd

    @property
    def saved_usd(self) -> float:
        return self.spend.saved_usd

    def line(self, name: Callable[[str], str] | None = None) -> str:
        """'gradient: 3 of 8 calls · 12 s elapsed · about 20 s left' for a status line or a CLI; `name` words
        each phase (the app's labels)."""
        phase = " + ".join(name(p.name) for p in self.running()) or name(self._last) if name else self.phase
        text = f"{phase}: {self.done} of {self.total} calls · {self.elapsed_s:.0f} s elapsed"
        eta = self.eta_s
        return text + ("" if eta is None or self.done >= self.total else f" · about {eta:.0f} s left")


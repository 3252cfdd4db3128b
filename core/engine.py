"""What a proposal engine needs during one step: models, runner, templates, seeds, accounting."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .evaluate import EvalRow, forward_request, row_for
from .llm import ChatModel, Completion, LLMError, Request
from .meta_prompts import Templates
from .progress import JobProgress, Progress, Spend  # noqa: F401 - Spend re-exported for the session
from .runner import CancelToken, Runner
from .tasks import Example, Task

# a step's progress: a callback (phase, counter), or a JobProgress shared by every phase of the job
PhaseProgress = Callable[[str, "Progress | JobProgress"], None]


class Cancelled(Exception):
    """The person pressed stop: finished calls are cached, nothing half-recorded."""


def normalise(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt).strip().lower()


def task_text(task: Task, ex: Example) -> str:
    """The example as the optimiser sees it in error lists: inputs (and options), no instructions."""
    parts = [v for v in ex.inputs.values()]
    if ex.choices:
        parts.append("\n".join(f"{k}. {v}" for k, v in ex.choices.items()))
    return "\n".join(parts)


@dataclass
class StepContext:
    task: Task
    runner: Runner
    forward_model: ChatModel
    backward_model: ChatModel
    templates: Templates
    train: list[Example]
    seed: int
    attempt: int = 0
    prefix: str = ""
    cancel: CancelToken | None = None
    on_progress: "PhaseProgress | JobProgress | None" = None
    job: JobProgress | None = None  # one counter for the whole job; from on_progress when it is one
    spend: Spend = field(default_factory=Spend)
    keys: list[str] = field(default_factory=list)
    forward_max_tokens: int = 512
    locked: list[str] = field(default_factory=list)  # sentences the edit/update must keep verbatim (person_marks)
    flush: Callable[["Spend", list[str]], None] | None = None
    flush_every_s: float = 1.0
    _last_flush: float = field(default_factory=time.monotonic)
    _examples: dict[str, Example] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.job is None:
            if isinstance(self.on_progress, JobProgress):  # the caller's counter spans every phase of its job
                self.job = self.on_progress
            else:
                callback = self.on_progress
                self.job = JobProgress(listener=(lambda jp: callback(jp.phase, jp)) if callback else None)
        for split in self.task.splits.values():
            for ex in split:
                self._examples[ex.id] = ex

    @property
    def cancelled(self) -> bool:
        return bool(self.cancel and self.cancel.cancelled)

    def task_text(self, example_id: str) -> str:
        return task_text(self.task, self._examples[example_id])

    def example(self, example_id: str) -> Example:
        return self._examples[example_id]

    def plan(self, phase: str, calls: int) -> None:
        """Tell the progress how many calls `phase` will make (before it starts)."""
        self.job.plan(phase, calls)

    async def _run(self, model: ChatModel, reqs: Sequence[Request], phase: str) -> list[Completion]:
        if self.cancelled:
            raise Cancelled()
        res = await self.runner.arun(model, reqs, cancel=self.cancel, on_result=self._account,
                                     job=self.job, phase=phase)
        if res.fatal:
            raise LLMError(res.fatal)
        if res.cancelled:
            raise Cancelled()
        return res.completions

    def _account(self, c: Completion) -> None:
        """Count each call as it lands; every `flush_every_s` hand the pending spend to `flush` (the session
        logs it), so a kill -9 loses at most the last few seconds of accounting."""
        self.spend.add(c)
        if c.key:
            self.keys.append(c.key)
        if self.flush is not None and time.monotonic() - self._last_flush >= self.flush_every_s and (
                self.spend.calls or self.spend.cached):
            self._last_flush = time.monotonic()
            pending, keys = self.spend, self.keys
            self.spend, self.keys = Spend(), []
            self.flush(pending, keys)

    async def backward(self, reqs: Sequence[Request], phase: str = "backward") -> list[Completion]:
        return await self._run(self.backward_model, reqs, phase)

    async def forward(self, reqs: Sequence[Request], phase: str = "forward") -> list[Completion]:
        return await self._run(self.forward_model, reqs, phase)


async def forward_batch(ctx: StepContext, prompts: Sequence[str], examples: Sequence[Example],
                        phase: str = "forward") -> list[EvalRow]:
    """Answer each (prompt, example) pair with the forward model; one row per pair."""
    reqs = [forward_request(p, ctx.task, ex, max_tokens=ctx.forward_max_tokens) for p, ex in zip(prompts, examples)]
    comps = await ctx.forward(reqs, phase=phase)
    return [row_for(ctx.task, ex, c) for ex, c in zip(examples, comps)]

"""Estimates of calls and cost before a phase runs (Session.estimate_baseline / estimate_step).

The estimate counts the current prompt's validation answers as free when a response cache is in
use (Session._validation_calls looks at the session's models); the app always runs with the cache
unless its folder is unusable, so a session without models yet is estimated as if it had one.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from core.session import Session, SessionConfig
from core.tasks import Task


def _with_cache(s: Session, cached: bool):
    return SimpleNamespace(runner=SimpleNamespace(cache=object() if cached else None))


def estimate(cfg: SessionConfig, task: Task, *, cached: bool = True) -> dict:
    """{"baseline": {...}, "step": {...}} for a config before its session exists (a throwaway, in memory)."""
    s = Session(Path("/nonexistent-estimate"), "estimate", readonly=True)
    s.config, s.task = cfg, task
    s.models = _with_cache(s, cached)  # type: ignore[assignment]
    return {"baseline": s.estimate_baseline(), "step": s.estimate_step()}


def step_estimate(s: Session, *, cached: bool = True) -> dict:
    """The next step's estimate for an open session whose models may not be attached yet."""
    if s.models is not None:
        return s.estimate_step()
    s.models = _with_cache(s, cached)  # type: ignore[assignment]
    try:
        return s.estimate_step()
    finally:
        s.models = None

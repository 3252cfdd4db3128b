"""Estimates before a session exists: a throwaway in-memory Session (no files, no lock)."""

from __future__ import annotations

from pathlib import Path

from core.session import Session, SessionConfig
from core.tasks import Task


def estimate(cfg: SessionConfig, task: Task) -> dict:
    """{"baseline": {...}, "step": {...}} from Session.estimate_baseline / estimate_step."""
    s = Session(Path("/nonexistent-estimate"), "estimate", readonly=True)
    s.config, s.task = cfg, task
    return {"baseline": s.estimate_baseline(), "step": s.estimate_step()}

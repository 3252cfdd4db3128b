"""Estimates of calls and cost before a phase runs (core/estimate.py), for the Setup and Optimize pages.

The app always runs with the response cache unless its folder is unusable, so the current prompt's recorded
validation answers are counted as free by default (`cached`).
"""

from __future__ import annotations

from core import estimate as E
from core.session import Session, SessionConfig
from core.state import SessionState
from core.tasks import Task


def estimate(cfg: SessionConfig, task: Task, *, cached: bool = True, price_overrides: dict | None = None) -> dict:
    """{"baseline": {...}, "step": {...}} for a config before its session exists (a state with no events)."""
    state = SessionState(config=cfg, task=task)
    return {"baseline": E.baseline(state, price_overrides=price_overrides),
            "step": E.step(state, cached=cached, price_overrides=price_overrides)}


def step_estimate(s: Session, *, cached: bool = True, price_overrides: dict | None = None) -> dict:
    """The next step's estimate for an open session (its models, if any, are not needed)."""
    return E.step(s.folded, cached=cached, price_overrides=price_overrides)

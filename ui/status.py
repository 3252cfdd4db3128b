"""Words for the status line: human phase names and the retry that is happening right now."""

from __future__ import annotations

import time

from core.llm import RetryNotice

PHASE_NAMES = {
    "starting": "starting",
    "baseline": "baseline (seed prompt on validation)",
    "minibatch": "minibatch answers",
    "forward": "forward answers",
    "backward": "optimiser calls",
    "validation": "validation",
    "bandit": "bandit pre-screen",
    "test": "test questions",
    "loss": "per-question feedback",
    "gradient": "gradient",
    "update": "prompt update",
    "protegi.gradient": "gradients (why the prompt failed)",
    "protegi.edit": "edits",
    "protegi.paraphrase": "paraphrases",
    "textgrad.loss": "per-question feedback",
    "textgrad.gradient": "gradient",
    "textgrad.update": "prompt update",
}


def phase_label(phase: str) -> str:
    """'protegi.gradient' -> 'gradients (why the prompt failed)'; an unknown name loses its method prefix."""
    if phase in PHASE_NAMES:
        return PHASE_NAMES[phase]
    return (phase or "").rsplit(".", 1)[-1].replace("_", " ")


def retry_text(notice: RetryNotice, at: float, now: float | None = None) -> str:
    """'gradient call: rate limited (HTTP 429) — retrying in 8 s, attempt 2 of 4' (counting down), then
    'attempt 2 of 4 running' once the wait is over."""
    now = time.time() if now is None else now
    left = notice.wait_s - (now - at)
    what = f"{phase_label(notice.tag)} call" if notice.tag else "a call"
    if left > 0.5:
        return f"{what}: {notice.reason} — retrying in {left:.0f} s, attempt {notice.attempt} of {notice.attempts}"
    return f"{what}: {notice.reason} — attempt {notice.attempt} of {notice.attempts} running"

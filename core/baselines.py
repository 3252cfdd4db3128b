"""The baselines AutoMedPrompt compares against: zero-shot, chain-of-thought, few-shot (k from train).

Each is a system prompt, so it can seed a session or be scored on the test split like any version.
"""

from __future__ import annotations

from .tasks import Task, sample

SEED_PROMPT = "You are a helpful, creative, and smart assistant."
COT_SUFFIX = ("Think step by step: first reason briefly about the question and the evidence, "
              "then give your final answer in exactly the format requested.")
STRATEGIES = ("zero-shot", "cot", "few-shot:K")


def parse_strategy(strategy: str) -> tuple[str, int]:
    s = (strategy or "zero-shot").strip().lower()
    if s in ("zero-shot", "zeroshot", "zero"):
        return "zero-shot", 0
    if s in ("cot", "chain-of-thought"):
        return "cot", 0
    if s.startswith("few-shot"):
        _, _, k = s.partition(":")
        try:
            n = int(k or 3)
        except ValueError:
            n = -1
        if not 1 <= n <= 20:
            raise ValueError(f"few-shot needs a number of examples from 1 to 20, e.g. few-shot:3 (got '{strategy}').")
        return "few-shot", n
    raise ValueError(f"Unknown strategy '{strategy}'. Use zero-shot, cot or few-shot:K.")


def strategy_prompt(strategy: str, task: Task, base_prompt: str | None = None, seed: int = 0) -> str:
    """The system prompt for a baseline strategy built on `base_prompt` (default: the paper's seed)."""
    kind, k = parse_strategy(strategy)
    base = (base_prompt if base_prompt is not None else SEED_PROMPT).strip()
    if kind == "zero-shot":
        return base
    if kind == "cot":
        return f"{base}\n\n{COT_SUFFIX}".strip()
    shots = sample(task.split("train"), k, seed)
    parts = [base, "", f"Here are {len(shots)} solved examples:"]
    for i, ex in enumerate(shots, 1):
        parts += ["", f"### Example {i}", task.render(ex), f"Answer: {ex.label}"]
    return "\n".join(parts).strip()

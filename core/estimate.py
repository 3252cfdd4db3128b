"""Calls and cost of the next phase (baseline, step, validation) before it runs, and the budget check.

Functions of a session's state (a state with no events estimates a config before its session exists).
`cached`: a response cache is in use, so the current prompt's recorded validation answers cost nothing.
"""

from __future__ import annotations

from .llm import LLMError, estimate_tokens, parse_spec
from .protegi import calls_per_parent
from .state import SessionState

# tokens assumed per call beyond the question and prompt (replies; the optimiser reads and writes more)
FORWARD_OUTPUT_TOKENS = 150.0
OPTIMISER_INPUT_FACTOR, OPTIMISER_OUTPUT_TOKENS = 4, 400.0


def cost(state: SessionState, calls: int, *, forward: bool, price_overrides: dict | None = None) -> float:
    """USD for `calls` calls of the forward (or backward) model, priced by the session's snapshot."""
    cfg, task = state.config, state.task
    spec, url = (cfg.forward, cfg.forward_base_url) if forward else (cfg.backward, cfg.backward_base_url)
    try:
        parse_spec(spec, url)
    except LLMError:  # a provider this machine lacks (offline replay): no estimate
        return 0.0
    price = cfg.model_price(spec, url, price_overrides)
    if not price or calls == 0:
        return 0.0
    sample = task.split("val")[:20] or task.split("train")[:20]
    tin = sum(estimate_tokens(task.render(e)) for e in sample) / max(1, len(sample))
    tin += estimate_tokens(state.current.prompt if state.versions else cfg.seed_prompt)
    tout = FORWARD_OUTPUT_TOKENS
    if not forward:
        tin, tout = tin * OPTIMISER_INPUT_FACTOR, OPTIMISER_OUTPUT_TOKENS
    return calls * (tin * price[0] + tout * price[1]) / 1e6


def baseline(state: SessionState, *, price_overrides: dict | None = None) -> dict:
    """{"calls", "cost_usd"} of scoring the seed prompt on validation."""
    n = len(state.val_examples())
    return {"calls": n, "cost_usd": cost(state, n, forward=True, price_overrides=price_overrides)}


def validation_calls(state: SessionState, *, cached: bool) -> int:
    """The candidate's validation calls, plus the current prompt's unless the cache has them."""
    val = state.val_examples()
    if state.config.policy == "adaptive" and state.versions:  # at most the cap; known answers are free
        known = state.known_current()
        return len(val) + sum(1 for e in val if e.id not in known)
    return len(val) if cached else 2 * len(val)


def validation(state: SessionState, *, cached: bool, price_overrides: dict | None = None) -> dict:
    n = validation_calls(state, cached=cached)
    return {"calls": n, "cost_usd": cost(state, n, forward=True, price_overrides=price_overrides)}


def prevalidation(state: SessionState, candidates: int, *, price_overrides: dict | None = None) -> dict:
    """Validating `candidates` candidates ahead of the decision (needs the cache: the current prompt's answers
    are paid at most once)."""
    n = candidates * validation_calls(state, cached=True)
    return {"calls": n, "cost_usd": cost(state, n, forward=True, price_overrides=price_overrides)}


def step(state: SessionState, *, cached: bool, price_overrides: dict | None = None) -> dict:
    """Calls and cost of the next step (minibatch, proposal, bandit, validation), before it runs."""
    cfg = state.config.engine_config()
    beam = len(state.beam()) if state.versions else 1
    if state.config.method == "protegi":
        fwd = beam * cfg.minibatch
        opt = beam * calls_per_parent(cfg, cfg.errors_per_group)
        bandit = cfg.bandit_budget if cfg.bandit != "none" else 0
    else:
        fwd, opt, bandit = cfg.batch_size, cfg.batch_size + 1 + max(1, cfg.candidates), 0
    n_val = validation_calls(state, cached=cached)
    return {"forward": fwd, "optimiser": opt, "bandit": bandit, "validation": n_val,
            "proposal": fwd + opt + bandit,  # the calls before the person decides (what "quick" keeps near 20)
            "calls": fwd + opt + bandit + n_val,
            "cost_usd": cost(state, fwd + bandit + n_val, forward=True, price_overrides=price_overrides)
            + cost(state, opt, forward=False, price_overrides=price_overrides)}


def over_budget(state: SessionState, estimate: dict, *, price_overrides: dict | None = None) -> str | None:
    """Why the next stage would exceed the session's budget, or None. Raises UnpricedBudget when a USD
    budget meets a model with no price (a log from before snapshots, or an unpriced re-point)."""
    cfg, spend = state.config, state.spend
    cfg.check_budget_priced(price_overrides)
    if cfg.budget_calls is not None and spend.calls + estimate["calls"] > cfg.budget_calls:
        return (f"calls: {spend.calls} made + about {estimate['calls']} for the next stage > budget "
                f"{cfg.budget_calls}")
    if cfg.budget_usd is not None and spend.cost_usd + estimate["cost_usd"] > cfg.budget_usd:
        return (f"cost: ${spend.cost_usd:.4f} spent + about ${estimate['cost_usd']:.4f} for the next stage > "
                f"budget ${cfg.budget_usd:.4f}")
    return None

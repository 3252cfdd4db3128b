"""`pgs optimize | resume`: headless tuning sessions on the same state machine as the app."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..session import (DEFAULT_PRESET, BudgetExceeded, Session, SessionConfig, UnpricedBudget,
                       default_policy)
from ..tasks import BUILTIN_TASKS, builtin_spec
from .common import (ConfigError, add_model_args, add_prompt_args, add_session_output_args, add_task_args,
                     custom_task_spec, load_task_from_args, parse_settings, phase_bars, read_prompt,
                     session_models, sessions_root, tell_file_format)


def step_line(s: Session, st) -> str:
    """One printed line per decided step: outcome, validation (or the engine's note), spend so far."""
    sp = s.spend
    if st.gate is not None:
        g = st.gate
        val = f"val {g.new_accuracy:.3f} (current {g.old_accuracy:.3f}, p={g.p_value:.3g})"
        if g.policy == "adaptive":
            val += f" on {g.questions_used} questions, {g.test}: {g.reason}"
    else:
        val = (st.proposal.note if st.proposal and st.proposal.note else "no validation")
    return (f"step {st.index}: {st.outcome or 'open':8s} {val}  calls {sp.calls} cached {sp.cached} "
            f"tokens {sp.input_tokens + sp.output_tokens} cost ${sp.cost_usd:.4f}")


def summary(s: Session, result: str) -> dict:
    """The --json line of optimize and resume."""
    vals = [v.accuracy for v in s.versions]
    return {"session": s.id, "steps": sum(1 for st in s.steps if st.outcome),
            "accepted": sum(1 for st in s.steps if st.outcome == "accepted"),
            "baseline_val": vals[0] if vals else None, "best_val": max(vals) if vals else None,
            "final_val": vals[-1] if vals else None, "calls": s.spend.calls, "cached": s.spend.cached,
            "input_tokens": s.spend.input_tokens, "output_tokens": s.spend.output_tokens,
            "cost_usd": round(s.spend.cost_usd, 6), "result": result, "stopped": s.stopped,
            "final_prompt": s.versions[-1].prompt if s.versions else None}


def drive(s: Session, a: argparse.Namespace, steps: int, more: bool = False) -> int:
    """Plan, score the seed if needed, then run `steps` automatic steps, printing a line each."""
    print(f"session {s.id}", flush=True)
    s.plan_auto(steps, more=more)  # logged before the baseline, so a crash during it keeps the run for resume
    if s.versions:
        v0 = s.versions[0]
        print(f"baseline: val {v0.accuracy:.3f} on {v0.report.n} questions", flush=True)
    progress = phase_bars(a.quiet)

    def on_step(sess, st):
        print(step_line(sess, st), flush=True)

    try:
        if not s.versions:
            s.run_baseline(progress=progress)
            v0 = s.versions[0]
            print(f"baseline: val {v0.accuracy:.3f} on {v0.report.n} questions", flush=True)
        result = s.run_auto(steps, on_step=on_step, progress=progress)
    except BudgetExceeded as exc:
        result = f"budget: {exc}"
    if a.json:
        print(json.dumps(summary(s, result)))
    else:
        vals = [v.accuracy for v in s.versions]
        print(f"done ({result}): {len(s.versions) - 1} accepted, val {vals[0]:.3f} -> {vals[-1]:.3f}, "
              f"{s.spend.calls} calls, ${s.spend.cost_usd:.4f}")
    return 0


def refuse_unpriced_budget(cfg: SessionConfig) -> None:
    """--budget-usd with a model of unknown price: one line saying how to price it (PGS_PRICES), exit 2."""
    try:
        cfg.check_budget_priced()
    except UnpricedBudget as exc:
        model = exc.specs[0].partition(":")[2].partition(" @ ")[0]
        raise ConfigError(f"No price is known for {', '.join(exc.specs)}, so --budget-usd cannot be kept: set it "
                          f"with PGS_PRICES='{{\"{model}\": [input, output]}}' (USD per 1M tokens), or drop "
                          f"--budget-usd.") from None


def cmd_optimize(a: argparse.Namespace) -> int:
    cfg, data = config_from_args(a)
    models = session_models(cfg, a)
    s = Session.create(cfg, root=sessions_root(a), models=models, data=data)
    with s:
        return drive(s, a, a.steps)


def config_from_args(a: argparse.Namespace) -> tuple[SessionConfig, tuple[str, bytes] | None]:
    """The checked session config (and a custom file's name and bytes) the arguments of optimize or new give."""
    task = load_task_from_args(a)  # validates the task and custom file up front
    if a.task in BUILTIN_TASKS:
        spec = builtin_spec(a.task, a.seed, val_size=a.val_size)
        data = None
    else:
        spec = custom_task_spec(a)
        data = (os.path.basename(a.task), Path(a.task).read_bytes())
    tell_file_format(a, task)
    del task
    preset = a.preset or DEFAULT_PRESET
    policy = a.policy or default_policy(preset)
    params = parse_settings(a.method, a.set or [])  # typed by the engine's fields; ranges in cfg.check()
    seed_prompt = read_prompt(a)  # --prompt-file errors are one line, not a traceback
    cfg = SessionConfig(task=spec, method=a.method, preset=preset, forward=a.forward, backward=a.backward or a.forward,
                        forward_base_url=a.base_url, backward_base_url=a.backward_base_url or a.base_url,
                        seed_prompt=seed_prompt, seed=a.seed, policy=policy, patience=a.patience,
                        budget_usd=a.budget_usd, budget_calls=a.budget_calls, val_limit=a.val_limit, params=params,
                        forward_max_tokens=a.max_tokens, gate_batch=a.gate_batch, gate_cap=a.gate_cap)
    cfg.check()
    refuse_unpriced_budget(cfg)  # before any model, warning or call
    return cfg, data


def cmd_resume(a: argparse.Namespace) -> int:
    s = Session.open(a.id, root=sessions_root(a))
    for w in s.warnings:
        print(f"warning: {w}", file=sys.stderr)
    with s:
        if s.stopped:
            print(f"session {s.id} has stopped ({s.stopped}); nothing to resume.")
            if a.json:
                print(json.dumps(summary(s, "stopped")))
            return 0
        steps = a.steps if a.steps is not None else 0
        if s.auto is None and steps == 0:
            print(f"session {s.id} has no automatic run in progress; pass --steps N to run more.")
            if a.json:
                print(json.dumps(summary(s, "idle")))
            return 0
        repoint(s, a)  # before any model exists: an imported session's servers need the user's word
        s.models = session_models(s.config, a)
        return drive(s, a, steps, more=a.steps is not None)


def repoint(s: Session, a: argparse.Namespace) -> None:
    """--base-url / --forward-base-url / --backward-base-url re-point the session (a 'repointed' event); an
    imported session must be re-pointed before any call, so a bundle never chooses where the key goes."""
    fwd = a.forward_base_url or a.base_url
    bwd = a.backward_base_url or a.base_url
    if not s.servers_confirmed and (fwd is None or bwd is None):
        raise ConfigError(f"session {s.id} came from a bundle, which names its servers ({s.servers_text()}); "
                          f"your key is not sent there until you name them: pass --base-url URL (or "
                          f"--forward-base-url / --backward-base-url; 'default' = the provider's own endpoint).")
    c = s.config
    new_f = c.forward_base_url if fwd is None else (None if fwd.strip() == "default" else fwd.strip())
    new_b = c.backward_base_url if bwd is None else (None if bwd.strip() == "default" else bwd.strip())
    if s.servers_confirmed and (new_f, new_b) == (c.forward_base_url, c.backward_base_url):
        return
    s.repoint(new_f, new_b)
    print(f"session {s.id} re-pointed: {s.servers_text()}", file=sys.stderr)


def add_config_args(o: argparse.ArgumentParser) -> None:
    """The settings a new session is created with (optimize, new)."""
    add_task_args(o)
    o.add_argument("--method", choices=("protegi", "textgrad"), default="textgrad")
    o.add_argument("--forward", required=True, help="forward model spec (answers the questions)")
    o.add_argument("--backward", help="backward/optimiser model spec (default: the forward model)")
    add_model_args(o)
    o.add_argument("--backward-base-url", help="base URL for the backward model (default --base-url)")
    o.add_argument("--preset", help="recommended (default: the adaptive gate) | ProTeGi paper | quick | AutoMedPrompt paper")
    o.add_argument("--gate-batch", type=int, default=50, help="adaptive gate: validation questions per look (50)")
    o.add_argument("--gate-cap", type=int, default=200, help="adaptive gate: at most this many questions (200)")
    o.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a preset setting, e.g. minibatch=16")
    o.add_argument("--policy", help="strict | tie | significant | always | adaptive (default: adaptive for the "
                                    "recommended preset, else strict)")
    o.add_argument("--patience", type=int, default=3)
    o.add_argument("--budget-usd", type=float)
    o.add_argument("--budget-calls", type=int)
    o.add_argument("--val-limit", type=int, help="validate on the first N validation questions")
    o.add_argument("--max-tokens", type=int, default=512, help="forward answer length limit (default 512)")
    add_prompt_args(o, help_text="seed prompt")
    add_session_output_args(o)


def add_commands(sub: argparse._SubParsersAction) -> None:
    o = sub.add_parser("optimize", help="run a tuning session with an automatic decision policy")
    add_config_args(o)
    o.add_argument("--steps", type=int, default=3)
    o.set_defaults(fn=cmd_optimize)

    r = sub.add_parser("resume", help="continue a session's automatic run after a stop or crash")
    r.add_argument("id")
    r.add_argument("--steps", type=int, help="run N more steps (default: finish the interrupted run)")
    add_model_args(r)
    r.add_argument("--forward-base-url", help="re-point the forward model ('default': the provider's endpoint)")
    r.add_argument("--backward-base-url", help="re-point the backward model ('default': the provider's endpoint)")
    add_session_output_args(r)
    r.set_defaults(fn=cmd_resume)

"""`pgs optimize | resume | export | import | replay`: headless sessions on the same state machine."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .llm import ClientOptions
from .paths import CACHE_HELP, SESSIONS_HELP


def _root(a) -> Path:
    from .paths import sessions_dir

    return Path(a.sessions_dir) if a.sessions_dir else sessions_dir()


def _phase_bar(quiet: bool):
    if quiet:
        return None
    from .cli import _progress_bar

    bars: dict = {}

    def show(phase, p):
        bars.setdefault(phase, _progress_bar(phase))(p)

    return show


def _step_line(s, st) -> str:
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


def _summary(s, result: str) -> dict:
    vals = [v.accuracy for v in s.versions]
    return {"session": s.id, "steps": sum(1 for st in s.steps if st.outcome),
            "accepted": sum(1 for st in s.steps if st.outcome == "accepted"),
            "baseline_val": vals[0] if vals else None, "best_val": max(vals) if vals else None,
            "final_val": vals[-1] if vals else None, "calls": s.spend.calls, "cached": s.spend.cached,
            "input_tokens": s.spend.input_tokens, "output_tokens": s.spend.output_tokens,
            "cost_usd": round(s.spend.cost_usd, 6), "result": result, "stopped": s.stopped,
            "final_prompt": s.versions[-1].prompt if s.versions else None}


def _drive(s, a, steps: int, more: bool = False) -> int:
    from .session import BudgetExceeded

    print(f"session {s.id}", flush=True)
    s.plan_auto(steps, more=more)  # logged before the baseline, so a crash during it keeps the run for resume
    if s.versions:
        v0 = s.versions[0]
        print(f"baseline: val {v0.accuracy:.3f} on {v0.report.n} questions", flush=True)
    progress = _phase_bar(a.quiet)

    def on_step(sess, st):
        print(_step_line(sess, st), flush=True)

    try:
        if not s.versions:
            s.run_baseline(progress=progress)
            v0 = s.versions[0]
            print(f"baseline: val {v0.accuracy:.3f} on {v0.report.n} questions", flush=True)
        result = s.run_auto(steps, on_step=on_step, progress=progress)
    except BudgetExceeded as exc:
        result = f"budget: {exc}"
    if a.json:
        print(json.dumps(_summary(s, result)))
    else:
        vals = [v.accuracy for v in s.versions]
        print(f"done ({result}): {len(s.versions) - 1} accepted, val {vals[0]:.3f} -> {vals[-1]:.3f}, "
              f"{s.spend.calls} calls, ${s.spend.cost_usd:.4f}")
    return 0


def _models(cfg, a):
    from .cli import ConfigError, _runner
    from .llm import LLMError
    from .session import Models

    from .cli import warn_unpriced

    try:
        models = Models.from_config(cfg, _runner(a), options=ClientOptions(timeout_s=a.timeout, max_retries=a.retries))
    except LLMError as exc:
        raise ConfigError(str(exc)) from None
    for spec in {models.forward.spec, models.backward.spec}:
        warn_unpriced(spec)
    return models


def _refuse_unpriced_budget(cfg) -> None:
    """--budget-usd with a model of unknown price: one line saying how to price it (PGS_PRICES), exit 2."""
    from .cli import ConfigError
    from .session import UnpricedBudget

    try:
        cfg.check_budget_priced()
    except UnpricedBudget as exc:
        model = exc.specs[0].partition(":")[2].partition(" @ ")[0]
        raise ConfigError(f"No price is known for {', '.join(exc.specs)}, so --budget-usd cannot be kept: set it "
                          f"with PGS_PRICES='{{\"{model}\": [input, output]}}' (USD per 1M tokens), or drop "
                          f"--budget-usd.") from None


def cmd_optimize(a) -> int:
    from .cli import ConfigError, custom_file_options, load_task_from_args, tell_file_format
    from .session import DEFAULT_PRESET, Session, SessionConfig, SessionError
    from .tasks import BUILTIN_TASKS, builtin_spec

    task = load_task_from_args(a)  # validates the task and custom file up front
    if a.task in BUILTIN_TASKS:
        spec = builtin_spec(a.task, a.seed, val_size=a.val_size)
        data = None
    else:
        spec = {"input_cols": [c.strip() for c in a.input_cols.split(",")], "label_col": a.label_col,
                "id_col": a.id_col, "choices_col": a.choices_col, "seed": a.seed,
                "labels": [x.strip() for x in a.labels.split(",")] if a.labels else None}
        if a.val_size is not None:
            spec["val_size"] = a.val_size
        if a.test_size is not None:
            spec["test_size"] = a.test_size
        spec.update(custom_file_options(a))
        data = (os.path.basename(a.task), Path(a.task).read_bytes())
    tell_file_format(a, task)
    del task
    preset = a.preset or DEFAULT_PRESET
    from .cli import _read_prompt, parse_settings
    from .session import default_policy

    policy = a.policy or default_policy(preset)
    params = parse_settings(a.method, a.set or [])  # typed by the engine's fields; ranges in cfg.check()

    seed_prompt = _read_prompt(a)  # --prompt-file errors are one line, not a traceback
    cfg = SessionConfig(task=spec, method=a.method, preset=preset, forward=a.forward, backward=a.backward or a.forward,
                        forward_base_url=a.base_url, backward_base_url=a.backward_base_url or a.base_url,
                        seed_prompt=seed_prompt, seed=a.seed, policy=policy, patience=a.patience,
                        budget_usd=a.budget_usd, budget_calls=a.budget_calls, val_limit=a.val_limit, params=params,
                        forward_max_tokens=a.max_tokens, gate_batch=a.gate_batch, gate_cap=a.gate_cap)
    try:
        cfg.check()
        _refuse_unpriced_budget(cfg)  # before any model, warning or call
        models = _models(cfg, a)
        s = Session.create(cfg, root=_root(a), models=models, data=data)
    except SessionError as exc:
        raise ConfigError(str(exc)) from None
    with s:
        return _drive(s, a, a.steps)


def cmd_resume(a) -> int:
    from .cli import ConfigError
    from .session import Session, SessionError

    try:
        s = Session.open(a.id, root=_root(a))
    except SessionError as exc:
        raise ConfigError(str(exc)) from None
    for w in s.warnings:
        print(f"warning: {w}", file=sys.stderr)
    with s:
        if s.stopped:
            print(f"session {s.id} has stopped ({s.stopped}); nothing to resume.")
            if a.json:
                print(json.dumps(_summary(s, "stopped")))
            return 0
        steps = a.steps if a.steps is not None else 0
        if s.auto is None and steps == 0:
            print(f"session {s.id} has no automatic run in progress; pass --steps N to run more.")
            if a.json:
                print(json.dumps(_summary(s, "idle")))
            return 0
        try:
            _repoint(s, a)  # before any model exists: an imported session's servers need the user's word
            s.models = _models(s.config, a)
        except SessionError as exc:
            raise ConfigError(str(exc)) from None
        return _drive(s, a, steps, more=a.steps is not None)


def _repoint(s, a) -> None:
    """--base-url / --forward-base-url / --backward-base-url re-point the session (a 'repointed' event); an
    imported session must be re-pointed before any call, so a bundle never chooses where the key goes."""
    from .cli import ConfigError

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


def cmd_export(a) -> int:
    from .bundle import bundle_bytes, markdown_report
    from .cache import CacheError, ResponseCache
    from .cli import ConfigError
    from .session import Session, SessionError

    try:
        s = Session.open(a.id, root=_root(a), readonly=True)
    except SessionError as exc:
        raise ConfigError(str(exc)) from None
    if a.format == "markdown":
        out = markdown_report(s).encode("utf-8")
    else:
        try:
            cache = ResponseCache(a.cache_dir)
        except CacheError as exc:
            raise ConfigError(str(exc)) from None
        out = bundle_bytes(s, cache)
    if a.output and a.output != "-":
        from .cli import write_output

        write_output(a.output, out)  # whole or nothing; one line if the folder is missing, full or read-only
        print(f"wrote {a.output} ({len(out)} bytes)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    return 0


def _read_bundle(path: str) -> bytes:
    from .bundle import MAX_BUNDLE_BYTES
    from .cli import ConfigError

    try:
        size = os.path.getsize(path)
        if size > MAX_BUNDLE_BYTES:
            raise ConfigError(f"The bundle is {size / 2**20:.0f} MB; the limit is {MAX_BUNDLE_BYTES / 2**20:.0f} MB.")
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror or exc}") from None


def cmd_import(a) -> int:
    from .bundle import BundleError, import_bundle
    from .cache import CacheError, ResponseCache
    from .cli import ConfigError

    data = _read_bundle(a.bundle)
    try:
        sid = import_bundle(data, root=_root(a), cache=ResponseCache(a.cache_dir))
    except (BundleError, CacheError) as exc:
        raise ConfigError(str(exc)) from None
    print(sid)
    return 0


def cmd_replay(a) -> int:
    from .bundle import BundleError, replay_bundle
    from .cli import ConfigError

    data = _read_bundle(a.bundle)
    try:
        r = replay_bundle(data)
    except BundleError as exc:
        raise ConfigError(str(exc)) from None
    print(f"replay of session {r.session} (offline, no key): baseline {r.baseline[0]:.3f} -> replayed {r.baseline[1]:.3f}")
    for st in r.steps:
        if "error" in st:
            print(f"  error: {st['error']}")
            continue
        val = (f" val recorded {st['recorded_val']:.3f} replayed {st['replayed_val']:.3f}"
               if "recorded_val" in st else "")
        print(f"  step {st['step']}: {st['action']} -> {st['replayed_outcome']} (recorded {st['recorded_outcome']}){val}")
    if r.first_difference:
        print(f"  first difference: {r.first_difference}")
    print(f"{'identical' if r.matches else 'DIFFERENT'}; responses missing from the bundle: {r.misses}")
    if a.json:
        print(json.dumps({"session": r.session, "matches": r.matches, "misses": r.misses, "steps": r.steps,
                          "first_difference": r.first_difference}))
    return 0 if r.matches else 1


def add_commands(sub, add_task_args, add_model_args) -> None:
    def common(p):
        p.add_argument("--sessions-dir", help=SESSIONS_HELP)
        p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    o = sub.add_parser("optimize", help="run a tuning session with an automatic decision policy")
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
    o.add_argument("--steps", type=int, default=3)
    o.add_argument("--policy", help="strict | tie | significant | always | adaptive (default: adaptive for the "
                                    "recommended preset, else strict)")
    o.add_argument("--patience", type=int, default=3)
    o.add_argument("--budget-usd", type=float)
    o.add_argument("--budget-calls", type=int)
    o.add_argument("--val-limit", type=int, help="validate on the first N validation questions")
    o.add_argument("--max-tokens", type=int, default=512, help="forward answer length limit (default 512)")
    o.add_argument("--prompt", default="You are a helpful, creative, and smart assistant.", help="seed prompt")
    o.add_argument("--prompt-file")
    common(o)
    o.set_defaults(fn=cmd_optimize)

    r = sub.add_parser("resume", help="continue a session's automatic run after a stop or crash")
    r.add_argument("id")
    r.add_argument("--steps", type=int, help="run N more steps (default: finish the interrupted run)")
    add_model_args(r)
    r.add_argument("--forward-base-url", help="re-point the forward model ('default': the provider's endpoint)")
    r.add_argument("--backward-base-url", help="re-point the backward model ('default': the provider's endpoint)")
    common(r)
    r.set_defaults(fn=cmd_resume)

    e = sub.add_parser("export", help="export a session as a bundle (JSON) or a Markdown report")
    e.add_argument("id")
    e.add_argument("--format", choices=("bundle", "markdown"), default="bundle")
    e.add_argument("--output", "-o", help="file to write (default stdout)")
    e.add_argument("--cache-dir", help=CACHE_HELP)
    common(e)
    e.set_defaults(fn=cmd_export)

    i = sub.add_parser("import", help="import a bundle as a new session")
    i.add_argument("bundle")
    i.add_argument("--cache-dir", help=CACHE_HELP)
    common(i)
    i.set_defaults(fn=cmd_import)

    p = sub.add_parser("replay", help="replay a bundle offline (no key, no network) and compare")
    p.add_argument("bundle")
    common(p)
    p.set_defaults(fn=cmd_replay)

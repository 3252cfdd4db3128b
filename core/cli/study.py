"""`pgs study`: a grid of ordinary headless sessions (core/study.py), one shared per-provider concurrency limit,
resumable with --resume STUDY_ID; the last line (--json) is the runs and, per setting and overall, final
validation's mean, sd and 95 % t-interval."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..batch import BatchAsRunner
from ..limits import SharedRunner
from ..paths import cache_dir
from ..session import Models, SessionConfig
from ..study import (INTERVAL, STUDY_PRESETS, Study, StudySpec, apply_preset, parse_bandits,
                     read_results, run_study, studies_root, study_json, summarise_study)
from ..tasks import BUILTIN_TASKS, builtin_spec
from .common import (ConfigError, add_model_args, add_task_args, client_options, custom_task_spec,
                     load_task_from_args, runner_from_args, sessions_root, tell_file_format, warn_unpriced)


def _sizes(text: str | None) -> list[int | None]:
    if not text:
        return [None]
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--val-sizes needs whole numbers like 50,200 (got {text[:60]!r}).") from None


def spec_from_args(a: argparse.Namespace) -> StudySpec:
    """The study's grid from the flags (and --preset-study), checked before anything is written."""
    for flag in ("task", "forward", "backward", "steps"):
        if getattr(a, flag) is None:
            raise ConfigError(f"pgs study needs --{flag} (or --resume STUDY_ID).")
    task = load_task_from_args(a)
    if a.task in BUILTIN_TASKS:
        spec, data_file = builtin_spec(a.task, a.seed), None
    else:
        spec, data_file = custom_task_spec(a), os.path.abspath(a.task)
        spec.pop("val_size", None)
    tell_file_format(a, task)
    study = StudySpec(task=spec, method=a.method, forward=a.forward,
                      backwards=[b.strip() for b in a.backward.split(",") if b.strip()],
                      steps=a.steps, seeds=a.seeds if a.seeds is not None else 3, val_sizes=_sizes(a.val_sizes),
                      bandits=parse_bandits(a.bandits),
                      presets=[p.strip() for p in a.presets.split(",")] if a.presets else ["recommended"],
                      base_url=a.base_url, backward_base_url=a.backward_base_url, val_limit=a.val_limit,
                      patience=a.patience, data_file=data_file, reveal_test=a.reveal_test, test_limit=a.test_limit)
    if a.preset_study:
        apply_preset(study, a.preset_study, seeds_given=a.seeds is not None)
    study.check()
    return study


def cmd_study(a: argparse.Namespace) -> int:
    sessions = sessions_root(a)
    root = studies_root(sessions)
    if a.resume:
        given = [f"--{k.replace('_', '-')}" for k in ("task", "forward", "backward", "steps", "seeds", "val_sizes",
                                                     "bandits", "presets", "preset_study") if getattr(a, k) is not None]
        if given:
            raise ConfigError(f"--resume runs the study as it was planned; drop {', '.join(given)}.")
        study = Study.load(a.resume, root)
        print(f"study {study.id}: resuming {len(study.runs)} runs ({study.path})", flush=True)
    else:
        study = Study.plan(spec_from_args(a), root)
        print(f"study {study.id}: {len(study.runs)} runs ({study.path}); resume with "
              f"pgs study --resume {study.id}", flush=True)
    runner = SharedRunner(cache=runner_from_args(a).cache, concurrency=a.concurrency)
    options = client_options(a)
    warned: set = set()

    def models_for(cfg: SessionConfig) -> Models:
        models = Models.from_config(cfg, runner, options=options)
        for spec in {models.forward.spec, models.backward.spec} - warned:
            warned.add(spec)
            warn_unpriced(spec)
        return models

    test_runner = None
    if a.batch:
        if not study.spec.reveal_test:
            raise ConfigError("--batch sends the test reveals as Batch API jobs: use it with --reveal-test.")
        test_runner = BatchAsRunner(cache=runner.cache, record_dir=Path(a.cache_dir or cache_dir()) / "batches",
                                    poll_s=a.poll_seconds, timeout_s=a.timeout, on_status=lambda st: print(
                                        f"batch {st.batch_id}{' (resumed)' if st.resumed else ''}: {st.status} "
                                        f"{st.completed}/{st.total} failed {st.failed}", file=sys.stderr, flush=True))
    run_study(study, sessions=sessions, models_for=models_for, parallel=a.parallel,
              say=lambda line: print(line, flush=True), test_runner=test_runner)
    results = read_results(study, sessions)
    out = study_json(study, results)
    if a.json:
        print(json.dumps(out))
    else:
        per, overall = summarise_study(results)
        for p in per + [overall]:
            fv = p.final_val
            ci = f" [{fv.ci95[0]:.3f}, {fv.ci95[1]:.3f}]" if fv.ci95 else ""
            sd = f" sd {fv.sd:.3f}" if fv.sd is not None else ""
            mean = f"{fv.mean:.3f}" if fv.mean is not None else "-"
            print(f"{p.label}: final val mean {mean}{sd}{ci} over {fv.n} runs, {p.calls} calls, ${p.cost_usd:.4f}")
        print(f"({INTERVAL})")
    failed = [r for r in results if r.status != "done"]
    if failed:
        print(f"pgs: {len(failed)} of {len(results)} runs did not finish; pgs study --resume {study.id} "
              f"continues them.", file=sys.stderr)
        return 3
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="a grid of headless sessions over seeds, backward models, validation sizes, "
                                     "bandits and presets, with mean, sd and a 95%% interval")
    add_task_args(p, task_required=False)
    p.add_argument("--method", choices=("protegi", "textgrad"), default="textgrad")
    p.add_argument("--forward", help="forward model spec")
    p.add_argument("--backward", help="backward model spec(s), comma-separated for an ablation")
    add_model_args(p)
    p.add_argument("--backward-base-url", help="base URL for the backward models (default --base-url)")
    p.add_argument("--seeds", type=int, help="runs per setting, seeds 0..N-1 (default 3; the split stays --seed)")
    p.add_argument("--val-sizes", help="validation set sizes, e.g. 50,200")
    p.add_argument("--bandits", help="ProTeGi candidate bandits, e.g. ucb,sr (successive rejects)")
    p.add_argument("--presets", help="method presets, comma-separated (default: recommended)")
    p.add_argument("--preset-study", choices=list(STUDY_PRESETS), help="a ready grid: " + "; ".join(
        f"'{k}': {v.about}" for k, v in STUDY_PRESETS.items()))
    p.add_argument("--steps", type=int, help="automatic steps per run")
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--val-limit", type=int, help="validate on the first N validation questions")
    p.add_argument("--reveal-test", action="store_true", help="score each finished run's final prompt on the "
                                                               "sealed test split (logged in its session)")
    p.add_argument("--batch", action="store_true", help="with --reveal-test: score test as OpenAI Batch API jobs "
                                                         "(half price, polled, resumed after a crash)")
    p.add_argument("--poll-seconds", type=float, default=30.0, help="with --batch: seconds between polls (30)")
    p.add_argument("--test-limit", type=int, help="with --reveal-test: the first N test questions")
    p.add_argument("--parallel", type=int, default=4, help="runs at once (default 4); their calls share "
                                                           "--concurrency per provider")
    p.add_argument("--resume", metavar="STUDY_ID", help="finish a study's unfinished runs, skip finished ones")
    p.add_argument("--sessions-dir", help="sessions folder (the study manifests go in 'studies' beside it)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(fn=cmd_study)

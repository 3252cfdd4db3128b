"""`pgs tasks | evaluate`: the built-in tasks, and one prompt (or a session's versions) scored on a split.
With --session, test needs --reveal-test, and test and confirmation scores are recorded in the session's log."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..baselines import strategy_prompt
from ..batch import BatchStatus, batch_runner
from ..evaluate import evaluate, forward_request, report_from
from ..paths import SESSIONS_HELP, cache_dir
from ..session import Session
from ..tasks import list_tasks
from ..testlock import SEALED_MESSAGE, SEALED_SPLIT, score_split, version_entries
from .common import (EXIT_CONFIG, EXIT_PARTIAL, ConfigError, add_model_args, add_prompt_args, add_task_args,
                     load_task_from_args, model_from_args, phase_bars, progress_bar, read_prompt, runner_from_args,
                     session_models, sessions_root, tell_file_format)


def cmd_tasks(a: argparse.Namespace) -> int:
    infos = list_tasks()
    if a.json:
        print(json.dumps([{"name": t.name, "title": t.title, "labels": t.labels, "sizes": t.sizes}
                          for t in infos]))
        return 0
    for t in infos:
        sizes = " ".join(f"{k}={v}" for k, v in t.sizes.items())
        print(f"{t.name:10s} {sizes:32s} labels={','.join(t.labels)}  {t.title}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    if a.session:
        return cmd_evaluate_session(a)
    if not a.task or not a.model:
        raise ConfigError("pgs evaluate needs --task and --model (or --session ID to score a session's versions).")
    if a.split == SEALED_SPLIT and not a.reveal_test:
        raise ConfigError("The test split is sealed: pass --reveal-test to score on it (with no --session, "
                          "nothing records the look).")
    task = load_task_from_args(a)
    if a.split not in task.splits:
        raise ConfigError(f"Unknown split '{a.split}'. Splits: {', '.join(task.splits)}.")
    examples = task.split(a.split)
    if a.limit is not None:
        examples = examples[: max(0, a.limit)]
    if not examples:
        raise ConfigError(f"The {a.split} split of {a.task} is empty: nothing to evaluate.")
    prompt = read_prompt(a)
    if prompt is not None and not prompt.strip():
        raise ConfigError("The prompt is empty: give --prompt TEXT or a --prompt-file with text in it.")
    try:
        prompt = strategy_prompt(a.strategy, task, base_prompt=prompt, seed=a.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    model = model_from_args(a)
    runner = runner_from_args(a)
    tell_file_format(a, task)
    if a.batch:
        report = evaluate_batch(a, prompt, examples, model, task, runner)
    else:
        report = evaluate(prompt, examples, model, task=task, runner=runner, max_tokens=a.max_tokens,
                          progress=None if a.quiet else progress_bar(f"{a.task}/{a.split}"))
    if report.fatal:
        raise ConfigError(report.fatal)
    if report.n and report.errors == report.n:
        raise ConfigError(f"Every call failed; the first error: {report.rows[0].error}")
    s = report.summary()
    s.update({"task": task.name, "split": a.split, "model": a.model, "strategy": a.strategy})
    if a.json:
        print(json.dumps(s))
    else:
        lo, hi = s["ci_low"], s["ci_high"]
        print(f"accuracy {s['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f})  n={s['n']}  answered={s['answered']}  "
              f"unparsed={s['unparsed']}  "
              f"errors={s['errors']}  calls={s['calls']}  cached={s['cached']}  "
              f"tokens={s['input_tokens']}+{s['output_tokens']}  cost=${s['cost_usd']:.4f}")
    if report.errors:
        first = " ".join(next(r.error for r in report.rows if r.error).split()).rstrip(".")
        cached = " (answers received are cached)" if runner.cache is not None else ""
        print(f"pgs: warning: {report.errors} of {report.n} calls failed; accuracy {s['accuracy']:.3f} is over the "
              f"{report.answered} answered questions (failed calls are not counted as wrong). First error: {first}. "
              f"Run again to retry them{cached}; exit {EXIT_PARTIAL}.", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def evaluate_batch(a: argparse.Namespace, prompt: str, examples, model, task, runner):
    """--batch: the questions as one OpenAI Batch API job (half price), polled with a status line on stderr;
    a run killed while it waits resumes the recorded batch; answers are cached like any call's."""
    reqs = [forward_request(prompt, task, ex, max_tokens=a.max_tokens) for ex in examples]
    records = Path(a.cache_dir or cache_dir()) / "batches"
    batch = batch_runner(model.spec, cache=runner.cache, record_dir=records, price=getattr(model, "price", None),
                        poll_s=a.poll_seconds, timeout_s=a.timeout)
    last: list = [None]

    def show(st: BatchStatus) -> None:
        line = (f"batch {st.batch_id}{' (resumed)' if st.resumed else ''}: {st.status} {st.completed}/{st.total} "
                f"failed {st.failed}")
        if not a.quiet and line != last[0]:
            print(line, file=sys.stderr, flush=True)
        last[0] = line

    return report_from(prompt, task, examples, batch.run(reqs, on_status=show))


def version_numbers(text: str | None, n_versions: int) -> list[int]:
    """--versions as version numbers: default the seed and the current version; 'all'; or '0,v2,3'."""
    if not text:
        return sorted({0, n_versions - 1})
    if text.strip().lower() == "all":
        return list(range(n_versions))
    try:
        numbers = [int(x.strip().lstrip("vV")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--versions takes comma-separated version numbers or 'all', got {text[:60]!r}.") from None
    if not numbers:
        raise ConfigError("--versions names no version.")
    return list(dict.fromkeys(numbers))


def cmd_evaluate_session(a: argparse.Namespace) -> int:
    """Score versions of a session on a.split with the session's task and forward model."""
    if a.batch:
        raise ConfigError("--batch scores one prompt (--task, --model); with --session it is not available yet.")
    if a.split == SEALED_SPLIT and not a.reveal_test:
        raise ConfigError(f"{SEALED_MESSAGE}; pass --reveal-test to score on it.")
    if a.task or a.model:
        raise ConfigError("--session scores with the session's own task and forward model; drop --task and --model.")
    s = Session.open(a.session, root=sessions_root(a))
    with s:
        if not s.versions:
            raise ConfigError(f"Session {s.id} has no prompt versions yet: score the seed prompt first.")
        entries = version_entries(s, version_numbers(a.versions, len(s.versions)))
        s.models = session_models(s.config, a)
        before = len(s.events)
        reports = score_split(s, entries, a.split, limit=a.limit, reveal=a.reveal_test,
                              on_progress=phase_bars(a.quiet))
        rows = []
        for name, rep in reports.items():
            sm = rep.summary()
            rows.append({"version": name, **{k: sm[k] for k in ("accuracy", "ci_low", "ci_high", "n", "errors",
                                                                  "calls", "cached", "cost_usd")}})
            if not a.json:
                print(f"{name}: {a.split} accuracy {sm['accuracy']:.3f} (95% CI {sm['ci_low']:.3f}-{sm['ci_high']:.3f})"
                      f"  n={sm['n']}  errors={sm['errors']}  calls={sm['calls']}  cached={sm['cached']}"
                      f"  cost=${sm['cost_usd']:.4f}")
        recorded = s.events[-1]["type"] if len(s.events) > before else None
        if a.json:
            print(json.dumps({"session": s.id, "split": a.split, "recorded": recorded, "results": rows}))
        elif recorded:
            print(f"recorded '{recorded}' in session {s.id}"
                  + ("; steps decided from now on are marked as chosen after looking at test" if a.split == SEALED_SPLIT
                     else ""))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tasks", help="list built-in tasks and split sizes")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_tasks)

    e = sub.add_parser("evaluate", help="score one prompt, or a session's versions, on a split",
                       epilog=f"Accuracy is over the answered questions: a failed call is not a wrong answer. "
                              f"Exit codes: 0 every call answered; {EXIT_PARTIAL} some calls failed (the score "
                              f"covers the answered ones; 'answered' and 'errors' say how many, and a warning "
                              f"goes to stderr); {EXIT_CONFIG} a configuration error or every call failed.")
    add_task_args(e, task_required=False)
    e.add_argument("--split", default="val", help="train, val, confirmation or test (default val); test is sealed")
    e.add_argument("--model", help="model spec, e.g. openai:gpt-4o-mini (a session uses its forward model)")
    e.add_argument("--session", help="score this session's versions; test and confirmation scores are logged")
    e.add_argument("--versions", help="with --session: comma-separated version numbers or 'all' "
                                      "(default: the seed and the current version)")
    e.add_argument("--sessions-dir", help=SESSIONS_HELP)
    e.add_argument("--reveal-test", action="store_true",
                   help="allow scoring on the sealed test split (recorded in the session's log as a reveal)")
    add_model_args(e)
    add_prompt_args(e)
    e.add_argument("--batch", action="store_true", help="send the questions as one OpenAI Batch API job or "
                   "Anthropic Message Batch (half price, results within 24 h); polled, resumed after a crash, cached like any call")
    e.add_argument("--poll-seconds", type=float, default=30.0, help="with --batch: seconds between polls (30)")
    e.add_argument("--strategy", default="zero-shot", help="zero-shot | cot | few-shot:K (default zero-shot)")
    e.add_argument("--limit", type=int, help="only the first N questions of the split")
    e.add_argument("--max-tokens", type=int, default=512, help="answer length limit (default 512)")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(fn=cmd_evaluate)

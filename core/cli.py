"""`pgs`: the same engine as the app, headless. Configuration errors exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from .checks import BUDGET, COUNT, COUNT0, TOKENS, CheckError, Range, check_number, parse_setting
from .llm import ClientOptions, LLMError, make_model
from .paths import CACHE_HELP, SESSIONS_HELP
from .runner import Progress

EXIT_CONFIG = 2
EXIT_PARTIAL = 3  # evaluate: some calls failed; the score covers only the answered questions

# Numeric flags -> (allowed range, whole number?); checked right after parsing, before anything is loaded or paid.
ARG_RANGES: dict[str, tuple[Range, bool]] = {
    "steps": (COUNT, True), "patience": (COUNT, True), "budget_usd": (BUDGET, False),
    "budget_calls": (BUDGET, True), "val_limit": (COUNT, True), "max_tokens": (TOKENS, True),
    "limit": (COUNT, True), "val_size": (COUNT, True), "test_size": (COUNT0, True),
    "timeout": (Range(0, 86400, open_low=True), False), "retries": (Range(0, 100), True),
    "concurrency": (Range(1, 1024), True),
}


class ConfigError(Exception):
    """A user mistake: printed as one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), like every other configuration error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_CONFIG)


def check_arg_ranges(a: argparse.Namespace) -> None:
    """Every numeric flag in range, or ConfigError naming the flag."""
    for dest, (rng, whole) in ARG_RANGES.items():
        value = getattr(a, dest, None)
        if value is None:
            continue
        try:
            check_number("--" + dest.replace("_", "-"), value, rng, whole=whole)
        except CheckError as exc:
            raise ConfigError(str(exc)) from None


def parse_settings(method: str, pairs: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs typed by the engine's config fields (ranges are checked by SessionConfig.validate)."""
    from .protegi import ProtegiConfig
    from .textgrad import TextGradConfig

    cls = ProtegiConfig if method == "protegi" else TextGradConfig
    params: dict[str, Any] = {}
    for kv in pairs:
        k, sep, v = kv.partition("=")
        if not sep or not k.strip():
            raise ConfigError(f"--set needs KEY=VALUE, e.g. --set minibatch=16 (got {kv[:60]!r}).")
        try:
            params[k.strip()] = parse_setting(cls, k.strip(), v)
        except CheckError as exc:
            raise ConfigError(str(exc)) from None
    return params


def write_output(path: str, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (a temporary file beside it, then a rename)."""
    import tempfile

    target = os.path.abspath(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pgs-", dir=os.path.dirname(target))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise ConfigError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def _progress_bar(label: str) -> Callable[[Progress], None]:
    tty = sys.stderr.isatty()
    state = {"last": -1}

    def show(p: Progress) -> None:
        if p.total == 0:
            return
        pct = int(100 * p.done / p.total)
        if not tty and pct == state["last"] and p.done != p.total:
            return
        if not tty and pct // 10 == state["last"] // 10 and p.done != p.total:
            return
        state["last"] = pct
        width = 24
        fill = int(width * p.done / p.total)
        line = (f"{label} [{'#' * fill}{'.' * (width - fill)}] {p.done}/{p.total} "
                f"cached {p.cached} failed {p.failed} tokens {p.input_tokens + p.output_tokens} "
                f"${p.cost_usd:.4f}")
        sys.stderr.write(("\r" + line) if tty else (line + "\n"))
        if tty and p.done == p.total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _add_task_args(p: argparse.ArgumentParser, task_required: bool = True) -> None:
    p.add_argument("--task", required=task_required,
                   help="built-in task name (pubmedqa, medqa, liar) or a CSV/JSONL file")
    p.add_argument("--input-cols", help="custom file: comma-separated input columns")
    p.add_argument("--label-col", help="custom file: label column")
    p.add_argument("--id-col", help="custom file: id column (optional)")
    p.add_argument("--choices-col", help="custom file: column with options (optional)")
    p.add_argument("--labels", help="custom file: comma-separated allowed labels (optional)")
    p.add_argument("--no-header", action="store_true", help="custom CSV/TSV: row 1 is data; columns are numbered from 1")
    p.add_argument("--option-cols", help="custom file: comma-separated columns, one per MCQ option (lettered A, B, ...)")
    p.add_argument("--label-threshold", type=float, help="custom file: numeric scores >= this become the second class")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--val-size", type=int, help="validation split size")
    p.add_argument("--test-size", type=int, help="test split size (custom files)")


def tell_file_format(a: argparse.Namespace, task) -> None:
    """How a custom file was read and what loading it changed, on stderr (once every check has passed)."""
    if getattr(task, "file_format", ""):
        print(f"pgs: {os.path.basename(a.task)}: {task.file_format}", file=sys.stderr)
    for note in getattr(task, "notices", []):
        print(f"pgs: note: {note}", file=sys.stderr)


def load_task_from_args(a: argparse.Namespace):
    from .tasks import BUILTIN_TASKS, TaskError, load_task, load_task_from_path

    try:
        if a.task in BUILTIN_TASKS:
            kw: dict[str, Any] = {"seed": a.seed}
            if a.val_size is not None:
                kw["val_size"] = a.val_size
            return load_task(a.task, **kw)
        if not os.path.exists(a.task):
            raise ConfigError(f"Unknown task '{a.task}': not a built-in task ({', '.join(BUILTIN_TASKS)}) "
                              f"and no such file.")
        if not a.input_cols or not a.label_col:
            raise ConfigError("A custom data file needs --input-cols and --label-col.")
        kw = {"input_cols": [c.strip() for c in a.input_cols.split(",") if c.strip()],
              "label_col": a.label_col, "id_col": a.id_col, "choices_col": a.choices_col, "seed": a.seed,
              "labels": [x.strip() for x in a.labels.split(",")] if a.labels else None}
        if a.val_size is not None:
            kw["val_size"] = a.val_size
        if a.test_size is not None:
            kw["test_size"] = a.test_size
        kw.update(custom_file_options(a))
        return load_task_from_path(a.task, **kw)
    except TaskError as exc:
        raise ConfigError(str(exc)) from None


def custom_file_options(a: argparse.Namespace) -> dict:
    """The --no-header / --option-cols / --label-threshold settings as load_custom keywords (only those given)."""
    kw: dict[str, Any] = {}
    if getattr(a, "no_header", False):
        kw["header"] = False
    if getattr(a, "option_cols", None):
        kw["option_cols"] = [c.strip() for c in a.option_cols.split(",") if c.strip()]
    if getattr(a, "label_threshold", None) is not None:
        kw["label_threshold"] = a.label_threshold
    return kw


def _model(spec: str, base_url: str | None, timeout: float = 60.0, retries: int = 4):
    try:
        model = make_model(spec, base_url=base_url, options=ClientOptions(timeout_s=timeout, max_retries=retries))
    except LLMError as exc:
        raise ConfigError(str(exc)) from None
    warn_unpriced(model.spec)
    return model


def warn_unpriced(spec) -> None:
    from .llm import price_for

    if spec.provider in ("openai", "anthropic") and price_for(spec) is None:
        print(f"pgs: warning: no price known for {spec.model}; costs show as $0. Set one with "
              f"PGS_PRICES='{{\"{spec.model}\": [input, output]}}' (USD per 1M tokens).", file=sys.stderr)


def load_price_overrides() -> None:
    """PGS_PRICES='{"model": [input_usd_per_1M, output_usd_per_1M], ...}'."""
    from .llm import set_price_overrides

    raw = os.environ.get("PGS_PRICES")
    if not raw:
        return
    try:
        prices = json.loads(raw)
        set_price_overrides({str(k): (float(v[0]), float(v[1])) for k, v in prices.items()})
    except (ValueError, TypeError, IndexError, AttributeError):
        raise ConfigError("PGS_PRICES must be JSON like {\"my-model\": [0.15, 0.6]} (USD per 1M tokens).") from None


def _read_prompt(a: argparse.Namespace) -> str | None:
    if getattr(a, "prompt_file", None):
        try:
            with open(a.prompt_file, encoding="utf-8") as f:
                return f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read --prompt-file {a.prompt_file}: {exc}") from None
    return a.prompt


def _runner(a: argparse.Namespace):
    from .cache import CacheError, ResponseCache
    from .runner import Runner

    cache = None
    if not getattr(a, "no_cache", False):
        try:
            cache = ResponseCache(getattr(a, "cache_dir", None))
        except CacheError as exc:
            raise ConfigError(str(exc)) from None
        cache.on_write_error = lambda msg: print(f"pgs: warning: {msg}", file=sys.stderr, flush=True)
    if a.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1.")
    return Runner(cache=cache, concurrency=a.concurrency)


def cmd_tasks(a: argparse.Namespace) -> int:
    from .tasks import list_tasks

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
    from .baselines import strategy_prompt
    from .evaluate import evaluate
    from .testlock import SEALED_SPLIT

    if a.session:
        from .cli_evaluate import cmd_evaluate_session

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
    prompt = _read_prompt(a)
    if prompt is not None and not prompt.strip():
        raise ConfigError("The prompt is empty: give --prompt TEXT or a --prompt-file with text in it.")
    try:
        prompt = strategy_prompt(a.strategy, task, base_prompt=prompt, seed=a.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    model = _model(a.model, a.base_url, a.timeout, a.retries)
    runner = _runner(a)
    tell_file_format(a, task)
    report = evaluate(prompt, examples, model, task=task, runner=runner, max_tokens=a.max_tokens,
                      progress=None if a.quiet else _progress_bar(f"{a.task}/{a.split}"))
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


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pgs", description="Prompt Gradient Studio (headless). Sessions and the response cache "
                                             "go in ./sessions and ./cache of the current folder, or under PGS_HOME; "
                                             "PGS_SESSIONS_DIR and PGS_CACHE_DIR name each folder.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("tasks", help="list built-in tasks and split sizes")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_tasks)

    e = sub.add_parser("evaluate", help="score one prompt, or a session's versions, on a split",
                       epilog=f"Accuracy is over the answered questions: a failed call is not a wrong answer. "
                              f"Exit codes: 0 every call answered; {EXIT_PARTIAL} some calls failed (the score "
                              f"covers the answered ones; 'answered' and 'errors' say how many, and a warning "
                              f"goes to stderr); {EXIT_CONFIG} a configuration error or every call failed.")
    _add_task_args(e, task_required=False)
    e.add_argument("--split", default="val", help="train, val, confirmation or test (default val); test is sealed")
    e.add_argument("--model", help="model spec, e.g. openai:gpt-4o-mini (a session uses its forward model)")
    e.add_argument("--session", help="score this session's versions; test and confirmation scores are logged")
    e.add_argument("--versions", help="with --session: comma-separated version numbers or 'all' "
                                      "(default: the seed and the current version)")
    e.add_argument("--sessions-dir", help=SESSIONS_HELP)
    e.add_argument("--reveal-test", action="store_true",
                   help="allow scoring on the sealed test split (recorded in the session's log as a reveal)")
    _add_model_args(e)
    e.add_argument("--prompt", default="You are a helpful, creative, and smart assistant.")
    e.add_argument("--prompt-file")
    e.add_argument("--strategy", default="zero-shot", help="zero-shot | cot | few-shot:K (default zero-shot)")
    e.add_argument("--limit", type=int, help="only the first N questions of the split")
    e.add_argument("--max-tokens", type=int, default=512, help="answer length limit (default 512)")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(fn=cmd_evaluate)

    try:
        from . import cli_optimize
    except ImportError:
        cli_optimize = None
    if cli_optimize is not None:
        cli_optimize.add_commands(sub, _add_task_args, _add_model_args)
    return p


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8088/v1")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    p.add_argument("--retries", type=int, default=4, help="SDK retries on 429/5xx (default 4)")
    p.add_argument("--no-cache", action="store_true", help="bypass the response cache")
    p.add_argument("--cache-dir", help=CACHE_HELP)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        check_arg_ranges(a)
        load_price_overrides()
        return int(a.fn(a) or 0)
    except ConfigError as exc:
        print(f"pgs: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except LLMError as exc:
        print(f"pgs: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RuntimeError as exc:  # SessionError, CacheError: a state the user must see, one line
        if type(exc).__name__ not in ("SessionError", "SessionLocked", "BudgetExceeded", "UnpricedBudget",
                                      "CacheError", "Cancelled"):
            raise
        print(f"pgs: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # a full or read-only disk, a vanished folder: one line, the session stays as it was
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"pgs: error: cannot write or read a file{where}: {exc.strerror or exc}.", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("pgs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # `python -m core.cli`: use the package's classes, not __main__'s
    from core.cli import main as _main

    sys.exit(_main())

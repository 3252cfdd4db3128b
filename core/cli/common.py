"""What every `pgs` subcommand shares: exit codes and the error table, argument groups, reading a task and a
prompt, models and the runner, progress bars, and whole-or-nothing output files."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..baselines import SEED_PROMPT
from ..blame import BlameError
from ..bundle import BundleError
from ..cache import CacheError, ResponseCache
from ..checks import BUDGET, COUNT, COUNT0, TOKENS, CheckError, Range, check_number, parse_setting
from ..engine import Cancelled
from ..llm import ClientOptions, LLMError, for_surface, ModelSpec, make_model, price_for, set_price_overrides
from ..paths import CACHE_HELP, SESSIONS_HELP, sessions_dir
from ..protegi import ProtegiConfig
from ..runner import Progress, Runner
from ..session import Models, SessionConfig, SessionError
from ..tasks import BUILTIN_TASKS, Task, TaskError, load_task, load_task_from_path
from ..textgrad import TextGradConfig

EXIT_CONFIG = 2
EXIT_PARTIAL = 3  # evaluate: some calls failed; the score covers only the answered questions
EXIT_INTERRUPTED = 130


class ConfigError(Exception):
    """A user mistake: printed as one line, exit 2."""


@dataclass(frozen=True)
class OneLineError:
    """An exception type the user must see as one line `pgs: error: ...`, and the exit code it gives."""

    kind: type[BaseException]
    exit_code: int
    message: Callable[[BaseException], str] = str


def _file_error(exc: BaseException) -> str:
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""  # type: ignore[attr-defined]
    return f"cannot write or read a file{where}: {getattr(exc, 'strerror', None) or exc}."


# Checked in order, by isinstance; anything else is a bug and keeps its traceback.
ONE_LINE_ERRORS: tuple[OneLineError, ...] = (
    OneLineError(ConfigError, EXIT_CONFIG),
    OneLineError(CheckError, EXIT_CONFIG),
    OneLineError(TaskError, EXIT_CONFIG),
    OneLineError(BundleError, EXIT_CONFIG),
    OneLineError(BlameError, EXIT_CONFIG),  # pgs blame: no such version
    OneLineError(LLMError, EXIT_CONFIG),
    OneLineError(SessionError, EXIT_CONFIG),  # SessionLocked, BudgetExceeded, UnpricedBudget, TestSealed
    OneLineError(CacheError, EXIT_CONFIG),
    OneLineError(Cancelled, EXIT_CONFIG),
    OneLineError(OSError, EXIT_CONFIG, _file_error),  # a full or read-only disk, a vanished folder
)


def one_line_error(exc: BaseException) -> tuple[str, int] | None:
    """(message, exit code) for an error the user must see as one line; None for a bug."""
    for entry in ONE_LINE_ERRORS:
        if isinstance(exc, entry.kind):
            return for_surface(entry.message(exc), "cli"), entry.exit_code
    return None


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr (exit 2), like every other configuration error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_CONFIG)


# Numeric flags -> (allowed range, whole number?); checked right after parsing, before anything is loaded or paid.
ARG_RANGES: dict[str, tuple[Range, bool]] = {
    "steps": (COUNT, True), "patience": (COUNT, True), "budget_usd": (BUDGET, False),
    "budget_calls": (BUDGET, True), "val_limit": (COUNT, True), "max_tokens": (TOKENS, True),
    "limit": (COUNT, True), "val_size": (COUNT, True), "test_size": (COUNT0, True),
    "timeout": (Range(0, 86400, open_low=True), False), "retries": (Range(0, 100), True),
    "concurrency": (Range(1, 1024), True),
    "seeds": (Range(1, 100), True), "parallel": (Range(1, 64), True), "test_limit": (COUNT, True),
    "poll_seconds": (Range(0, 3600), False),
}


def check_arg_ranges(a: argparse.Namespace) -> None:
    """Every numeric flag in range, or CheckError naming the flag."""
    for dest, (rng, whole) in ARG_RANGES.items():
        value = getattr(a, dest, None)
        if value is not None:
            check_number("--" + dest.replace("_", "-"), value, rng, whole=whole)


# ---------------------------------------------------------------- argument groups


def add_task_args(p: argparse.ArgumentParser, task_required: bool = True) -> None:
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


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8088/v1")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per call (default: chosen per server, 600 local or compatible, 60 OpenAI/Anthropic)")
    p.add_argument("--retries", type=int, default=4, help="SDK retries on 429/5xx (default 4)")
    p.add_argument("--no-cache", action="store_true", help="bypass the response cache")
    p.add_argument("--cache-dir", help=CACHE_HELP)


def add_prompt_args(p: argparse.ArgumentParser, help_text: str | None = None) -> None:
    p.add_argument("--prompt", default=SEED_PROMPT, help=help_text)
    p.add_argument("--prompt-file")


def add_session_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions-dir", help=SESSIONS_HELP)
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------------- tasks, prompts, folders


def _columns(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def custom_task_spec(a: argparse.Namespace) -> dict[str, Any]:
    """The load_custom keywords a custom data file was given on the command line (also what a session stores)."""
    if not a.input_cols or not a.label_col:
        raise ConfigError("A custom data file needs --input-cols and --label-col.")
    kw: dict[str, Any] = {"input_cols": _columns(a.input_cols), "label_col": a.label_col, "id_col": a.id_col,
                          "choices_col": a.choices_col, "seed": a.seed,
                          "labels": [x.strip() for x in a.labels.split(",")] if a.labels else None}
    if a.val_size is not None:
        kw["val_size"] = a.val_size
    if a.test_size is not None:
        kw["test_size"] = a.test_size
    if getattr(a, "no_header", False):
        kw["header"] = False
    if getattr(a, "option_cols", None):
        kw["option_cols"] = _columns(a.option_cols)
    if getattr(a, "label_threshold", None) is not None:
        kw["label_threshold"] = a.label_threshold
    return kw


def load_task_from_args(a: argparse.Namespace) -> Task:
    """The built-in task or custom file --task names, fully checked (TaskError or ConfigError otherwise)."""
    if a.task in BUILTIN_TASKS:
        kw: dict[str, Any] = {"seed": a.seed}
        if a.val_size is not None:
            kw["val_size"] = a.val_size
        return load_task(a.task, **kw)
    if not os.path.exists(a.task):
        raise ConfigError(f"Unknown task '{a.task}': not a built-in task ({', '.join(BUILTIN_TASKS)}) "
                          f"and no such file.")
    return load_task_from_path(a.task, **custom_task_spec(a))


def tell_file_format(a: argparse.Namespace, task: Task) -> None:
    """How a custom file was read and what loading it changed, on stderr (once every check has passed)."""
    if getattr(task, "file_format", ""):
        print(f"pgs: {os.path.basename(a.task)}: {task.file_format}", file=sys.stderr)
    for note in getattr(task, "notices", []):
        print(f"pgs: note: {note}", file=sys.stderr)


def read_prompt(a: argparse.Namespace) -> str | None:
    """--prompt-file's text (stripped), else --prompt; one line if the file cannot be read."""
    if getattr(a, "prompt_file", None):
        try:
            with open(a.prompt_file, encoding="utf-8") as f:
                return f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read --prompt-file {a.prompt_file}: {exc}") from None
    return a.prompt


def parse_settings(method: str, pairs: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs typed by the engine's config fields (ranges are checked by SessionConfig.validate)."""
    cls = ProtegiConfig if method == "protegi" else TextGradConfig
    params: dict[str, Any] = {}
    for kv in pairs:
        k, sep, v = kv.partition("=")
        if not sep or not k.strip():
            raise ConfigError(f"--set needs KEY=VALUE, e.g. --set minibatch=16 (got {kv[:60]!r}).")
        params[k.strip()] = parse_setting(cls, k.strip(), v)
    return params


def sessions_root(a: argparse.Namespace) -> Path:
    return Path(a.sessions_dir) if a.sessions_dir else sessions_dir()


# ---------------------------------------------------------------- models, prices, the runner


def load_price_overrides() -> None:
    """PGS_PRICES='{"model": [input_usd_per_1M, output_usd_per_1M], ...}'."""
    raw = os.environ.get("PGS_PRICES")
    if not raw:
        return
    try:
        prices = json.loads(raw)
        set_price_overrides({str(k): (float(v[0]), float(v[1])) for k, v in prices.items()})
    except (ValueError, TypeError, IndexError, AttributeError):
        raise ConfigError("PGS_PRICES must be JSON like {\"my-model\": [0.15, 0.6]} (USD per 1M tokens).") from None


def warn_unpriced(spec: ModelSpec) -> None:
    if spec.provider in ("openai", "anthropic") and price_for(spec) is None:
        print(f"pgs: warning: no price known for {spec.model}; costs show as $0. Set one with "
              f"PGS_PRICES='{{\"{spec.model}\": [input, output]}}' (USD per 1M tokens).", file=sys.stderr)


def client_options(a: argparse.Namespace) -> ClientOptions:
    return ClientOptions(timeout_s=a.timeout, max_retries=a.retries)


def model_from_args(a: argparse.Namespace):
    """The --model given, warned about when unpriced."""
    model = make_model(a.model, base_url=a.base_url, options=client_options(a))
    warn_unpriced(model.spec)
    return model


def session_models(cfg: SessionConfig, a: argparse.Namespace) -> Models:
    """A session's forward and backward models, on this command's runner and client options."""
    models = Models.from_config(cfg, runner_from_args(a), options=client_options(a))
    for spec in {models.forward.spec, models.backward.spec}:
        warn_unpriced(spec)
    return models


def runner_from_args(a: argparse.Namespace) -> Runner:
    """A runner with the response cache (unless --no-cache) and --concurrency."""
    cache = None
    if not getattr(a, "no_cache", False):
        cache = ResponseCache(getattr(a, "cache_dir", None))
        cache.on_write_error = lambda msg: print(f"pgs: warning: {msg}", file=sys.stderr, flush=True)
    if a.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1.")
    return Runner(cache=cache, concurrency=a.concurrency)


# ---------------------------------------------------------------- progress and output


def progress_bar(label: str) -> Callable[[Progress], None]:
    """A progress line on stderr: redrawn in place on a terminal, every 10% (and at the end) otherwise."""
    tty = sys.stderr.isatty()
    state = {"last": -1}

    def show(p: Progress) -> None:
        if p.total == 0:
            return
        pct = int(100 * p.done / p.total)
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


def phase_bars(quiet: bool) -> Callable[[str, Progress], None] | None:
    """One progress bar per phase (baseline, gradient, validate, ...); None with --quiet."""
    if quiet:
        return None
    bars: dict[str, Callable[[Progress], None]] = {}

    def show(phase: str, p: Progress) -> None:
        bars.setdefault(phase, progress_bar(phase))(p)

    return show


def write_output(path: str, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (a temporary file beside it, then a rename)."""
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

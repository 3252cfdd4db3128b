"""`pgs`: the same engine as the app, headless. Configuration errors exit 2 with one line.

common.py holds what every subcommand shares; evaluate.py (tasks, evaluate), sessions.py (optimize, resume),
bundles.py (export, import, replay), person.py (blame, exclude, lock), undo.py (revert), steps.py (new, step,
continue, feedback, gradient, decide, validate, confirm), study.py (study) and demo.py (demo) each add their subcommands to the
parser built here."""

from __future__ import annotations

import argparse
import sys

from . import bundles, demo, evaluate, person, sessions, steps, study, undo
from .common import (EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_PARTIAL, ConfigError, OneLineParser, check_arg_ranges,
                     load_price_overrides, one_line_error)

__all__ = ["EXIT_CONFIG", "EXIT_PARTIAL", "ConfigError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pgs", description="Prompt Gradient Studio (headless). Sessions and the response cache "
                                             "go in ./sessions and ./cache of the current folder, or under PGS_HOME; "
                                             "PGS_SESSIONS_DIR and PGS_CACHE_DIR name each folder.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for group in (evaluate, sessions, bundles, person, undo, steps, study, demo):
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a known error is one line on stderr and its exit code (see common.ONE_LINE_ERRORS)."""
    a = build_parser().parse_args(argv)
    try:
        check_arg_ranges(a)
        load_price_overrides()
        return int(a.fn(a) or 0)
    except KeyboardInterrupt:
        print("pgs: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        known = one_line_error(exc)
        if known is None:
            raise
        message, code = known
        print(f"pgs: error: {message}", file=sys.stderr)
        return code

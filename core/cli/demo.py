"""`pgs demo`: where the shipped demo bundle is, what recorded it, and an offline replay of it."""

from __future__ import annotations

import argparse

from .. import demo
from .bundles import cmd_replay
from .common import ConfigError


def cmd_demo(a: argparse.Namespace) -> int:
    path = demo.DEMO_BUNDLE
    if not path.is_file():
        raise ConfigError(f"The demo bundle is missing from this install ({path}).")
    print(path)
    try:
        print(demo.recording(path).line())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read the demo bundle {path}: {type(exc).__name__}") from None
    return cmd_replay(argparse.Namespace(bundle=str(path), json=a.json))


def add_commands(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="print the shipped demo bundle's path and replay it offline (no key, no network)")
    d.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    d.set_defaults(fn=cmd_demo)

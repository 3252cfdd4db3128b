"""`pgs export | import | replay`: a session as a bundle or a Markdown report, and bundles back in."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..bundle import MAX_BUNDLE_BYTES, bundle_bytes, import_bundle, replay_bundle
from ..cache import ResponseCache
from ..paths import CACHE_HELP
from ..report import markdown_report
from ..session import Session
from .common import ConfigError, add_session_output_args, sessions_root, write_output


def cmd_export(a: argparse.Namespace) -> int:
    s = Session.open(a.id, root=sessions_root(a), readonly=True)
    if a.format == "markdown":
        out = markdown_report(s).encode("utf-8")
    else:
        out = bundle_bytes(s, ResponseCache(a.cache_dir))
    if a.output and a.output != "-":
        write_output(a.output, out)  # whole or nothing; one line if the folder is missing, full or read-only
        print(f"wrote {a.output} ({len(out)} bytes)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    return 0


def read_bundle(path: str) -> bytes:
    """A bundle file's bytes, refused above MAX_BUNDLE_BYTES before reading."""
    try:
        size = os.path.getsize(path)
        if size > MAX_BUNDLE_BYTES:
            raise ConfigError(f"The bundle is {size / 2**20:.0f} MB; the limit is {MAX_BUNDLE_BYTES / 2**20:.0f} MB.")
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror or exc}") from None


def cmd_import(a: argparse.Namespace) -> int:
    data = read_bundle(a.bundle)
    print(import_bundle(data, root=sessions_root(a), cache=ResponseCache(a.cache_dir)))
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    r = replay_bundle(read_bundle(a.bundle))
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
    missing = f" (first: {'; '.join(r.missing[:3])})" if r.missing else ""
    failed = (f"; calls that failed in the session, replayed as the same failure: {r.failures_replayed}"
              if r.failures_replayed else "")
    print(f"{'identical' if r.matches else 'DIFFERENT'}; responses missing from the bundle: {r.misses}{missing}{failed}")
    if a.json:
        print(json.dumps({"session": r.session, "matches": r.matches, "misses": r.misses, "steps": r.steps,
                          "first_difference": r.first_difference, "missing": r.missing,
                          "failures_replayed": r.failures_replayed}))
    return 0 if r.matches else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export", help="export a session as a bundle (JSON) or a Markdown report")
    e.add_argument("id")
    e.add_argument("--format", choices=("bundle", "markdown"), default="bundle")
    e.add_argument("--output", "-o", help="file to write (default stdout)")
    e.add_argument("--cache-dir", help=CACHE_HELP)
    add_session_output_args(e)
    e.set_defaults(fn=cmd_export)

    i = sub.add_parser("import", help="import a bundle as a new session")
    i.add_argument("bundle")
    i.add_argument("--cache-dir", help=CACHE_HELP)
    add_session_output_args(i)
    i.set_defaults(fn=cmd_import)

    p = sub.add_parser("replay", help="replay a bundle offline (no key, no network) and compare")
    p.add_argument("bundle")
    add_session_output_args(p)
    p.set_defaults(fn=cmd_replay)

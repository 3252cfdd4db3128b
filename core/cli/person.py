"""`pgs blame`: where each sentence of a prompt version came from (read-only; works while another process
holds the session, and on an imported bundle's session)."""

from __future__ import annotations

import argparse
import json

from ..blame import SentenceBlame, blame
from ..session import Session
from .common import add_session_output_args, sessions_root


def _plain(text: object, limit: int = 0) -> str:
    """Model or bundle text fit for a terminal line: control characters as '?', optionally cut to `limit`."""
    out = " ".join("".join(ch if ch.isprintable() else "?" for ch in part) for part in str(text).split())
    return out if not limit or len(out) <= limit else out[: limit - 1] + "…"


def _answer(f) -> str:
    gold = _plain(f.gold) if f.gold is not None else "unknown"
    answer = _plain(f.answer) if f.answer is not None else "unparsed"
    return f"{_plain(f.id)} (gold {gold}, answered {answer})"


def blame_table(sentences: list[SentenceBlame]) -> list[str]:
    """A readable table: one row per sentence, then its gradient and failures indented under it."""
    lines = [f"{'#':>3}  {'step':>4}  {'origin':<10} {'Δ pts':>6}  sentence"]
    for n, s in enumerate(sentences, 1):
        delta = f"{s.delta_pts:+.1f}" if s.delta_pts is not None else ""
        lines.append(f"{n:>3}  {s.step:>4}  {_plain(s.origin, 10):<10} {delta:>6}  {_plain(s.text)}")
        if s.override:
            lines.append(f"{'':>16}accepted by override (the gate did not pass)")
        if s.gradient:
            lines.append(f"{'':>16}gradient {_plain(s.gradient_id or '')}: {_plain(s.gradient, 160)}")
        if s.failures:
            lines.append(f"{'':>16}failures: " + "; ".join(_answer(f) for f in s.failures[:8])
                         + (f"; and {len(s.failures) - 8} more" if len(s.failures) > 8 else ""))
    return lines


def cmd_blame(a: argparse.Namespace) -> int:
    with Session.open(a.id, root=sessions_root(a), readonly=True) as s:
        sentences = blame(s, a.version)
        number = len(s.versions) - 1 if a.version is None else a.version
    if a.json:
        print(json.dumps({"session": a.id, "version": number, "sentences": [x.to_json() for x in sentences]},
                         ensure_ascii=False))
    else:
        print(f"session {_plain(a.id)}, version {number}: {len(sentences)} sentences")
        print("\n".join(blame_table(sentences)))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("blame", help="each sentence of a prompt version, with the step, gradient and failures "
                                     "that introduced it (read-only)")
    b.add_argument("id")
    b.add_argument("--version", type=int, help="version number (default: the current one)")
    add_session_output_args(b)
    b.set_defaults(fn=cmd_blame)

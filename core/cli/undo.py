"""`pgs revert`: make an earlier version's prompt current again, as a new version (history is never rewritten)."""

from __future__ import annotations

import argparse
import json

from ..session import Session
from .common import add_session_output_args, sessions_root


def cmd_revert(a: argparse.Namespace) -> int:
    with Session.open(a.id, root=sessions_root(a)) as s:
        v = s.revert(a.to)
        print(json.dumps({"session": s.id, "version": v.number, "reverted_to": v.reverted_to}) if a.json else
              f"session {s.id}: version {v.number} is version {v.reverted_to}'s prompt again "
              f"(val {v.accuracy:.3f}); the next step starts from it")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("revert", help="make an earlier version current again (a new version; nothing is erased)")
    r.add_argument("id")
    r.add_argument("--to", type=int, required=True, metavar="N", help="the version whose prompt to take")
    add_session_output_args(r)
    r.set_defaults(fn=cmd_revert)

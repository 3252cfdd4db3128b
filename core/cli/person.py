"""`pgs blame`: where each sentence of a prompt version came from (read-only; works while another process
holds the session, and on an imported bundle's session). `pgs exclude` and `pgs lock`: the person's marks
(a disputed or excluded question, a locked sentence), each one event."""

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


def cmd_exclude(a: argparse.Namespace) -> int:
    with Session.open(a.id, root=sessions_root(a)) as s:
        d = s.dispute(a.question, a.reason, exclude=not a.dispute_only)
        excluded = len(s.folded.excluded())
    if a.json:
        print(json.dumps({"session": a.id, "question": d.question, "excluded": d.exclude, "reason": d.reason,
                          "from_step": d.step, "excluded_total": excluded}, ensure_ascii=False))
    else:
        what = "excluded from minibatches and gates" if d.exclude else "label disputed (still asked)"
        print(f"question {_plain(d.question)}: {what} from step {d.step} on; {excluded} excluded in all")
    return 0


def cmd_lock(a: argparse.Namespace) -> int:
    with Session.open(a.id, root=sessions_root(a)) as s:
        texts = (s.unlock_sentences if a.unlock else s.lock_sentences)(a.sentence)
        locks = s.active_locks()
        version = s.current.number
    if a.json:
        print(json.dumps({"session": a.id, "version": version, "unlocked" if a.unlock else "locked": texts,
                          "locks": locks}, ensure_ascii=False))
    else:
        verb = "unlocked" if a.unlock else "locked"
        for n, text in zip(a.sentence, texts):
            print(f"sentence {n} of v{version} {verb}: {_plain(text, 160)}")
        print(f"{len(locks)} sentence{'s' if len(locks) != 1 else ''} locked")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("blame", help="each sentence of a prompt version, with the step, gradient and failures "
                                     "that introduced it (read-only)")
    b.add_argument("id")
    b.add_argument("--version", type=int, help="version number (default: the current one)")
    add_session_output_args(b)
    b.set_defaults(fn=cmd_blame)

    e = sub.add_parser("exclude", help="exclude a question from minibatches and gates from now on (or, with "
                                       "--dispute-only, mark its gold label disputed); the data is not changed")
    e.add_argument("id")
    e.add_argument("question", help="the question id (as in pgs step --json or the app)")
    e.add_argument("--reason", required=True, help="why the gold label is disputed")
    e.add_argument("--dispute-only", action="store_true", help="keep asking it; only record the dispute")
    add_session_output_args(e)
    e.set_defaults(fn=cmd_exclude)

    k = sub.add_parser("lock", help="lock a sentence of the current prompt (numbered as pgs blame numbers "
                                    "them): candidates must keep it verbatim")
    k.add_argument("id")
    k.add_argument("--sentence", type=int, action="append", required=True, metavar="N",
                   help="sentence number, from 1 (repeat for more)")
    k.add_argument("--unlock", action="store_true", help="unlock instead")
    add_session_output_args(k)
    k.set_defaults(fn=cmd_lock)

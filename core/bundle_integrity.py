"""Content hashes written into a bundle at export, and the event-by-event comparison of a replay.

The hashes are a chain (each event's hash covers the one before), so a changed, removed, added or moved
event is named. They catch edits, not forgery: anyone can recompute them, which is why replay also
compares every recorded text and score with what the replay produces.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import events as E

ALGORITHM = "sha256-chain/1"
# bookkeeping that legitimately differs between a recording and its replay (time, cache hits, token counts)
_VOLATILE = {"ts", "keys", "key", "spend", "cached", "cost_usd", "input_tokens", "output_tokens", "saved_usd",
             "imported"}
_COMPARED = (E.BASELINE, E.STEP_STARTED, E.FORWARD, E.PROPOSAL_MADE, E.PROPOSAL_RETRIED, E.DECISION, E.VALIDATION,
             E.GATE, E.REVERTED, *E.PERSON_MARKS)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def event_chain(events: list[dict]) -> list[str]:
    """hash_i = sha256(hash_{i-1} + canonical JSON of event i)."""
    out, prev = [], b""
    for ev in events:
        h = hashlib.sha256(prev + _canonical(ev)).hexdigest()
        out.append(h)
        prev = h.encode("ascii")
    return out


def content_hashes(events: list[dict], responses: dict, data: dict | None) -> dict:
    """The `hashes` section of a bundle."""
    return {"algorithm": ALGORITHM, "events": event_chain(events),
            "responses": hashlib.sha256(_canonical(responses)).hexdigest(),
            "data": hashlib.sha256(_canonical(data["content"])).hexdigest() if data else None}


def first_modification(b: dict) -> str | None:
    """None when the bundle has no hashes (exported before they existed) or matches them; else what changed."""
    hashes = b.get("hashes")
    if hashes is None:
        return None
    if not (isinstance(hashes, dict) and hashes.get("algorithm") == ALGORITHM and isinstance(hashes.get("events"), list)
            and all(isinstance(h, str) for h in hashes["events"])):
        return "its content hashes are missing or malformed"
    events, recorded = b["events"], hashes["events"]
    for i, (h, want) in enumerate(zip(event_chain(events), recorded)):
        if h != want:
            return f"event {i + 1} ('{events[i]['type']}') is not the event written at export"
    if len(events) != len(recorded):
        i = min(len(events), len(recorded))
        return (f"event {i + 1} ('{events[i]['type']}') was added after export" if len(events) > len(recorded)
                else f"the events after event {i} were removed")
    again = content_hashes(events, b.get("responses", {}), b.get("data"))
    if hashes.get("responses") != again["responses"]:
        return "its recorded model responses were changed after export"
    if hashes.get("data") != again["data"]:
        return "its data file was changed after export"
    return None


def _content(ev: Any) -> Any:
    if isinstance(ev, dict):
        return {k: _content(v) for k, v in ev.items() if k not in _VOLATILE}
    if isinstance(ev, (list, tuple)):  # a live event holds tuples where its JSON form holds lists
        return [_content(v) for v in ev]
    return ev


def comparable(events: list[dict]) -> list[tuple[int, dict]]:
    """(1-based index, content) of the events a replay reproduces: a step restarted after a crash or a
    decision changed before validation keeps only its last version, as the replay does."""
    out: list[tuple[int, dict]] = []
    for n, ev in enumerate(events, 1):
        t = ev.get("type")
        if t not in _COMPARED:
            continue
        if t == E.STEP_STARTED:
            same = next((i for i in range(len(out) - 1, -1, -1) if out[i][1]["type"] == E.STEP_STARTED), None)
            if same is not None and (out[same][1].get("step"), out[same][1].get("attempt")) == (
                    ev.get("step"), ev.get("attempt")):
                del out[same:]
        elif t == E.DECISION and out and out[-1][1]["type"] == E.DECISION and out[-1][1].get("step") == ev.get("step"):
            out.pop()
        out.append((n, _content(ev)))
    return out


def _short(v: Any) -> str:
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


def _where(a: Any, where: str) -> str:
    """What a recorded item is, for the message: the call (template) that made it, or its question id."""
    if not isinstance(a, dict):
        return where
    call = a if "messages" in a else a.get("call")  # a call record, or a gradient/candidate made by one
    if isinstance(call, dict) and isinstance(call.get("template"), str):
        return f"call {call['template']}"
    if isinstance(a.get("id"), str) and "gold" in a:
        return f"{where}, question {a['id']}" if where else f"question {a['id']}"
    return where


def _first_diff(a: Any, b: Any, path: str, where: str = "") -> str | None:
    """The first field that differs, with the call (template) or question it belongs to, if any."""
    if isinstance(a, dict) and isinstance(b, dict):
        where = _where(a, where)
        for k in a:  # a field the recording lacks was added by a later version (its hashes catch deletions)
            d = _first_diff(a.get(k), b.get(k), f"{path}.{k}" if path else k, where)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, x in enumerate(a):
            if i >= len(b):
                w = _where(x, where)
                return f"{path}[{i}]{f' ({w})' if w else ''}: recorded {_short(x)}, replayed nothing"
            d = _first_diff(x, b[i], f"{path}[{i}]", where)
            if d:
                return d
        if len(b) > len(a):
            return f"{path}[{len(a)}]: recorded nothing, replayed {_short(b[len(a)])}"
        return None
    if a == b and isinstance(a, bool) == isinstance(b, bool):
        return None
    return f"{path or 'the event'}{f' ({where})' if where else ''}: recorded {_short(a)}, replayed {_short(b)}"


def first_difference(recorded: list[dict], replayed: list[dict]) -> str | None:
    """The first recorded event whose texts or scores the replay does not reproduce, in one line."""
    rec, rep = comparable(recorded), comparable(replayed)
    for k, (n, ev) in enumerate(rec):
        if k >= len(rep):
            return f"event {n} ('{ev['type']}') was not reproduced: the replay ended before it"
        other = rep[k][1]
        if other["type"] != ev["type"]:
            return f"event {n} ('{ev['type']}') was not reproduced: the replay wrote a '{other['type']}' event"
        d = _first_diff(ev, other, "")
        if d:
            return f"event {n} ('{ev['type']}') differs at {d}"
    if len(rep) > len(rec):
        return f"the replay wrote a '{rep[len(rec)][1]['type']}' event after the last recorded one"
    return None

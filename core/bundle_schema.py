"""The types and bounds of every field a bundle or session log may carry; the first field that is off becomes one
clear line. The event types themselves, built from these, are in core/events.py."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 64  # a real bundle nests about 8 deep; this bounds every walk over it


class SchemaError(ValueError):
    """A field of the wrong type or out of range; the message names the field."""


def _what(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, (int, float)):
        return f"{v!r:.40}"
    if isinstance(v, str):
        return f"text ({json.dumps(v[:30])}{'...' if len(v) > 30 else ''})"
    return "a list" if isinstance(v, list) else "an object" if isinstance(v, dict) else type(v).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Spec:
    desc = "?"

    def check(self, v: Any, path: str) -> None:
        if not self.ok(v):
            raise SchemaError(f"{path} must be {self.desc}, not {_what(v)}")

    def ok(self, v: Any) -> bool:
        return True


@dataclass
class Scalar(Spec):
    kind: str  # "str" | "bool" | "count" | "number" | "fraction" | "int" | "real"

    @property
    def desc(self) -> str:  # type: ignore[override]
        return {"str": "text", "bool": "true or false", "count": "a whole number >= 0",
                "number": "a finite number >= 0", "fraction": "a number between 0 and 1",
                "int": "a whole number", "real": "a finite number"}[self.kind]

    def ok(self, v: Any) -> bool:
        if self.kind == "str":
            return isinstance(v, str)
        if self.kind == "bool":
            return isinstance(v, bool)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if self.kind in ("count", "int"):
            return isinstance(v, int) and (self.kind == "int" or v >= 0)
        if not math.isfinite(v):
            return False
        return self.kind == "real" or (v >= 0 and (self.kind == "number" or v <= 1))


@dataclass
class Opt(Spec):
    inner: Spec

    @property
    def desc(self) -> str:  # type: ignore[override]
        return f"{self.inner.desc} or null"

    def check(self, v: Any, path: str) -> None:
        if v is not None:
            self.inner.check(v, path)


@dataclass
class OneOf(Spec):
    values: tuple[str, ...]

    @property
    def desc(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.values)

    def ok(self, v: Any) -> bool:
        return isinstance(v, str) and v in self.values


@dataclass
class ListOf(Spec):
    item: Spec
    length: int | None = None

    @property
    def desc(self) -> str:  # type: ignore[override]
        return f"a list of {self.length} items" if self.length else "a list"

    def check(self, v: Any, path: str) -> None:
        if not isinstance(v, list) or (self.length is not None and len(v) != self.length):
            raise SchemaError(f"{path} must be {self.desc}, not {_what(v)}")
        for i, x in enumerate(v):
            self.item.check(x, f"{path}[{i}]")


@dataclass
class MapOf(Spec):
    value: Spec
    desc = "an object"

    def check(self, v: Any, path: str) -> None:
        if not isinstance(v, dict):
            raise SchemaError(f"{path} must be an object, not {_what(v)}")
        for k, x in v.items():
            self.value.check(x, _join(path, str(k)[:40]))


@dataclass
class Record(Spec):
    required: dict[str, Spec]
    optional: dict[str, Spec] = field(default_factory=dict)
    extra: bool = True  # False: the dataclass it becomes takes no other fields
    desc = "an object"

    def check(self, v: Any, path: str) -> None:
        if not isinstance(v, dict):
            raise SchemaError(f"{path} must be an object, not {_what(v)}")
        for k, spec in self.required.items():
            if k not in v:
                raise SchemaError(f"{path or 'it'} has no '{k}'")
            spec.check(v[k], _join(path, k))
        for k, spec in self.optional.items():
            if k in v:
                spec.check(v[k], _join(path, k))
        if not self.extra:
            odd = [k for k in v if k not in self.required and k not in self.optional]
            if odd:
                raise SchemaError(f"{path or 'it'} has an unknown field '{str(odd[0])[:40]}'")


STR, BOOL, COUNT, NUM, FRAC, INT, REAL = (Scalar(k) for k in ("str", "bool", "count", "number", "fraction",
                                                              "int", "real"))
OSTR = Opt(STR)
STRS = ListOf(STR)

SPEND = Record({}, {k: COUNT for k in ("calls", "cached", "failed", "input_tokens", "output_tokens")}
               | {"cost_usd": NUM, "saved_usd": NUM}, extra=False)
ROW = Record({"id": STR, "gold": STR, "raw_output": STR, "parsed": OSTR, "correct": BOOL},
             {"input": STR, "input_tokens": COUNT, "output_tokens": COUNT, "cost_usd": NUM, "cached": BOOL,
              "error": OSTR, "key": STR, "ambiguous": BOOL, "finish_reason": STR}, extra=False)
REPORT = Record({"prompt": STR, "rows": ListOf(ROW)}, {"labels": STRS, "cancelled": BOOL, "fatal": OSTR})
CALL = Record({"template": STR, "messages": ListOf(STRS), "reply": STR},
              {"key": STR, "error": OSTR, "input_tokens": COUNT, "output_tokens": COUNT, "cost_usd": NUM,
               "cached": BOOL, "finish_reason": STR}, extra=False)
GRADIENT = Record({"id": STR, "text": STR, "failure_ids": STRS, "parent": STR},
                  {"flagged": BOOL, "call": Opt(CALL), "feedback": MapOf(STR)}, extra=False)
CANDIDATE = Record({"id": STR, "prompt": STR, "parent": STR, "origin": STR},
                   {"gradient_id": OSTR, "source_id": OSTR, "flagged": BOOL, "call": Opt(CALL),
                    "score": Opt(REAL), "pulls": COUNT, "flags": STRS, "leaks": STRS}, extra=False)
BANDIT = Record({}, {"algorithm": STR, "spent": COUNT, "budget": COUNT, "ranking": STRS, "keys": STRS,
                     "beam_scores": ListOf(Record({}, {"prompt": STR, "score": Opt(REAL), "pulls": COUNT}))})
PROPOSAL = Record({}, {"gradients": ListOf(GRADIENT), "candidates": ListOf(CANDIDATE), "calls": ListOf(CALL),
                       "bandit": Opt(BANDIT), "note": OSTR}, extra=False)
GATE_RESULT = Record({"policy": STR, "old_accuracy": FRAC, "new_accuracy": FRAC, "old_ci": ListOf(FRAC, 2),
                      "new_ci": ListOf(FRAC, 2), "n": COUNT, "p_value": FRAC},
                     {"fixed": STRS, "broke": STRS, "passed": BOOL, "reason": STR, "questions_used": COUNT,
                      "test": STR, "e_value": Opt(NUM), "looks": ListOf(COUNT), "decided": BOOL}, extra=False)
TASK = Record({}, {"name": STR, "file": STR, "seed": INT, "val_size": COUNT, "train_size": COUNT,
                   "test_size": COUNT, "input_cols": STRS, "label_col": STR, "id_col": OSTR, "choices_col": OSTR,
                   "labels": Opt(STRS), "split_version": COUNT, "header": Opt(BOOL),
                   "option_cols": Opt(STRS), "label_threshold": Opt(REAL)})
CONFIG = Record({"task": TASK}, {
    "method": STR, "preset": STR, "forward": STR, "backward": STR, "forward_base_url": OSTR,
    "backward_base_url": OSTR, "seed_prompt": STR, "seed": INT, "policy": STR, "alpha": FRAC, "patience": COUNT,
    "budget_usd": Opt(NUM), "budget_calls": Opt(COUNT), "val_limit": Opt(COUNT), "forward_max_tokens": COUNT,
    "params": MapOf(Spec()), "templates": MapOf(MapOf(STR)), "title": STR, "template_version": COUNT, "preset_version": COUNT, "validate_ahead": Opt(BOOL),
    "gate_batch": COUNT, "gate_cap": COUNT, "prices": MapOf(ListOf(NUM, 2))})

SCORE = Record({"name": STR, "accuracy": Opt(FRAC)}, {"version": Opt(COUNT), "correct": COUNT, "n": COUNT,
                                                     "errors": COUNT})
LOOK = Record({"split": STR, "versions": ListOf(COUNT)}, {"baselines": STRS, "n": COUNT, "scores": ListOf(SCORE),
                                                         "cancelled": BOOL})  # a scoring on test / confirmation
RESPONSE = Record({"text": STR}, {"input_tokens": COUNT, "output_tokens": COUNT, "cost_usd": NUM, "model": STR, "finish_reason": STR})


def check_config(cfg: dict, preset_fields: dict[str, Any] | None) -> None:
    """Session settings by type; `params` against the preset's own field types when the preset is known."""
    CONFIG.check(cfg, "")
    for k, v in (cfg.get("params") or {}).items():
        if preset_fields is None or k not in preset_fields:
            continue  # unknown settings are refused by the session's own check
        default = preset_fields[k]
        spec = (BOOL if isinstance(default, bool) else COUNT if isinstance(default, int) else
                NUM if isinstance(default, float) else STR if isinstance(default, str) else
                STRS if isinstance(default, list) else Spec())
        spec.check(v, f"params.{k}")


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise SchemaError(f"the number {text[:30]} is too large to be finite")
    return x


def _no_constant(name: str) -> None:
    raise SchemaError(f"it holds {name}, which is not a number a bundle may contain")


def parse_json(text: str) -> Any:
    """json.loads without NaN/Infinity or overflowing numbers, and with nesting bounded by MAX_DEPTH."""
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise SchemaError(f"it is nested deeper than {MAX_DEPTH} levels") from None
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > MAX_DEPTH:
                raise SchemaError(f"it is nested deeper than {MAX_DEPTH} levels")
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return value

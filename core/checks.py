"""Value checks shared by the CLI and SessionConfig.validate: a bad value is one clear line, before any call."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any
from urllib.parse import urlsplit

MAX_COUNT = 1_000_000  # no count setting needs more; a larger one is a typo (or an attack on memory)


class CheckError(ValueError):
    """A value that is out of range or of the wrong type; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed numbers for a setting: `low`..`high`, `low` excluded when `open_low`."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'greater than' if self.open_low else 'at least'} {_num(self.low)}")
        if self.high is not None:
            parts.append(f"{'less than' if self.open_high else 'at most'} {_num(self.high)}")
        return " and ".join(parts) or "any number"

    def holds(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.open_low else x < self.low):
            return False
        if self.high is not None and (x >= self.high if self.open_high else x > self.high):
            return False
        return True


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


COUNT = Range(1, MAX_COUNT)  # a whole number of things, at least one
COUNT0 = Range(0, MAX_COUNT)  # zero allowed (switches a feature off)
POSITIVE = Range(0, None, open_low=True)
BUDGET = Range(0, None)  # zero is allowed: a run that may only use cached answers
PROBABILITY = Range(0, 1, open_low=True, open_high=True)
TOKENS = Range(1, 1_000_000)

# Engine setting -> allowed range (ProtegiConfig and TextGradConfig fields; types come from the dataclasses).
SETTING_RANGES: dict[str, Range] = {
    "beam": COUNT, "minibatch": COUNT, "n_groups": COUNT, "errors_per_group": COUNT,
    "reasons_per_group": COUNT, "edits_per_reason": COUNT, "paraphrases": COUNT0, "max_successors": COUNT,
    "bandit_budget": COUNT, "samples_per_eval": COUNT, "arms_per_round": COUNT, "ucb_c": Range(0, 1000),
    "max_tokens": TOKENS, "batch_size": COUNT, "memory": COUNT0, "question_chars": COUNT,
}


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else repr(value[:60])


def check_number(name: str, value: Any, rng: Range, *, whole: bool, optional: bool = False) -> Any:
    """`value` as an int (whole) or float that lies in `rng`; None passes when `optional`."""
    if value is None and optional:
        return None
    kind = "a whole number" if whole else "a number"
    ok_type = isinstance(value, int) if whole else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not whole and not math.isfinite(value)):
        raise CheckError(f"{name} must be {kind} {rng.describe()}, got {_show(value)}.")
    if not rng.holds(value):
        raise CheckError(f"{name} must be {rng.describe()}, got {value!r}.")
    return value


def check_text(name: str, value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise CheckError(f"{name} is empty: give some text.")
    return value


def check_base_url(url: str) -> str:
    """An http(s) URL with a host and a port in 1..65535 (if one is given)."""
    shown = url[:80]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CheckError(f"Base URL '{shown}' is not a valid URL (a port must be a number from 1 to 65535).") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise CheckError(f"Base URL must start with http:// or https:// (got '{shown}').")
    if not parts.hostname:
        raise CheckError(f"Base URL '{shown}' has no host name, e.g. http://127.0.0.1:8088/v1.")
    if port is not None and not 1 <= port <= 65535:
        raise CheckError(f"Base URL '{shown}' has port {port}; a port is a number from 1 to 65535.")
    return url


_TYPE_NAMES: dict[str, type] = {"int": int, "float": float, "str": str, "list[str]": list}


def setting_types(cls: type) -> dict[str, type | None]:
    """Field name -> int | float | str | list for an engine config dataclass (read from the annotation text,
    never eval'd: a bundle's import must not run the interpreter on anything)."""
    out: dict[str, type | None] = {}
    for f in dataclasses.fields(cls):
        t = f.type
        if isinstance(t, str):
            t = _TYPE_NAMES.get(t.replace(" ", ""))
        out[f.name] = list if typing.get_origin(t) is list else t
    return out


def parse_setting(cls: type, key: str, text: str) -> Any:
    """A `--set key=text` value typed by the dataclass field of `cls` (unknown keys are returned as text)."""
    kind = setting_types(cls).get(key)
    text = text.strip()
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise CheckError(f"--set {key} must be a whole number, got {text[:60]!r}.") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise CheckError(f"--set {key} must be a number, got {text[:60]!r}.") from None
    if kind is list:
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise CheckError(f"--set {key} must be a JSON list of strings, e.g. '[\"Be brief.\"]'.") from None
        return [text] if text else []
    return text


def setting_choices() -> dict[str, tuple[str, ...]]:
    """Text settings that take one of a few names."""
    from .bandits import ALGORITHMS

    return {"bandit": (*ALGORITHMS, "none")}


def check_settings(cls: type, params: dict) -> None:
    """Every override in `params` (known fields of `cls`) is of the field's type and in its range."""
    types, allowed = setting_types(cls), setting_choices()
    for key, value in params.items():
        kind = types.get(key)
        name = f"Setting {key}"
        if kind is int:
            check_number(name, value, SETTING_RANGES.get(key, COUNT0), whole=True)
        elif kind is float:
            check_number(name, value, SETTING_RANGES.get(key, Range()), whole=False)
        elif kind is list:
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise CheckError(f"{name} must be a list of strings, got {_show(value)}.")
        elif kind is str:
            if not isinstance(value, str):
                raise CheckError(f"{name} must be text, got {_show(value)}.")
            if key in allowed and value not in allowed[key]:
                raise CheckError(f"{name} must be one of: {', '.join(allowed[key])} (got {_show(value)}).")
            check_text(name, value)


def check_session_values(cfg: Any) -> None:
    """The numbers and texts of a SessionConfig (duck-typed), as the CLI checks its flags."""
    check_text("The seed prompt", cfg.seed_prompt)
    check_number("seed", cfg.seed, Range(), whole=True)
    check_number("alpha", cfg.alpha, PROBABILITY, whole=False)
    check_number("patience", cfg.patience, COUNT, whole=True)
    check_number("budget_usd", cfg.budget_usd, BUDGET, whole=False, optional=True)
    check_number("budget_calls", cfg.budget_calls, BUDGET, whole=True, optional=True)
    check_number("val_limit", cfg.val_limit, COUNT, whole=True, optional=True)
    check_number("forward_max_tokens", cfg.forward_max_tokens, TOKENS, whole=True)
    for name in ("forward", "backward"):
        check_text(f"The {name} model", getattr(cfg, name))
    for name in ("forward_base_url", "backward_base_url"):
        url = getattr(cfg, name)
        if url is not None and not isinstance(url, str):
            raise CheckError(f"{name} must be text, got {_show(url)}.")
    for name in ("params", "templates", "task"):
        if not isinstance(getattr(cfg, name), dict):
            raise CheckError(f"The session's {name} must be a mapping, got {_show(getattr(cfg, name))}.")
    for key, rng in (("val_size", COUNT), ("test_size", COUNT0), ("train_size", COUNT0)):
        check_number(f"The task's {key}", cfg.task.get(key), rng, whole=True, optional=True)
    check_number("The task's seed", cfg.task.get("seed"), Range(), whole=True, optional=True)

"""`pgs evaluate --session ID`: a session's versions on a split; test needs --reveal-test, and test and
confirmation scores are recorded in the session's log."""

from __future__ import annotations

import json


def _version_numbers(text: str | None, n_versions: int) -> list[int]:
    from .cli import ConfigError

    if not text:
        return sorted({0, n_versions - 1})
    if text.strip().lower() == "all":
        return list(range(n_versions))
    try:
        numbers = [int(x.strip().lstrip("vV")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--versions takes comma-separated version numbers or 'all', got {text[:60]!r}.") from None
    if not numbers:
        raise ConfigError("--versions names no version.")
    return list(dict.fromkeys(numbers))


def cmd_evaluate_session(a) -> int:
    """Score versions of a session on a.split with the session's task and forward model."""
    from .cli import ConfigError
    from .cli_optimize import _models, _phase_bar, _root
    from .session import Session, SessionError
    from .testlock import SEALED_MESSAGE, SEALED_SPLIT, score_split, version_entries

    if a.split == SEALED_SPLIT and not a.reveal_test:
        raise ConfigError(f"{SEALED_MESSAGE}; pass --reveal-test to score on it.")
    if a.task or a.model:
        raise ConfigError("--session scores with the session's own task and forward model; drop --task and --model.")
    try:
        s = Session.open(a.session, root=_root(a))
    except SessionError as exc:
        raise ConfigError(str(exc)) from None
    with s:
        if not s.versions:
            raise ConfigError(f"Session {s.id} has no prompt versions yet: score the seed prompt first.")
        try:
            entries = version_entries(s, _version_numbers(a.versions, len(s.versions)))
            s.models = _models(s.config, a)
            before = len(s.events)
            reports = score_split(s, entries, a.split, limit=a.limit, reveal=a.reveal_test,
                                  on_progress=_phase_bar(a.quiet))
        except SessionError as exc:
            raise ConfigError(str(exc)) from None
        rows = []
        for name, rep in reports.items():
            sm = rep.summary()
            rows.append({"version": name, **{k: sm[k] for k in ("accuracy", "ci_low", "ci_high", "n", "errors",
                                                                  "calls", "cached", "cost_usd")}})
            if not a.json:
                print(f"{name}: {a.split} accuracy {sm['accuracy']:.3f} (95% CI {sm['ci_low']:.3f}-{sm['ci_high']:.3f})"
                      f"  n={sm['n']}  errors={sm['errors']}  calls={sm['calls']}  cached={sm['cached']}"
                      f"  cost=${sm['cost_usd']:.4f}")
        recorded = s.events[-1]["type"] if len(s.events) > before else None
        if a.json:
            print(json.dumps({"session": s.id, "split": a.split, "recorded": recorded, "results": rows}))
        elif recorded:
            print(f"recorded '{recorded}' in session {s.id}"
                  + ("; steps decided from now on are marked as chosen after looking at test" if a.split == SEALED_SPLIT
                     else ""))
    return 0

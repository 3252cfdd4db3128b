"""Provider settings that survive a reload and a new tab: base URLs, chosen models, timeouts. Never a key.

One JSON file beside the sessions folder (`<data>/settings.json`; PGS_SETTINGS_FILE moves it), written
atomically (a temporary file, then a rename), so a crash or a full disk leaves the old file whole.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import paths

# Values that look like an API key are never written, whatever field they were typed into.
_KEY_LIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|[A-Za-z0-9_\-]{40,})")
MAX_TIMEOUT_S = 86_400.0


class SettingsError(OSError):
    """The settings file could not be written; the message is one line for the person."""


@dataclass
class ProviderSettings:
    """What a person chose for the providers (no keys): kept for the next visit."""

    forward_spec: str = ""
    backward_spec: str = ""
    forward_url: str = ""
    backward_url: str = ""
    probe_urls: list[str] = field(default_factory=list)  # servers probed in Settings, probed again on load
    timeout_s: float = 0.0  # per call; 0: chosen for the server
    max_retries: int = 4
    concurrency: int = 8
    stream: bool = True


def settings_path() -> Path:
    """PGS_SETTINGS_FILE, else settings.json beside the sessions folder (the data folder)."""
    value = os.environ.get("PGS_SETTINGS_FILE")
    return Path(value).expanduser() if value else paths.sessions_dir().parent / "settings.json"


def _clean(name: str, value: object, default: object) -> object:
    """The value if it has the field's type and bounds, else the default (a hand-edited file never breaks the app)."""
    if isinstance(default, bool):
        return value if isinstance(value, bool) else default
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1024 else default
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_TIMEOUT_S
        return float(value) if ok else default
    if isinstance(default, list):
        return [v for v in value if isinstance(v, str) and not _KEY_LIKE.search(v)][:20] \
            if isinstance(value, list) else default
    return value if isinstance(value, str) and len(value) < 2000 and not _KEY_LIKE.search(value) else default


def load(path: Path | None = None) -> ProviderSettings:
    """The saved settings; defaults when there is no file or it does not read."""
    path = path or settings_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ProviderSettings()
    if not isinstance(raw, dict):
        return ProviderSettings()
    base = ProviderSettings()
    return ProviderSettings(**{f.name: _clean(f.name, raw.get(f.name, getattr(base, f.name)), getattr(base, f.name))
                               for f in fields(ProviderSettings)})


def save(settings: ProviderSettings, path: Path | None = None, secrets: list[str] | None = None) -> Path:
    """Write the settings atomically; a field holding a key (or anything shaped like one) is left empty."""
    path = path or settings_path()
    base = ProviderSettings()
    data = {}
    for f in fields(ProviderSettings):
        value = _clean(f.name, getattr(settings, f.name), getattr(base, f.name))
        text = json.dumps(value)
        if any(s and len(s) >= 4 and s in text for s in secrets or []):
            value = getattr(base, f.name)
        data[f.name] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SettingsError(f"Cannot save the settings to {path}: {exc.strerror or exc}") from None
    return path


def as_dict(settings: ProviderSettings) -> dict:
    return asdict(settings)

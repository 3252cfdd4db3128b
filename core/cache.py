"""The LLM response cache: diskcache on disk, JSON values only (never pickle).

Key = SHA-256 of the canonical JSON of everything that shapes an answer: provider, base URL,
model, messages, temperature, max tokens, stop and sample index. Keys (API keys) never enter it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterable

import diskcache

from . import paths
from .llm import Completion, ModelSpec, Request, anthropic_sends_temperature


class CacheError(RuntimeError):
    """The cache directory cannot be used (not writable, corrupt)."""


def cache_key(spec: ModelSpec, req: Request) -> str:
    payload = {"provider": spec.provider, "base_url": spec.base_url or "", "model": spec.model,
               **req.key_fields()}
    if spec.provider == "anthropic" and not anthropic_sends_temperature():
        payload.pop("temperature")  # the SDK here takes none: key on what is sent (OpenAI keys are unchanged)
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class JSONOnlyDisk(diskcache.Disk):
    """Stores keys as text and values as JSON text; refuses to unpickle anything it finds."""

    def put(self, key: Any) -> tuple[Any, bool]:
        if not isinstance(key, str):
            raise TypeError("cache keys are strings")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise CacheError("refusing to unpickle a cache key")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        return super().store(json.dumps(value, ensure_ascii=False), False, key=key)

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise CacheError("refusing to unpickle a cache value")
        data = super().fetch(mode, filename, value, read)
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        return json.loads(data)


class ResponseCache:
    """Completed, successful responses by cache key. Errors are never stored."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else paths.cache_dir()
        self.write_error: str | None = None  # set at the first answer that could not be stored
        self.on_write_error: Callable[[str], None] | None = None  # told once, with a one-line message
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            probe = self.directory / ".write-test"
            probe.write_text("ok")
            probe.unlink()
            self._cache = diskcache.Cache(str(self.directory), disk=JSONOnlyDisk,
                                          size_limit=2**32, eviction_policy="least-recently-stored")
        except (OSError, Exception) as exc:  # noqa: BLE001
            if isinstance(exc, CacheError):
                raise
            raise CacheError(f"The cache folder {self.directory} cannot be used ({type(exc).__name__}: "
                             f"{getattr(exc, 'strerror', None) or exc}). Choose another with PGS_CACHE_DIR "
                             f"or run without the cache.") from None

    def get(self, key: str) -> Completion | None:
        value = self.raw(key)
        if value is None:
            return None
        c = Completion.from_json(value)
        c.saved_usd, c.cost_usd, c.cached, c.latency_s, c.key = c.cost_usd, 0.0, True, 0.0, key
        return c

    def put(self, key: str, completion: Completion) -> bool:
        """Store a successful answer; False (and one warning) when the disk refuses it, never an exception."""
        if completion.error is not None:
            return False
        return self._set(key, self.entry(completion))

    def _set(self, key: str, value: dict) -> bool:
        try:
            self._cache.set(key, value)
            return True
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            self._write_failed(exc)
            return False

    def _write_failed(self, exc: BaseException) -> None:
        if self.write_error is not None:
            return
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self.write_error = (f"the response cache in {self.directory} cannot be written ({why}); answers are not "
                            f"being saved, so repeating these calls will be paid again. Free space or choose "
                            f"another folder with PGS_CACHE_DIR.")
        if self.on_write_error is not None:
            self.on_write_error(self.write_error)

    @staticmethod
    def entry(c: Completion) -> dict:
        return {"text": c.text, "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
                "cost_usd": c.cost_usd or c.saved_usd, "model": c.model, "finish_reason": c.finish_reason}

    def raw(self, key: str) -> dict | None:
        """The stored JSON entry, or None; an entry that is not JSON (a planted pickle, a torn value file) is a miss."""
        try:
            value = self._cache.get(key)
        except (CacheError, ValueError, OSError, sqlite3.Error):
            return None
        return value if isinstance(value, dict) else None

    def put_raw(self, key: str, value: dict) -> bool:
        return self._set(key, value)

    def export(self, keys: Iterable[str]) -> dict[str, dict]:
        out = {}
        for k in keys:
            v = self.raw(k)
            if v is not None:
                out[k] = v
        return out

    def __len__(self) -> int:
        return len(self._cache)

    def volume(self) -> int:
        return int(self._cache.volume())

    def clear(self) -> int:
        return int(self._cache.clear())

    def close(self) -> None:
        self._cache.close()

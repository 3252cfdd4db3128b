"""A session's append-only `events.jsonl`: one JSON line per event, flushed and fsynced before append returns.

One writer: a process holds the folder's `.lock` (flock), and inside the process every append takes a
threading lock, so lines from two threads never interleave. A line torn by a crash is cut off on the next
open for writing; a full or read-only disk cuts the part it wrote off again, so the file stays whole events.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from .config import SessionError, SessionLocked
from .events import CREATED

EVENTS_FILE = "events.jsonl"


class EventLog:
    """The events file of the session `sid` in `folder`; `acquire` makes it writable."""

    def __init__(self, folder: Path, sid: str):
        self.dir, self.id = Path(folder), sid
        self.path = self.dir / EVENTS_FILE
        self._out = None  # the append handle while this process holds the lock
        self._lock_file = None
        self._write_lock = threading.Lock()

    @property
    def writable(self) -> bool:
        return self._out is not None

    def acquire(self) -> None:
        """Take the folder's process lock (SessionLocked if another process has it) and open for appending."""
        try:
            self.dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            f = open(self.dir / ".lock", "a+")
        except OSError as exc:
            raise SessionError(f"Cannot write the session folder {self.dir} ({type(exc).__name__}: "
                               f"{exc.strerror or exc}). Choose another with PGS_SESSIONS_DIR or --sessions-dir.") from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            who = f.read().strip() or "another process"
            f.close()
            raise SessionLocked(f"Session {self.id} is open for writing in another process ({who}). "
                                f"Close it there, or open this one read-only.") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            self._out = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            f.close()
            raise SessionError(f"Cannot write the session folder {self.dir} ({exc.strerror or exc}). Free space, "
                               f"or choose another with PGS_SESSIONS_DIR or --sessions-dir.") from None
        self._lock_file = f

    def close(self) -> None:
        with self._write_lock:
            for f in (self._out, self._lock_file):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
            self._out = self._lock_file = None

    def append(self, event: dict, check: Callable[[dict], None] | None = None) -> dict:
        """Write one event (stamped with `ts` after its type) as a whole line and fsync; return it as read back.
        `check` sees that read-back form first and may refuse it (nothing is written then)."""
        if self._out is None:
            raise SessionError("This session is open read-only.")
        event = {"type": event["type"], "ts": round(time.time(), 3), **{k: v for k, v in event.items()
                                                                         if k not in ("type", "ts")}}
        line = json.dumps(event, ensure_ascii=False) + "\n"
        back = json.loads(line)
        if check is not None:
            check(back)
        with self._write_lock:
            if self._out is None:
                raise SessionError("This session is open read-only.")
            self._write(line.encode("utf-8"))
        return back

    def _write(self, line: bytes) -> None:
        fd = self._out.fileno()
        start = os.fstat(fd).st_size
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise SessionError(f"Cannot write session {self.id} ({exc.strerror or exc}); the session is kept as it "
                               f"was before this event. Free space, then `pgs resume {self.id}`.") from None

    def read(self, *, readonly: bool, warnings: list[str]) -> list[dict]:
        """Every event in the file. A torn last line is ignored with a warning (and cut off when writable); a
        corrupt line elsewhere refuses the file, except that a reader gets the events before it."""
        lines = self.path.read_bytes().split(b"\n")
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line.decode("utf-8"))
                if not isinstance(ev, dict) or "type" not in ev:
                    raise ValueError("not an event")
            except (ValueError, UnicodeDecodeError):
                if n >= len(lines) - 1:  # a torn last line from a crash: the call in flight is lost
                    warnings.append(f"Ignored an incomplete last line in events.jsonl (line {n}).")
                    if not readonly and self.writable:
                        with open(self.path, "r+b") as f:
                            f.truncate(sum(len(x) + 1 for x in lines[: n - 1]))
                    break
                if readonly and out:  # a reader may still look at (and export) what came before
                    warnings.append(f"events.jsonl line {n} is corrupt: showing the {len(out)} events before "
                                    f"it, read-only.")
                    break
                raise SessionError(f"Session {self.id}: events.jsonl line {n} is corrupt; the session cannot be "
                                   f"resumed safely. Restore the file or export what loads read-only.") from None
            out.append(ev)
        if not out or out[0].get("type") != CREATED:
            raise SessionError(f"Session {self.id}: events.jsonl does not start with a '{CREATED}' event.")
        return out

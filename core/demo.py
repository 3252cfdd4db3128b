"""The shipped demo: a session recorded from a real (small, local) model, as a bundle inside the package.

The bundle is an ordinary export (`pgs export <id>`) with one extra top-level field, `recording`, naming the
model, the machine and the date; it is not covered by the content hashes, so it is shown as text only.
Opening it imports it as a session whose servers are never confirmed: nothing can call a model from it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from .bundle import import_bundle
from .cache import ResponseCache
from .events import CREATED

DEMO_BUNDLE = Path(__file__).resolve().parent / "data" / "demo" / "demo-textgrad-pubmedqa.json"
READONLY_REASON = "the demo is a recording: every step can be browsed, none can be run or changed."


@dataclass(frozen=True)
class Recording:
    """What the demo bundle says about itself: the session it was exported from, its model and date."""
    session: str
    model: str
    recorded: str  # YYYY-MM-DD
    what: str
    events: int

    def line(self) -> str:
        """One sentence for a caption: the model, the date, and what it is."""
        return f"Demo recorded {self.recorded} with {self.model} — {self.what}"


@functools.lru_cache(maxsize=4)
def _read(path: str, stamp: tuple[int, int]) -> Recording:
    b = json.loads(Path(path).read_text(encoding="utf-8"))
    rec = b.get("recording") if isinstance(b.get("recording"), dict) else {}
    return Recording(session=str(b.get("session", "")), model=str(rec.get("model", "an unnamed model")),
                     recorded=str(rec.get("recorded", "an unknown date")), what=str(rec.get("what", "")),
                     events=len(b.get("events", [])))


def recording(path: Path | None = None) -> Recording:
    """The demo bundle's recording notes (read once per file version)."""
    path = path or DEMO_BUNDLE
    st = path.stat()
    return _read(str(path), (st.st_mtime_ns, st.st_size))


def imported_from(events: list[dict]) -> str | None:
    """The session id a bundle-imported session came from (its creation event's import marker), else None."""
    first = events[0] if events else {}
    marker = first.get("imported") if first.get("type") == CREATED else None
    return marker.get("from_session") if isinstance(marker, dict) else None


def is_demo(events: list[dict]) -> bool:
    """A session imported from the shipped demo bundle."""
    try:
        return imported_from(events) == recording().session
    except (OSError, ValueError):
        return False


def _untouched_copy(root: Path) -> str | None:
    """An earlier import of the demo under root with no event added since, to open again instead of a copy."""
    if not root.is_dir():
        return None
    demo = recording()
    for d in sorted(root.iterdir()):
        try:
            with open(d / "events.jsonl", encoding="utf-8") as f:
                lines = [json.loads(x) for x in f if x.strip()]
        except (OSError, ValueError):
            continue
        if imported_from(lines) == demo.session and len(lines) == demo.events:
            return d.name
    return None


def open_demo(root: Path, cache: ResponseCache | None) -> str:
    """The id of the demo session under root: an untouched earlier import, else a fresh import (BundleError)."""
    return _untouched_copy(Path(root)) or import_bundle(DEMO_BUNDLE.read_bytes(), root=root, cache=cache)


def stamp(bundle: bytes, *, model: str, recorded: str, what: str) -> bytes:
    """An exported bundle with its `recording` notes added (how the shipped demo was made from `pgs export`)."""
    b = json.loads(bundle.decode("utf-8"))
    b["recording"] = {"model": model, "recorded": recorded, "what": what}
    return json.dumps(b, ensure_ascii=False).encode("utf-8")

"""Full and read-only disks: one line and a non-zero exit, the session intact and resumable, cache failures told once."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from core.cache import ResponseCache
from core.llm import Request
from core.runner import Runner
from core.session import Models, Session, SessionConfig, SessionError
from tests.conftest import pgs_cmd
from tests.fake_model import FakeModel
from tests.test_bad_input import assert_one_line_exit_2, pgs


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 200 KB tmpfs, or None where mounting is not allowed (tests then limit file size with RLIMIT_FSIZE)."""
    d = tmp_path / "small"
    d.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=200k", "tmpfs", str(d))
    yield d if mounted else None
    if mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fsize_limit(nbytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def run_limited(args: list[str], limit: int | None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(pgs_cmd() + args, capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          preexec_fn=fsize_limit(limit) if limit else None)


def quick_session(root: Path) -> str:
    out = pgs("optimize", "--task", "pubmedqa", "--forward", "fake:x", "--val-limit", "3", "--steps", "1",
              "--quiet", "--json", "--sessions-dir", str(root))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["session"]


def assert_whole_lines(log: Path) -> list[dict]:
    raw = log.read_bytes()
    assert raw.endswith(b"\n"), raw[-200:]
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


def test_export_to_a_missing_or_read_only_folder_is_one_line(pgs_env, tmp_path):
    sid = quick_session(pgs_env / "sessions")
    missing = tmp_path / "nonexistent" / "x.md"
    out = pgs("export", sid, "--format", "markdown", "-o", str(missing))
    assert_one_line_exit_2(out, f"Cannot write {missing}", "No such file or directory")
    assert not missing.parent.exists()
    ro = tmp_path / "ro"
    ro.mkdir()
    assert _mount("--bind", str(ro), str(ro)) and _mount("-o", "remount,bind,ro", str(ro))
    try:
        out = pgs("export", sid, "-o", str(ro / "b.json"))
        assert_one_line_exit_2(out, f"Cannot write {ro / 'b.json'}", "Read-only file system")
        assert list(ro.iterdir()) == []  # no temporary file left behind
        sess_ro = tmp_path / "sessions-ro"
        assert _mount("--bind", str(pgs_env / "sessions"), str(sess_ro.mkdir() or sess_ro))
        assert _mount("-o", "remount,bind,ro", str(sess_ro))
        try:
            out = pgs("resume", sid, "--steps", "1", "--sessions-dir", str(sess_ro), "--quiet")
            assert_one_line_exit_2(out, "Cannot write the session folder")
        finally:
            subprocess.run(["umount", "-l", str(sess_ro)], capture_output=True)
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)
    out = pgs("export", sid, "-o", str(tmp_path / "ok.json"))
    assert out.returncode == 0 and json.loads((tmp_path / "ok.json").read_text())["events"]


def test_full_sessions_disk_stops_with_one_line_and_resumes(pgs_env, small_disk):
    root = (small_disk or pgs_env) / "sessions"
    args = ["optimize", "--task", "pubmedqa", "--method", "protegi", "--forward", "fake:x", "--steps", "60",
            "--patience", "60", "--no-cache", "--quiet", "--sessions-dir", str(root)]
    out = run_limited(args, None if small_disk else 200 * 1024)
    assert_one_line_exit_2(out, "Cannot write session", "resume")
    (sid,) = [p.name for p in root.iterdir()]
    events = assert_whole_lines(root / sid / "events.jsonl")  # no torn last line
    assert [e["type"] for e in events][:3] == ["created", "auto", "baseline"]  # the requested run, then step 0
    again = run_limited(["resume", sid, "--quiet", "--sessions-dir", str(root)], None if small_disk else 200 * 1024)
    assert_one_line_exit_2(again, "Cannot write session")  # still full: refused again, nothing damaged
    # nothing damaged: whole lines, the earlier events unchanged; an event that fits in the few bytes freed by
    # cutting back the failed line may be added (how many depends on the sizes of this split's events)
    again_events = assert_whole_lines(root / sid / "events.jsonl")
    assert again_events[: len(events)] == events and len(again_events) <= len(events) + 3
    events = again_events
    if small_disk:
        assert _mount("-o", "remount,size=8m", str(small_disk))
    done = run_limited(["resume", sid, "--steps", "1", "--quiet", "--no-cache", "--sessions-dir", str(root), "--json"], None)
    assert done.returncode == 0, done.stderr[-2000:]
    after = assert_whole_lines(root / sid / "events.jsonl")
    assert after[: len(events)] == events and len(after) > len(events)
    assert Session.open(sid, root=root, readonly=True).warnings == []
    assert json.loads(done.stdout.strip().splitlines()[-1])["session"] == sid


def test_cache_that_cannot_be_written_is_told_once(pgs_env):
    args = ["evaluate", "--task", "medqa", "--model", "fake:x", "--limit", "100", "--quiet", "--json"]
    for kb in (192, 256, 384, 512):  # the smallest file-size limit at which SQLite still opens the cache
        out = run_limited(args, kb * 1024)
        if out.returncode == 0 or "cannot be used" not in out.stderr:
            break
    assert out.returncode == 0, out.stderr[-2000:]
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "cache" in err[0] and "cannot be written" in err[0] and "paid again" in err[0], err
    assert "Traceback" not in out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["n"] == 100  # every answer kept


def test_cache_write_failure_keeps_answers_and_warns_once(tmp_path, monkeypatch):
    cache = ResponseCache(tmp_path / "cache")
    told: list[str] = []
    cache.on_write_error = told.append

    def full(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cache._cache, "set", full)
    fake = FakeModel()
    reqs = [Request.chat("sys", f"question {i} {uuid.uuid4()}", tag="other") for i in range(5)]
    res = Runner(cache=cache).run(fake, reqs)
    assert all(c.error is None and c.text for c in res.completions) and sum(fake.calls.values()) == 5
    assert len(told) == 1 and "cannot be written" in told[0] and cache.write_error == told[0]


def _short_write(real):
    def write(fd, data):
        if len(data) > 40:
            real(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    return write


@pytest.mark.parametrize("fault", ["fsync", "short-write"])
def test_failed_event_write_leaves_the_log_whole(tmp_path, monkeypatch, fault):
    cfg = SessionConfig(task={"name": "pubmedqa"}, method="textgrad", forward="fake:f", backward="fake:b", val_limit=5)
    root = tmp_path / "sessions"
    s = Session.create(cfg, root=root, models=Models(FakeModel(), FakeModel(), Runner()))
    before = assert_whole_lines(s.events_path)
    if fault == "fsync":
        def boom(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "fsync", boom)
    else:
        monkeypatch.setattr(os, "write", _short_write(os.write))
    with pytest.raises(SessionError, match="No space left on device"):
        s.run_baseline()
    monkeypatch.undo()
    s.close()
    assert assert_whole_lines(s.events_path) == before
    s = Session.open(s.id, root=root, models=Models(FakeModel(), FakeModel(), Runner()))
    assert s.warnings == [] and not s.versions
    s.run_baseline()
    assert s.versions and assert_whole_lines(s.events_path)[-1]["type"] in ("baseline", "spend")
    s.close()


def test_full_disk_at_create_leaves_no_half_made_session(pgs_env, small_disk):
    root = (small_disk or pgs_env) / "sessions"
    root.mkdir()
    if small_disk:
        fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk to the last byte
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
    out = run_limited(["optimize", "--task", "pubmedqa", "--forward", "fake:x", "--val-limit", "3", "--quiet",
                       "--sessions-dir", str(root)], None if small_disk else 1)
    assert_one_line_exit_2(out, "Cannot write the session folder")
    assert list(root.iterdir()) == [] and "baseline" not in out.stdout

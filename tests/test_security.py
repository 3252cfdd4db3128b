"""Security: a planted key never reaches disk, logs, exports or error text; the cache is private and
JSON-only; a bundle import can neither run code nor write outside the sessions folder; the app binds
to 127.0.0.1.
"""

from __future__ import annotations

import builtins
import json
import marshal
import os
import pathlib
import pickle
import re
import sqlite3
import stat
import subprocess
import tomllib
from pathlib import Path

import diskcache
import pytest

from core.bundle import BundleError, bundle_bytes, export_bundle, import_bundle, replay_bundle
from core.cache import JSONOnlyDisk, ResponseCache
from core.llm import ClientOptions, Completion, ModelSpec, Request
from core.runner import Runner
from core.session import Models, Session, SessionConfig, SessionError
from tests.conftest import ROOT, pgs_cmd, subprocess_pythonpath
from tests.fake_model import FakeModel, stub_responder
from tests.stub_server import Fault, StubServer

pytestmark = pytest.mark.timeout(240)

KEY = "sk-PLANTED-openai-Hq7Zt2Vw9Xy4Lm8Np3Rs"
AKEY = "sk-PLANTED-anthropic-Jd5Kf1Gh6Bn0Cv2Qw7"
NEEDLES = (KEY, AKEY, KEY[:12], AKEY[:12], "Hq7Zt2Vw9Xy4", "Jd5Kf1Gh6Bn0")


def grep_tree(root: Path) -> list[str]:
    """Files under root containing any needle (bytes, so binary files such as the sqlite cache count too)."""
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            hits += [f"{p}: {n[:16]}..." for n in NEEDLES if n.encode() in data]
    return hits


def assert_no_key(*texts: str) -> None:
    for t in texts:
        for n in NEEDLES:
            assert n not in t, f"key fragment {n[:16]}... found in: {t[max(0, t.find(n) - 200): t.find(n) + 50]}"


# ---------------------------------------------------------------- the planted key, end to end


def test_planted_key_never_written_logged_exported_or_shown(tmp_path):
    sessions, cache = tmp_path / "sessions", tmp_path / "cache"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "ANTHROPIC_API_KEY": AKEY, "PGS_SESSIONS_DIR": str(sessions),
           "PGS_CACHE_DIR": str(cache), "PYTHONPATH": subprocess_pythonpath(fake_provider=False),  # real SDKs only
           "NO_PROXY": "127.0.0.1,localhost", "OPENAI_LOG": "debug", "ANTHROPIC_LOG": "debug"}  # SDK debug logs too
    for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)
    outputs: list[str] = []

    def pgs(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run(pgs_cmd() + list(args), capture_output=True, text=True, timeout=180, env=env)
        outputs.extend([out.stdout, out.stderr])
        return out

    def plan(r):
        # every loss call fails with a 500 whose body echoes the presented key: the error text lands in events
        if "meticulous evaluator" in (r.system_text or ""):
            return Fault.server_error(500, echo_key=True)
        return None

    sids = []
    with StubServer(responder=stub_responder(), faults=plan) as stub:
        for spec, url in (("openai:gpt-4o-mini", stub.base_url), ("anthropic:claude-haiku-4-5", stub.anthropic_base_url)):
            out = pgs("optimize", "--task", "pubmedqa", "--forward", spec, "--base-url", url, "--steps", "1",
                      "--val-limit", "4", "--retries", "0", "--json")
            assert out.returncode == 0, out.stderr[-3000:]
            sids.append(json.loads(out.stdout.strip().splitlines()[-1])["session"])
        presented = {r.headers.get("authorization", "") + r.headers.get("x-api-key", "") for r in stub.recorded()}
        assert any(KEY in h for h in presented) and any(AKEY in h for h in presented)  # the keys were really used
        for sid in sids:  # the echoed keys reached the events (as error text of the loss calls), redacted
            assert "(key: Bearer ***)" in (sessions / sid / "events.jsonl").read_text()
        for sid in sids:
            assert pgs("export", sid, "-o", str(tmp_path / f"{sid}.json")).returncode == 0
            md = pgs("export", sid, "--format", "markdown", "-o", str(tmp_path / f"{sid}.md"))
            assert md.returncode == 0
            rep = pgs("replay", str(tmp_path / f"{sid}.json"))
            # the failed loss calls were never cached, so the replay misses exactly those, with the same outcome
            assert rep.returncode in (0, 1) and "Traceback" not in rep.stderr, rep.stdout + rep.stderr
            assert "accept -> rejected (recorded rejected)" in rep.stdout or "(recorded accepted)" in rep.stdout
        stub.set_faults(lambda r: "401")  # the 401 body echoes the presented key
        for spec, url in (("openai:gpt-4o-mini", stub.base_url), ("anthropic:claude-haiku-4-5", stub.anthropic_base_url)):
            bad = pgs("optimize", "--task", "pubmedqa", "--forward", spec, "--base-url", url, "--steps", "1",
                      "--val-limit", "4", "--no-cache")
            assert bad.returncode == 2 and "rejected the API key" in bad.stderr
            ev = pgs("evaluate", "--task", "pubmedqa", "--model", spec, "--base-url", url, "--limit", "3", "--no-cache")
            assert ev.returncode == 2 and "rejected the API key" in ev.stderr
        assert sum(1 for r in stub.recorded() if r.status == 401) >= 4
    assert_no_key(*outputs)
    assert grep_tree(tmp_path) == []
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_errors_of_in_process_models_are_redacted(tmp_path, monkeypatch):
    """A key typed into Settings (kept in memory, passed as api_key) is redacted from error rows too."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with StubServer(responder=stub_responder(),
                    faults=lambda r: Fault.server_error(503, echo_key=True) if r.index % 2 else None) as stub:
        cfg = SessionConfig(task={"name": "pubmedqa"}, forward="openai:gpt-4o-mini", backward="openai:gpt-4o",
                            forward_base_url=stub.base_url, backward_base_url=stub.base_url, val_limit=4)
        models = Models.from_config(cfg, Runner(cache=ResponseCache(tmp_path / "cache")), keys={"openai": KEY},
                                    options=ClientOptions(timeout_s=5, max_retries=0))
        s = Session.create(cfg, root=tmp_path / "sessions", models=models)
        with pytest.raises(SessionError, match="calls of the baseline failed") as e:
            s.run_baseline()
        assert "***" in str(e.value)
        assert_no_key(str(e.value), repr(e.value))
        s.close()
    assert grep_tree(tmp_path) == []


# ---------------------------------------------------------------- the cache


def test_cache_folder_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        c = ResponseCache(tmp_path / "a" / "cache")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "cache").stat().st_mode) == 0o700
    c.close()


class _Boom:
    """Unpickling this touches a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_cache_holds_json_only_and_refuses_a_planted_pickle(tmp_path):
    d = tmp_path / "cache"
    rc = ResponseCache(d)
    rc.put("a" * 64, Completion(text="short answer", input_tokens=3, output_tokens=2))
    rc.put("b" * 64, Completion(text="long " * 20_000, input_tokens=3, output_tokens=2))  # stored as a file
    rc.close()
    con = sqlite3.connect(d / "cache.db")
    rows = con.execute("SELECT key, raw, mode, filename, value FROM Cache").fetchall()
    assert len(rows) == 2
    for key, raw, mode, filename, value in rows:
        assert raw == 1 and mode != diskcache.core.MODE_PICKLE and isinstance(key, str)
        text = (d / filename).read_text("utf-8") if filename else value
        assert isinstance(json.loads(text), dict)  # JSON text, nothing else
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Boom(marker))
    for key, fname in (("c" * 64, None), ("d" * 64, "ev/il.val")):
        if fname:
            (d / "ev").mkdir()
            (d / fname).write_bytes(evil)
        con.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, size, "
                    "mode, filename, value) VALUES (?, 1, 0, NULL, 0, 0, NULL, ?, ?, ?, ?)",
                    (key, len(evil), diskcache.core.MODE_PICKLE, fname, None if fname else sqlite3.Binary(evil)))
    con.commit()
    con.close()
    assert pickle.loads(evil) is None and marker.exists()  # the payload works when unpickled...
    marker.unlink()
    rc = ResponseCache(d)
    for key in ("c" * 64, "d" * 64):
        assert rc.get(key) is None  # ...but the cache never unpickles it
        assert rc.raw(key) is None
    assert rc.export(["a" * 64, "c" * 64, "d" * 64]).keys() == {"a" * 64}
    assert Runner(cache=rc).lookup(FakeModel(), Request.chat("s", "u")) is None
    with pytest.raises(Exception):
        JSONOnlyDisk(str(d)).fetch(diskcache.core.MODE_PICKLE, None, evil, False)
    rc.close()
    assert not marker.exists()


# ---------------------------------------------------------------- bundles


PAYLOADS = [
    "__import__('os').system('touch PWNED')",
    "{{ self.__init__.__globals__ }} ${7*7} #{7*7} <%= 7*7 %>",
    pickle.dumps(os.getcwd, protocol=0).decode("latin-1"),  # pickle opcodes as text
    "!!python/object/apply:os.system ['touch PWNED']",
    '{"__class__": "subprocess.Popen", "args": ["touch", "PWNED"]}',
]


def _bundle_with_payloads(tmp_path) -> bytes:
    cfg = SessionConfig(task={"name": "pubmedqa"}, forward="fake:f", backward="fake:b", val_limit=4,
                        policy="always", title=PAYLOADS[1])
    cache = ResponseCache(tmp_path / "src-cache")
    fwd, bwd = FakeModel(spec=ModelSpec("fake", "f")), FakeModel(spec=ModelSpec("fake", "b"))  # as the config says
    s = Session.create(cfg, root=tmp_path / "src", models=Models(fwd, bwd, Runner(cache=cache)))
    s.run_baseline()
    for p in PAYLOADS:
        s.start_step()
        s.decide("edit", prompt=p)
        s.validate()
        s.confirm()
    data = bundle_bytes(s, cache)
    s.close()
    return data


def test_bundle_import_and_replay_never_run_code(tmp_path, monkeypatch):
    data = _bundle_with_payloads(tmp_path)
    calls = []

    def trap(name):
        def f(*a, **k):
            calls.append(name)
            raise AssertionError(f"{name} called during import/replay")
        return f

    for mod, names in ((pickle, ("loads", "load", "Unpickler")), (marshal, ("loads",)),
                       (os, ("system", "popen", "execv", "execve", "spawnv")), (subprocess, ("Popen",))):
        for n in names:
            monkeypatch.setattr(mod, n, trap(f"{mod.__name__}.{n}"))
    monkeypatch.setattr(builtins, "eval", trap("eval"))
    monkeypatch.setattr(builtins, "exec", trap("exec"))
    monkeypatch.chdir(tmp_path)
    sid = import_bundle(data, root=tmp_path / "imported", cache=ResponseCache(tmp_path / "cache"))
    r = replay_bundle(data)
    monkeypatch.undo()
    assert calls == [] and r.matches and r.misses == 0
    assert not list(tmp_path.rglob("PWNED"))
    s = Session.open(sid, root=tmp_path / "imported", readonly=True)
    assert [v.prompt for v in s.versions[1:]] == PAYLOADS  # kept as text, byte for byte
    assert s.config.title == PAYLOADS[1]


def _custom_bundle(tmp_path) -> dict:
    rows = "question,answer\n" + "".join(f"Is claim {i} supported?,{'yes' if i % 2 else 'no'}\n" for i in range(12))
    cfg = SessionConfig(task={"input_cols": ["question"], "label_col": "answer", "val_size": 3, "test_size": 2},
                        forward="fake:f", backward="fake:b")
    s = Session.create(cfg, root=tmp_path / "src", models=Models(FakeModel(), FakeModel(), Runner()),
                       data=("mine.csv", rows.encode()))
    b = json.loads(bundle_bytes(s, None))
    s.close()
    return b


def _snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


@pytest.mark.parametrize("sid", ["../../outside", "/tmp/abs-outside", "..", "a/../../b", "..\\..\\win", "ok\x00evil",
                                 ".hidden", "x" * 500])
def test_bundle_session_id_cannot_escape(tmp_path, sid):
    data = json.loads(_bundle_with_payloads(tmp_path))
    data["session"] = sid
    root = tmp_path / "deep" / "root"
    before = _snapshot(tmp_path)
    new = import_bundle(json.dumps(data).encode(), root=root)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}", new)
    added = _snapshot(tmp_path) - before
    assert added and all(Path(p).is_relative_to(root) or root.is_relative_to(p) for p in added), added
    assert not Path("/tmp/abs-outside").exists()


@pytest.mark.parametrize("filename", ["../../evil.csv", "/etc/cron.d/evil.csv", "..\\..\\evil.csv",
                                      "evil.csv\x00.txt", "sub/dir/evil.csv", ".lock", "events.jsonl"])
def test_bundle_data_filename_cannot_escape(tmp_path, filename):
    b = _custom_bundle(tmp_path)
    b["data"]["filename"] = filename
    root = tmp_path / "deep" / "root"
    before = _snapshot(tmp_path)
    for cfg_file in (filename, b["events"][0]["config"]["task"]["file"]):
        b["events"][0]["config"]["task"]["file"] = cfg_file
        try:
            sid = import_bundle(json.dumps(b).encode(), root=root)
        except BundleError:
            continue
        files = sorted(p.name for p in (root / sid).iterdir())
        assert "events.jsonl" in files and all(not n.startswith("..") for n in files)
    added = _snapshot(tmp_path) - before
    assert all(Path(p).is_relative_to(root) or root.is_relative_to(p) for p in added), added


def test_bundle_import_does_not_follow_a_planted_symlink(tmp_path):
    data = json.loads(_bundle_with_payloads(tmp_path))
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / data["session"]).symlink_to(outside)  # live link under the session's own id
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    data2 = dict(data, session="dangling")
    sid = import_bundle(json.dumps(data).encode(), root=root)
    assert sid != data["session"] and list(outside.iterdir()) == []
    try:
        sid2 = import_bundle(json.dumps(data2).encode(), root=root)
        assert sid2 != "dangling"
    except BundleError:
        pass
    assert list(outside.iterdir()) == [] and not (tmp_path / "nowhere").exists()


def test_export_does_not_include_keys_or_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", AKEY)
    cfg = SessionConfig(task={"name": "pubmedqa"}, forward="fake:f", backward="fake:b", val_limit=3)
    cache = ResponseCache(tmp_path / "cache")
    s = Session.create(cfg, root=tmp_path / "s", models=Models(FakeModel(), FakeModel(), Runner(cache=cache)))
    s.run_auto(1)
    b = export_bundle(s, cache)
    s.close()
    text = json.dumps(b)
    assert_no_key(text)
    assert not re.search(r"(?i)api[_-]?key|authorization|bearer", text)
    assert grep_tree(tmp_path) == []


# ---------------------------------------------------------------- the server address


def test_streamlit_binds_loopback_unless_told_otherwise():
    cfg = ROOT / ".streamlit" / "config.toml"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    cmd = re.findall(r"streamlit run [^\n`]*", readme)
    assert cmd, "the README documents how to start the app"
    addr = None
    if cfg.exists():
        addr = tomllib.loads(cfg.read_text(encoding="utf-8")).get("server", {}).get("address")
    flags = [c for c in cmd if "--server.address" in c]
    if addr is None and not flags:
        pytest.skip(".streamlit/config.toml has no [server] address yet and the README's `streamlit run` has no "
                    "--server.address: Streamlit would bind 0.0.0.0 (the app helper owns these files)")
    if addr is not None:
        assert addr in ("127.0.0.1", "localhost"), f"server.address = {addr!r}"
    for c in flags:
        assert re.search(r"--server\.address[= ](127\.0\.0\.1|localhost)\b", c), c

"""Protocol tests: the real openai and anthropic SDKs against local stub servers, through `core`.

Faults are injected per request (429 + Retry-After, 5xx, slow, dropped connections, malformed
bodies, empty content, 401); timing assertions are lower bounds only, so a busy machine passes.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sqlite3
import stat
import threading
import time
import urllib.error
import urllib.request

import pytest

from core.cache import CacheError, JSONOnlyDisk, ResponseCache, cache_key
from core.llm import (PRICES, ClientOptions, Completion, Request, cost_of, make_model, parse_spec, price_for,
                      set_price_overrides)
from core.runner import CANCELLED, BatchResult, CancelToken, Progress, Runner

try:
    from tests.stub_server import OPENAI_PATH, Fault, StubRequest, StubServer
except ImportError:  # tests/ on sys.path (pytest rootdir-less import)
    from stub_server import OPENAI_PATH, Fault, StubRequest, StubServer

pytestmark = pytest.mark.timeout(120)

KEY = "sk-PLANTED-abc123XYZ987-secret"
KEY_PARTS = (KEY, "abc123XYZ987")  # the whole key and its distinctive middle
SYSTEM = "You are a careful assistant. Answer yes or no."
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-6"  # priced by the "claude-sonnet-4" prefix
PROVIDERS = ("openai", "anthropic")


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch):
    """No real keys or base URLs from the environment; no price overrides leak between tests."""
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_LOG",
                "ANTHROPIC_LOG", "PGS_CACHE_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
                "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    set_price_overrides({})
    yield
    set_price_overrides({})
    leaked = [t for t in threading.enumerate() if t.name == "stub-llm-server"]
    assert not leaked, f"stub server threads left running: {leaked}"


def model_for(provider: str, s: StubServer, *, timeout: float = 5.0, retries: int = 2, model: str | None = None,
              base_url: str | None = None):
    opts = ClientOptions(timeout_s=timeout, max_retries=retries)
    if provider == "openai":
        return make_model(f"openai:{model or OPENAI_MODEL}", base_url=base_url or s.base_url, api_key=KEY,
                          options=opts)
    return make_model(f"anthropic:{model or ANTHROPIC_MODEL}", base_url=base_url or s.anthropic_base_url,
                      api_key=KEY, options=opts)


def questions(n: int, prefix: str = "question", **kw) -> list[Request]:
    return [Request.chat(SYSTEM, f"{prefix} {i}", **kw) for i in range(n)]


def run(model, reqs, *, cache: ResponseCache | None = None, concurrency: int = 4, **kw) -> BatchResult:
    return Runner(cache=cache, concurrency=concurrency).run(model, reqs, **kw)


def fixed_usage(body: dict, text: str) -> tuple[int, int]:
    return 120, 7


def answer_yes(body: dict) -> str:
    return "Answer: yes"


def on_text(marker: str, fault, *, attempts: int | None = None):
    """A fault plan: `fault` for requests whose user text contains `marker` (first `attempts` tries only)."""
    def plan(r: StubRequest):
        if marker in r.user_text and (attempts is None or r.retry < attempts):
            return fault
        return None
    return plan


def assert_no_key(*texts: object) -> None:
    for t in texts:
        s = t if isinstance(t, str) else repr(t)
        for part in KEY_PARTS:
            assert part not in s, f"API key leaked into: {s[:300]}"


def files_under(root) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out += [os.path.join(dirpath, f) for f in files]
    return out


def assert_key_not_in_files(root) -> int:
    n = 0
    for path in files_under(root):
        with open(path, "rb") as f:
            data = f.read()
        for part in KEY_PARTS:
            assert part.encode() not in data, f"API key found in {path}"
        n += 1
    return n


# ---------------------------------------------------------------- stub sanity


def test_stub_speaks_both_protocols_and_records():
    with StubServer(responder=answer_yes) as s:
        req = urllib.request.Request(s.base_url + "/models")
        with urllib.request.urlopen(req, timeout=5) as r:
            models = json.loads(r.read())
        assert models["object"] == "list" and models["data"]
        # the 401 fault echoes the presented key (so the key-hygiene tests below are meaningful)
        s.set_faults(["401"])
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        req = urllib.request.Request(s.base_url + "/chat/completions", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 401 and KEY in info.value.read().decode()
        assert s.count == 2 and s.count_path(OPENAI_PATH) == 1 and s.recorded()[1].status == 401


# ---------------------------------------------------------------- happy path


@pytest.mark.parametrize("provider", PROVIDERS)
def test_happy_path_text_usage_cost_and_system_placement(provider, tmp_path):
    if provider == "openai":
        # an openai spec with a base URL is an OpenAI-compatible server (free) unless priced explicitly
        set_price_overrides({OPENAI_MODEL: (0.15, 0.60)})
    with StubServer(responder=answer_yes, usage=fixed_usage) as s:
        m = model_for(provider, s)
        reqs = [Request.chat(SYSTEM, f"Is {i} even?", stop=("\n\n",), max_tokens=64) for i in range(3)]
        res = run(m, reqs, cache=ResponseCache(tmp_path / "cache"))
        recorded = s.recorded()
    # anthropic with a base URL (a proxy) is still priced: only openai+base_url, ollama, openai-compatible are free
    price = (0.15, 0.60) if provider == "openai" else PRICES["claude-sonnet-4"]
    want_cost = (120 * price[0] + 7 * price[1]) / 1_000_000
    assert res.fatal is None and not res.cancelled
    for c in res.completions:
        assert c.error is None
        assert c.text == "Answer: yes"
        assert (c.input_tokens, c.output_tokens) == (120, 7)
        assert c.cost_usd == pytest.approx(want_cost) and c.cost_usd > 0
        assert c.saved_usd == 0
        assert c.latency_s > 0
        assert c.cached is False
        assert len(c.key) == 64
    assert len(recorded) == 3
    for r in recorded:
        body = r.body
        assert r.retry == 0
        if provider == "openai":
            assert body["messages"][0] == {"role": "system", "content": SYSTEM}
            assert [m["role"] for m in body["messages"]] == ["system", "user"]
            assert body["model"] == OPENAI_MODEL and body["temperature"] == 0
            assert body["stop"] == ["\n\n"]
            assert r.headers["authorization"] == f"Bearer {KEY}"
        else:
            assert body["system"] == SYSTEM
            assert all(m["role"] != "system" for m in body["messages"])
            assert [m["role"] for m in body["messages"]] == ["user"]
            assert body["model"] == ANTHROPIC_MODEL and body["max_tokens"] == 64
            assert body["stop_sequences"] == ["\n\n"]
            # anthropic>=2 sends API version 2026-10-21, which rejects temperature/top_p/top_k with a 400
            assert "temperature" not in body
        assert r.system_text == SYSTEM
    p = res.progress
    assert (p.done, p.cached, p.failed, p.requests) == (3, 0, 0, 3)
    assert p.cost_usd == pytest.approx(3 * want_cost)


def test_price_rules():
    set_price_overrides({})
    assert price_for(parse_spec("openai:gpt-4o-mini")) == (0.15, 0.60)
    assert price_for(parse_spec("openai:gpt-4o-mini-2024-07-18")) == (0.15, 0.60)  # longest prefix
    assert price_for(parse_spec("openai:gpt-4o-mini", "http://127.0.0.1:9/v1")) == (0.0, 0.0)  # compatible server
    assert price_for(parse_spec("ollama:llama3.2")) == (0.0, 0.0)
    assert price_for(parse_spec("anthropic:claude-3-5-haiku-latest", "http://127.0.0.1:9")) == (0.80, 4.00)
    assert price_for(parse_spec("openai:some-unknown-model")) is None
    assert cost_of(parse_spec("openai:some-unknown-model"), 1000, 1000) == 0.0
    set_price_overrides({"gpt-4o-mini": (1.0, 2.0)})
    assert price_for(parse_spec("openai:gpt-4o-mini", "http://127.0.0.1:9/v1")) == (1.0, 2.0)


def test_openai_compatible_server_is_free_without_override():
    with StubServer(responder=answer_yes, usage=fixed_usage) as s:
        res = run(model_for("openai", s), questions(2))
    assert all(c.ok and c.cost_usd == 0.0 and c.input_tokens == 120 for c in res.completions)


# ---------------------------------------------------------------- retries and faults


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_retry_after_is_honoured(provider):
    n_faults, wait = 2, 1.0
    with StubServer(responder=answer_yes, faults=on_text("question", Fault.rate_limit(wait), attempts=n_faults)) as s:
        t0 = time.monotonic()
        res = run(model_for(provider, s, retries=3), questions(1))
        elapsed = time.monotonic() - t0
        recorded = s.recorded()
    c = res.completions[0]
    assert c.ok and c.text == "Answer: yes"
    assert len(recorded) == n_faults + 1
    assert [r.status for r in recorded] == [429] * n_faults + [200]
    assert [r.retry for r in recorded] == list(range(n_faults + 1))
    gaps = [b.t - a.t for a, b in zip(recorded, recorded[1:])]
    assert all(g >= wait - 0.01 for g in gaps), gaps  # each retry waited Retry-After
    assert elapsed >= n_faults * wait - 0.01
    assert c.latency_s >= n_faults * wait - 0.01
    assert res.progress.requests == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_retry_after_ms_is_honoured(provider):
    with StubServer(responder=answer_yes,
                    faults=on_text("question", Fault.rate_limit(None, retry_after_ms=1200), attempts=1)) as s:
        res = run(model_for(provider, s, retries=2), questions(1))
        recorded = s.recorded()
    assert res.completions[0].ok and len(recorded) == 2
    assert recorded[1].t - recorded[0].t >= 1.19


@pytest.mark.parametrize("provider", PROVIDERS)
def test_huge_retry_after_fails_the_call_instead_of_stalling(provider):
    # openai refuses to retry past 120 s; anthropic would sleep for any Retry-After (core/llm.py bounds it)
    with StubServer(responder=answer_yes, faults=on_text("hold", Fault.rate_limit(3600))) as s:
        t0 = time.monotonic()
        res = run(model_for(provider, s, retries=2), [Request.chat(SYSTEM, "hold on")] + questions(2))
        elapsed = time.monotonic() - t0
        assert s.completion_count == 3
    assert elapsed < 30
    held = res.completions[0]
    assert held.error and "429" in held.error
    assert all(c.ok for c in res.completions[1:])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_500_burst_then_success(provider):
    with StubServer(responder=answer_yes, faults=on_text("question", "500", attempts=2)) as s:
        res = run(model_for(provider, s, retries=3), questions(1))
        assert s.completion_count == 3 and s.retries == 2
    assert res.completions[0].ok and res.completions[0].text == "Answer: yes"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_persistent_500_fails_one_call_only_and_error_is_redacted(provider):
    reqs = questions(5) + [Request.chat(SYSTEM, "FAIL please")] + questions(3, "later")
    with StubServer(responder=answer_yes, faults=on_text("FAIL", Fault.server_error(500, echo_key=True))) as s:
        res = run(model_for(provider, s, retries=1), reqs, concurrency=3)
        assert s.completion_count == len(reqs) + 1  # one retry for the failing call
    assert res.fatal is None and not res.cancelled
    bad = res.completions[5]
    assert bad.error and "500" in bad.error and bad.text == "" and bad.cost_usd == 0
    assert "***" in bad.error  # the echoed key was there, and was redacted
    assert_no_key(bad.error)
    assert all(c.ok and c.text == "Answer: yes" for i, c in enumerate(res.completions) if i != 5)
    assert res.progress.failed == 1 and res.progress.done == len(reqs)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_503_with_retry_after_then_success(provider):
    with StubServer(responder=answer_yes, faults=on_text("question", Fault("503", retry_after=0.5), attempts=1)) as s:
        res = run(model_for(provider, s, retries=2), questions(1))
        recorded = s.recorded()
    assert res.completions[0].ok and len(recorded) == 2
    assert recorded[1].t - recorded[0].t >= 0.49


@pytest.mark.parametrize("provider", PROVIDERS)
def test_slower_than_timeout_is_an_error_not_a_hang(provider):
    reqs = questions(3) + [Request.chat(SYSTEM, "SLOW one")]
    with StubServer(responder=answer_yes, faults=on_text("SLOW", Fault.slow(20))) as s:
        t0 = time.monotonic()
        res = run(model_for(provider, s, timeout=0.5, retries=0), reqs)
        elapsed = time.monotonic() - t0
    slow = res.completions[3]
    assert slow.error and f"timed out after 0.5 s" in slow.error, slow.error
    assert elapsed < 10, "the client timeout did not fire"
    assert all(c.ok for c in res.completions[:3])
    assert res.fatal is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropped_connection_is_retried_or_reported(provider):
    reqs = [Request.chat(SYSTEM, "DROPONCE a"), Request.chat(SYSTEM, "DROPALWAYS b"), Request.chat(SYSTEM, "fine c")]

    def plan(r: StubRequest):
        if "DROPALWAYS" in r.user_text or ("DROPONCE" in r.user_text and r.retry == 0):
            return "drop"
        return None

    with StubServer(responder=answer_yes, faults=plan) as s:
        res = run(model_for(provider, s, retries=1), reqs)
        by_text = {}
        for r in s.recorded():
            by_text.setdefault(r.user_text, []).append(r)
    once, always, fine = res.completions
    assert once.ok and once.text == "Answer: yes" and len(by_text["DROPONCE a"]) == 2  # retried by the SDK
    assert always.error and "Connection" in always.error and len(by_text["DROPALWAYS b"]) == 2
    assert fine.ok
    assert res.fatal is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_and_empty_are_error_results_and_not_cached(provider, tmp_path):
    reqs = [Request.chat(SYSTEM, "MALFORMED x"), Request.chat(SYSTEM, "EMPTY y"), Request.chat(SYSTEM, "GOOD z")]

    def plan(r: StubRequest):
        return "malformed" if "MALFORMED" in r.user_text else "empty" if "EMPTY" in r.user_text else None

    cache = ResponseCache(tmp_path / "cache")
    with StubServer(responder=answer_yes, faults=plan) as s:
        res = run(model_for(provider, s, retries=2), reqs, cache=cache)  # 200s are not retried
        assert s.completion_count == 3
        malformed, empty, good = res.completions
        assert malformed.error and not malformed.text
        assert empty.error and "empty" in empty.error.lower()
        assert good.ok
        assert len(cache) == 1
        res2 = run(model_for(provider, s), reqs, cache=cache)
        assert s.completion_count == 5  # the two errors went to the network again, the good one did not
    assert [c.cached for c in res2.completions] == [False, False, True]
    assert res2.completions[2].text == "Answer: yes"


# ---------------------------------------------------------------- 401 and key hygiene


@pytest.mark.parametrize("provider", PROVIDERS)
def test_401_stops_batch_and_key_appears_nowhere(provider, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)  # SDK and httpx debug logs included
    cache_dir = tmp_path / "cache"
    n = 40
    with StubServer(responder=answer_yes, faults=lambda r: "401" if r.index >= 4 else None) as s:
        res = run(model_for(provider, s), questions(n), cache=ResponseCache(cache_dir), concurrency=2)
        seen = s.completion_count
        statuses = [r.status for r in s.recorded()]
    assert res.fatal and "rejected the API key" in res.fatal
    assert ("ANTHROPIC_API_KEY" if provider == "anthropic" else "OPENAI_API_KEY") in res.fatal
    assert "\n" not in res.fatal
    assert 401 in statuses
    assert seen <= 8, f"calls kept being launched after the 401 ({seen} requests)"
    ok = [c for c in res.completions if c.ok]
    assert 2 <= len(ok) <= 4  # finished calls are kept
    assert all(c.error == res.fatal for c in res.completions if not c.ok)
    out, err = capsys.readouterr()
    assert any(rec.name.startswith(("openai", "anthropic", "http")) for rec in caplog.records)  # logs were captured
    assert_no_key(res.fatal, *[c.error or "" for c in res.completions], repr(res), out, err, caplog.text,
                  *[str(rec.args) for rec in caplog.records])
    assert assert_key_not_in_files(cache_dir) > 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_401_on_first_call_launches_almost_nothing(provider, tmp_path):
    with StubServer(faults=lambda r: "401") as s:
        res = run(model_for(provider, s), questions(50), cache=ResponseCache(tmp_path / "c"), concurrency=4)
        assert s.completion_count <= 4
    assert res.fatal and all(c.error == res.fatal for c in res.completions)
    assert res.progress.done < 50


# ---------------------------------------------------------------- accounting


@pytest.mark.parametrize("provider", PROVIDERS)
def test_progress_totals_equal_sums_and_calls_equal_requests_minus_retries(provider, tmp_path):
    set_price_overrides({OPENAI_MODEL: (0.15, 0.60)})
    cache = ResponseCache(tmp_path / "cache")
    reqs = questions(12) + [Request.chat(SYSTEM, "RATE once"), Request.chat(SYSTEM, "FAIL always")]

    def plan(r: StubRequest):
        if "RATE" in r.user_text and r.retry == 0:
            return Fault.rate_limit(0.2)
        if "FAIL" in r.user_text:
            return "500"
        return None

    with StubServer(responder=answer_yes, faults=plan) as s:
        m = model_for(provider, s, retries=1)
        run(m, reqs[:5], cache=cache)  # warm the cache with 5 of them
        s.reset()
        seen: list[int] = []
        res = run(m, reqs, cache=cache, concurrency=3, progress=lambda p: seen.append(p.done))
        stub_count, stub_retries = s.completion_count, s.retries
    cs, p = res.completions, res.progress
    assert seen == list(range(1, len(reqs) + 1))  # one callback per finished call, none twice
    assert p.total == p.done == len(reqs)
    assert p.cached == sum(c.cached for c in cs) == 5
    assert p.failed == sum(c.error is not None for c in cs) == 1
    assert p.input_tokens == sum(c.input_tokens for c in cs)
    assert p.output_tokens == sum(c.output_tokens for c in cs)
    assert p.cost_usd == pytest.approx(sum(c.cost_usd for c in cs))
    assert p.saved_usd == pytest.approx(sum(c.saved_usd for c in cs)) and p.saved_usd > 0
    assert p.requests == sum(not c.cached for c in cs) == len(reqs) - 5
    assert stub_retries == 2  # RATE once + FAIL once (max_retries=1)
    assert p.requests == stub_count - stub_retries


# ---------------------------------------------------------------- cache


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cached_rerun_makes_no_requests_and_reports_savings(provider, tmp_path):
    set_price_overrides({OPENAI_MODEL: (0.15, 0.60)})
    reqs = questions(6)
    with StubServer(responder=lambda b: "Answer: " + b["messages"][-1]["content"], usage=fixed_usage) as s:
        first = run(model_for(provider, s), reqs, cache=ResponseCache(tmp_path / "cache"))
        assert s.completion_count == 6
        s.reset()
        # a fresh cache object on the same folder, a fresh model: a new process would see the same
        second = run(model_for(provider, s), reqs, cache=ResponseCache(tmp_path / "cache"))
        assert s.count == 0
    for a, b in zip(first.completions, second.completions):
        assert b.cached is True and a.cached is False
        assert b.text == a.text and (b.input_tokens, b.output_tokens) == (a.input_tokens, a.output_tokens)
        assert b.cost_usd == 0.0
        assert b.saved_usd == pytest.approx(a.cost_usd) and a.cost_usd > 0
        assert b.key == a.key
    p = second.progress
    assert (p.done, p.cached, p.requests, p.cost_usd) == (6, 6, 0, 0.0)
    assert p.saved_usd == pytest.approx(first.progress.cost_usd)


def test_everything_that_shapes_the_answer_changes_the_key(tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    base = Request.chat(SYSTEM, "What is 2+2?")
    with StubServer(responder=answer_yes) as s:
        m = model_for("openai", s)
        variants = {
            "temperature": (m, Request.chat(SYSTEM, "What is 2+2?", temperature=0.7)),
            "max_tokens": (m, Request.chat(SYSTEM, "What is 2+2?", max_tokens=100)),
            "stop": (m, Request.chat(SYSTEM, "What is 2+2?", stop=("\n",))),
            "sample": (m, Request.chat(SYSTEM, "What is 2+2?", sample=1)),
            "system": (m, Request.chat(SYSTEM + " Be brief.", "What is 2+2?")),
            "user": (m, Request.chat(SYSTEM, "What is 2+3?")),
            "model": (model_for("openai", s, model="gpt-4o"), base),
            "base_url": (model_for("openai", s, base_url=f"http://localhost:{s.port}/v1"), base),
        }
        run(m, [base], cache=cache)
        assert s.completion_count == 1
        run(m, [Request.chat(SYSTEM, "What is 2+2?", tag="other purpose")], cache=cache)  # tag is not in the key
        assert s.completion_count == 1
        keys = {cache_key(m.spec, base)}
        for name, (mod, req) in variants.items():
            before = s.completion_count
            res = run(mod, [req], cache=cache)
            assert res.completions[0].ok and not res.completions[0].cached, name
            assert s.completion_count == before + 1, f"changing {name} did not change the cache key"
            keys.add(cache_key(mod.spec, req))
        assert len(keys) == len(variants) + 1
        # and every variant is now a hit
        before = s.completion_count
        for name, (mod, req) in variants.items():
            assert run(mod, [req], cache=cache).completions[0].cached, name
        assert s.completion_count == before
    anth = parse_spec("anthropic:" + OPENAI_MODEL, f"http://127.0.0.1:{s.port}/v1")
    assert cache_key(anth, base) != cache_key(m.spec, base)  # provider is in the key too


def test_use_cache_false_bypasses(tmp_path):
    cache = ResponseCache(tmp_path / "cache")
    with StubServer(responder=answer_yes) as s:
        m = model_for("openai", s)
        run(m, questions(2), cache=cache)
        res = run(m, questions(2, use_cache=False), cache=cache)
        assert s.completion_count == 4
    assert all(c.ok and not c.cached for c in res.completions)


def test_cache_dir_is_private_and_values_are_json(tmp_path):
    set_price_overrides({OPENAI_MODEL: (0.15, 0.60)})
    cache_dir = tmp_path / "deep" / "cache"
    cache = ResponseCache(cache_dir)
    assert stat.S_IMODE(os.stat(cache_dir).st_mode) == 0o700
    long_text = "x" * 40_000  # large values go to a file next to the database: still JSON text
    with StubServer(responder=lambda b: long_text if "long" in b["messages"][-1]["content"] else "Answer: no") as s:
        run(model_for("openai", s), questions(3) + [Request.chat(SYSTEM, "long one")], cache=cache)
    assert len(cache) == 4
    db = sqlite3.connect(str(cache_dir / "cache.db"))
    try:
        rows = db.execute("SELECT key, mode, filename, value FROM Cache").fetchall()
    finally:
        db.close()
    assert len(rows) == 4
    modes = {r[1] for r in rows}
    assert 4 not in modes  # diskcache MODE_PICKLE
    for key, mode, filename, value in rows:
        assert isinstance(key, str) and len(key) == 64
        text = value if filename is None else (cache_dir / filename).read_text("utf-8")
        entry = json.loads(text)
        assert set(entry) >= {"text", "input_tokens", "output_tokens", "cost_usd", "model"}
    assert_key_not_in_files(cache_dir)

    # a pickle planted in the database is refused, never unpickled
    import diskcache

    disk = JSONOnlyDisk(str(cache_dir))
    with pytest.raises(CacheError):
        disk.fetch(diskcache.core.MODE_PICKLE, None, pickle.dumps({"text": "evil"}), False)
    key = rows[0][0]
    db = sqlite3.connect(str(cache_dir / "cache.db"))
    try:
        db.execute("UPDATE Cache SET mode = 4, filename = NULL, value = ? WHERE key = ?",
                   (sqlite3.Binary(pickle.dumps({"text": "evil"})), key))
        db.commit()
    finally:
        db.close()
    fresh = ResponseCache(cache_dir)
    assert fresh.get(key) is None


def test_cache_dir_permissions_are_tightened_when_it_exists(tmp_path):
    d = tmp_path / "existing"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    ResponseCache(d)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


# ---------------------------------------------------------------- cancellation and concurrency


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel_from_progress_keeps_finished_results(provider, tmp_path):
    token = CancelToken()
    n, stop_after = 20, 3

    def progress(p: Progress) -> None:
        if p.done >= stop_after:
            token.cancel()

    with StubServer(responder=answer_yes, delay_s=0.1) as s:
        res = run(model_for(provider, s), questions(n), cache=ResponseCache(tmp_path / "c"), concurrency=2,
                  progress=progress, cancel=token)
        seen = s.completion_count
    assert res.cancelled and res.fatal is None
    ok = [c for c in res.completions if c.ok]
    skipped = [c for c in res.completions if c.error == CANCELLED]
    assert len(ok) >= stop_after
    assert len(ok) + len(skipped) == n and skipped
    # nothing new was launched; the calls in flight (at most `concurrency`) were aborted, not waited for (issue 11)
    assert seen < n and len(ok) <= seen <= len(ok) + 2
    assert res.progress.done == len(ok)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_concurrency_limit_is_respected(provider):
    with StubServer(responder=answer_yes, delay_s=0.2) as s:
        t0 = time.monotonic()
        res = run(model_for(provider, s), questions(16), concurrency=4)
        elapsed = time.monotonic() - t0
        assert s.max_in_flight <= 4
        assert s.max_in_flight >= 2  # and calls do run side by side
    assert all(c.ok for c in res.completions)
    assert elapsed >= 4 * 0.2 - 0.01  # 16 calls / 4 at a time * 0.2 s


def test_runner_limits_one_provider_across_models(tmp_path):
    """Two models on the same server share one limit when run on the same loop."""
    import asyncio

    with StubServer(responder=answer_yes, delay_s=0.15) as s:
        runner = Runner(concurrency=3)
        a, b = model_for("openai", s), model_for("openai", s, model="gpt-4o")

        async def both():
            try:
                return await asyncio.gather(runner.arun(a, questions(6, "a")), runner.arun(b, questions(6, "b")))
            finally:
                await a.aclose()
                await b.aclose()

        ra, rb = asyncio.run(both())
        assert s.max_in_flight <= 3
    assert all(c.ok for c in ra.completions + rb.completions)


def test_completion_json_roundtrip():
    c = Completion(text="t", input_tokens=1, output_tokens=2, cost_usd=0.5, model="openai:x")
    assert Completion.from_json(json.loads(json.dumps(c.to_json()))) == c

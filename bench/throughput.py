"""Runner overhead: 400 calls at concurrency 16 against a 100 ms stub, ours vs the bare SDK.

(a) the bare `AsyncOpenAI` client with an `asyncio.Semaphore(16)` (the floor), (b) our Runner with the
cache off, (c) our Runner with the cache on (fill), (d) the same batch again (must make zero requests).
(a) and (b) are repeated `--repeats` times in alternating order; medians are reported. Both clients are
built with the same arguments (api_key, base_url, timeout, max_retries) and so get the SDK's default
httpx connection pool; the script reads the pool limits back from both and refuses to compare if they
differ. Last line: `ideal_s=… raw_sdk_s=… ours_s=… overhead=… cached_rerun_calls=…`.

    python bench/throughput.py [--calls 400] [--concurrency 16] [--delay 0.1] [--repeats 3] [--stub process]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.cache import ResponseCache  # noqa: E402
from core.llm import ClientOptions, Request, make_model  # noqa: E402
from core.runner import Runner  # noqa: E402
from tests.stub_server import StubServer, fetch_stats  # noqa: E402

MODEL = "gpt-4o-mini"
KEY = "sk-bench-not-a-real-key"
SYSTEM = "You are a helpful, creative, and smart assistant."
TIMEOUT_S = 60.0
MAX_RETRIES = 2


class Stub:
    """The stub in this process (a thread) or in a child process (no shared GIL with the clients)."""

    def __init__(self, mode: str, delay: float):
        self.mode, self.delay = mode, delay
        self._server: StubServer | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "Stub":
        if self.mode == "thread":
            self._server = StubServer(delay_s=self.delay, record_bodies=False).start()
            self.port = self._server.port
        else:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.stub_server", "--delay", str(self.delay), "--no-record-bodies"],
                cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = self._proc.stdout.readline().split()
            if len(line) != 2 or line[0] != "PORT":
                self._proc.kill()
                raise RuntimeError(f"stub did not start: {line}")
            self.port = int(line[1])
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root_url + "/v1"
        return self

    def completions(self) -> int:
        if self._server is not None:
            return self._server.completion_count
        return int(fetch_stats(self.root_url)["per_path"].get("/v1/chat/completions", 0))

    def max_in_flight(self) -> int:
        if self._server is not None:
            return self._server.max_in_flight
        return int(fetch_stats(self.root_url)["max_in_flight"])

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.stop()
        if self._proc is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(10)
            except Exception:  # noqa: BLE001
                self._proc.kill()
                self._proc.wait()
            self._proc.stdout.close()


def requests(n: int, tag: str) -> list[Request]:
    return [Request.chat(SYSTEM, f"Question {tag}-{i}: is {i} even? Answer yes or no.") for i in range(n)]


def pool_limits(openai_client: Any) -> tuple[Any, Any]:
    """(max_connections, max_keepalive_connections) of an AsyncOpenAI client's httpx pool."""
    pool = getattr(getattr(openai_client._client, "_transport", None), "_pool", None)
    return getattr(pool, "_max_connections", None), getattr(pool, "_max_keepalive_connections", None)


async def raw_sdk(base_url: str, reqs: list[Request], concurrency: int) -> tuple[float, tuple]:
    """The floor: the bare SDK client and a semaphore, built like ours (same args, same defaults)."""
    from openai import AsyncOpenAI

    t0 = time.perf_counter()
    client = AsyncOpenAI(api_key=KEY, base_url=base_url, timeout=TIMEOUT_S, max_retries=MAX_RETRIES)
    limits = pool_limits(client)
    sem = asyncio.Semaphore(concurrency)

    async def one(req: Request) -> str:
        async with sem:
            resp = await client.chat.completions.create(
                model=MODEL, messages=[{"role": r, "content": c} for r, c in req.messages],
                temperature=req.temperature, max_tokens=req.max_tokens)
            return resp.choices[0].message.content or ""

    try:
        texts = await asyncio.gather(*(one(r) for r in reqs))
    finally:
        await client.close()
    dt = time.perf_counter() - t0
    assert all(texts), "raw SDK: empty answers"
    return dt, limits


async def ours(base_url: str, reqs: list[Request], concurrency: int, cache: ResponseCache | None) -> tuple[float, tuple, int]:
    t0 = time.perf_counter()
    model = make_model(f"openai:{MODEL}", base_url=base_url, api_key=KEY,
                       options=ClientOptions(timeout_s=TIMEOUT_S, max_retries=MAX_RETRIES))
    runner = Runner(cache=cache, concurrency=concurrency)
    try:
        res = await runner.arun(model, reqs)
        limits = pool_limits(model._client) if getattr(model, "_client", None) is not None else (None, None)
    finally:
        await model.aclose()
    dt = time.perf_counter() - t0
    errors = [c.error for c in res.completions if c.error]
    assert not errors and res.fatal is None, f"ours: {len(errors)} errors, e.g. {errors[:1]} {res.fatal}"
    return dt, limits, res.progress.cached


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Runner overhead vs the bare AsyncOpenAI client.")
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--delay", type=float, default=0.1, help="stub answer latency, seconds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stub", choices=("process", "thread"), default="process",
                    help="run the stub in a child process (default) or in a thread of this process")
    a = ap.parse_args(argv)
    n, c = a.calls, a.concurrency
    ideal = n / c * a.delay
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        os.environ.pop(var, None)

    with Stub(a.stub, a.delay) as stub, tempfile.TemporaryDirectory(prefix="pgs-bench-") as tmp:
        print(f"stub: {a.stub}, 127.0.0.1:{stub.port}, answers after {a.delay * 1000:.0f} ms, HTTP/1.1 keep-alive")
        # warm-up: imports, the SDKs' first-call platform probe, the stub's accept path
        asyncio.run(raw_sdk(stub.base_url, requests(2 * c, "warm"), c))
        _, limits_ours, _ = asyncio.run(ours(stub.base_url, requests(2 * c, "warm"), c, None))
        _, limits_raw = asyncio.run(raw_sdk(stub.base_url, requests(c, "warm2"), c))
        print(f"clients: AsyncOpenAI(timeout={TIMEOUT_S:g}, max_retries={MAX_RETRIES}); httpx pool "
              f"(max_connections, max_keepalive) raw={limits_raw} ours={limits_ours}")
        if limits_raw != limits_ours:
            print("error: the two clients have different connection limits; the comparison would be unfair")
            return 1

        raw_times: list[float] = []
        our_times: list[float] = []
        cpu = {"raw": [], "ours": []}  # client-process CPU seconds: much less sensitive to a busy machine
        for k in range(a.repeats):
            order = ("raw", "ours") if k % 2 == 0 else ("ours", "raw")
            for which in order:
                reqs = requests(n, f"r{k}-{which}")
                cpu0 = time.process_time()
                if which == "raw":
                    dt, _ = asyncio.run(raw_sdk(stub.base_url, reqs, c))
                    raw_times.append(dt)
                else:
                    dt, _, _ = asyncio.run(ours(stub.base_url, reqs, c, None))
                    our_times.append(dt)
                cpu[which].append(time.process_time() - cpu0)
            print(f"repeat {k + 1} ({' then '.join(order)}): raw_sdk {raw_times[-1]:.3f} s, "
                  f"ours {our_times[-1]:.3f} s, ratio {our_times[-1] / raw_times[-1]:.3f}; client CPU "
                  f"raw {cpu['raw'][-1]:.3f} s, ours {cpu['ours'][-1]:.3f} s")

        cache = ResponseCache(Path(tmp) / "cache")
        reqs = requests(n, "cached")
        before = stub.completions()
        fill_s, _, _ = asyncio.run(ours(stub.base_url, reqs, c, cache))
        fill_calls = stub.completions() - before
        before = stub.completions()
        rerun_s, _, rerun_cached = asyncio.run(ours(stub.base_url, reqs, c, cache))
        rerun_calls = stub.completions() - before
        cache.close()
        print(f"cache on: fill {fill_s:.3f} s ({fill_calls} requests), rerun {rerun_s:.3f} s "
              f"({rerun_cached}/{n} from the cache, {rerun_calls} requests)")
        print(f"stub max in flight: {stub.max_in_flight()} (limit {c})")

    raw_med, our_med = statistics.median(raw_times), statistics.median(our_times)
    cpu_raw, cpu_ours = statistics.median(cpu["raw"]), statistics.median(cpu["ours"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"medians of {a.repeats}: raw_sdk {raw_med:.3f} s, ours {our_med:.3f} s (cache-on fill "
          f"{fill_s / raw_med:.3f}x raw); client CPU raw {cpu_raw:.3f} s, ours {cpu_ours:.3f} s "
          f"({cpu_ours / cpu_raw:.3f}x); load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"ideal_s={ideal:.3f} raw_sdk_s={raw_med:.3f} ours_s={our_med:.3f} overhead={our_med / raw_med:.3f} "
          f"cached_rerun_calls={rerun_calls}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

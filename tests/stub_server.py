"""Local stub LLM servers on 127.0.0.1 for protocol tests and benchmarks.

One lean asyncio HTTP/1.1 server (keep-alive, no framework) in a background thread speaks
OpenAI Chat Completions (`POST /v1/chat/completions`, `GET /v1/models`) and Anthropic Messages
(`POST /v1/messages`). It can inject faults per request and records what it received.

    with StubServer(delay_s=0.1, responder=lambda body: "Answer: yes") as s:
        model = make_model("openai:gpt-4o-mini", base_url=s.base_url, api_key="sk-test")
        ...
        assert s.completion_count == 10

Faults: `faults=` is either a list consumed in arrival order by the completion endpoints
(None = answer normally), or a callable `(StubRequest) -> Fault | str | None`. Strings are
shorthands: "429", "429:1" (Retry-After 1 s), "500", "503", "slow", "slow:3", "drop",
"malformed", "empty", "401", "ok". With `record_bodies=False` (benchmarks) a StubRequest's `body`
is None, so plans should then key on `index` or `retry` only.

Streaming: a request with `"stream": true` is answered as server-sent events, as each API does
(OpenAI chat.completion.chunk events, usage last when `stream_options.include_usage`; Anthropic
message_start / content_block_delta / message_delta with the final usage / message_stop), one word a
chunk, `chunk_delay_s` apart. `stream_mode="reject"` answers such requests 400 (a server without
streaming); "ignore" answers them with plain JSON, as if `stream` were not there; "cut" ends the stream
after its first events, with no finish reason (as llama-cpp-python's server cuts a stream when the next request
arrives).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"
STATS_PATH = "/_stub/stats"  # counters as JSON (not counted themselves)

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Fault:
    """What to do instead of a normal answer.

    kind: ok | 429 | 500 | 503 | slow | drop | malformed | empty | 401 | length
    (length: a normal answer, cut off at max_tokens: finish_reason "length" / stop_reason "max_tokens")
    """

    kind: str
    retry_after: float | None = None  # 429/503: Retry-After header, seconds
    retry_after_ms: int | None = None  # 429/503: retry-after-ms header (both SDKs prefer it)
    delay_s: float = 30.0  # slow: answer (normally) after this long
    echo_key: bool = False  # error bodies echo the Authorization / x-api-key header back

    @staticmethod
    def rate_limit(retry_after: float | None = 1, retry_after_ms: int | None = None) -> "Fault":
        return Fault("429", retry_after=retry_after, retry_after_ms=retry_after_ms)

    @staticmethod
    def server_error(status: int = 500, echo_key: bool = False) -> "Fault":
        return Fault(str(status), echo_key=echo_key)

    @staticmethod
    def slow(delay_s: float = 30.0) -> "Fault":
        return Fault("slow", delay_s=delay_s)

    @staticmethod
    def parse(spec: "Fault | str | None") -> "Fault | None":
        if spec is None or isinstance(spec, Fault):
            return spec
        kind, _, arg = str(spec).partition(":")
        kind = kind.strip().lower()
        if kind in ("", "ok", "none"):
            return None
        if kind == "429":
            return Fault("429", retry_after=float(arg) if arg else None)
        if kind == "503" and arg:
            return Fault("503", retry_after=float(arg))
        if kind == "slow":
            return Fault("slow", delay_s=float(arg) if arg else 30.0)
        if kind not in ("500", "503", "drop", "malformed", "empty", "401", "length"):
            raise ValueError(f"unknown fault '{spec}'")
        return Fault(kind)


@dataclass
class StubRequest:
    """One request as the stub saw it (headers lower-cased)."""

    index: int  # arrival order over all requests
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON (None when absent or not JSON)
    t: float  # time.monotonic() at arrival
    fault: Fault | None = None
    status: int | None = None  # what the stub answered (None: dropped or not answered yet)

    @property
    def api(self) -> str:
        return "anthropic" if self.path.startswith(ANTHROPIC_PATH) else "openai"

    @property
    def retry(self) -> int:
        """The SDKs' own retry counter (x-stainless-retry-count): 0 for a first attempt."""
        try:
            return int(self.headers.get("x-stainless-retry-count", "0"))
        except ValueError:
            return 0

    @property
    def messages(self) -> list[dict]:
        return list((self.body or {}).get("messages") or []) if isinstance(self.body, dict) else []

    @property
    def user_text(self) -> str:
        """Text of the last user message."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return _content_text(m.get("content"))
        return ""

    @property
    def system_text(self) -> str | None:
        """The system prompt where this API puts it (Anthropic: top-level `system`; OpenAI: a system message)."""
        if not isinstance(self.body, dict):
            return None
        if self.api == "anthropic":
            s = self.body.get("system")
            return _content_text(s) if s is not None else None
        sys_msgs = [_content_text(m.get("content")) for m in self.messages if m.get("role") in ("system", "developer")]
        return "\n\n".join(sys_msgs) if sys_msgs else None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


def default_responder(body: dict) -> str:
    """A deterministic answer derived from the last user message."""
    text = ""
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            text = _content_text(m.get("content"))
            break
    return f"stub answer to: {text[:60]}"


def default_usage(body: dict, text: str) -> tuple[int, int]:
    """(input, output) tokens: whitespace-separated words, at least 1."""
    words = sum(len(_content_text(m.get("content")).split()) for m in body.get("messages") or [])
    if body.get("system"):
        words += len(_content_text(body["system"]).split())
    return max(1, words), max(1, len(text.split()))


FaultPlan = Sequence["Fault | str | None"] | Callable[[StubRequest], "Fault | str | None"] | None


class StubServer:
    """A stub OpenAI + Anthropic server on 127.0.0.1:<ephemeral port>, in a background thread."""

    def __init__(self, *, delay_s: float = 0.0, responder: Callable[[dict], str] | None = None,
                 faults: FaultPlan = None, usage: Callable[[dict, str], tuple[int, int]] | None = None,
                 record_bodies: bool = True, host: str = "127.0.0.1", stream_mode: str = "sse",
                 chunk_delay_s: float = 0.0):
        if stream_mode not in ("sse", "reject", "ignore", "cut"):
            raise ValueError(f"unknown stream_mode {stream_mode!r}")
        self.delay_s = delay_s
        self.stream_mode = stream_mode
        self.chunk_delay_s = chunk_delay_s
        self.responder = responder or default_responder
        self.usage = usage or default_usage
        self.record_bodies = record_bodies
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._set_faults(faults)
        self._reset_counters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._now = int(time.time())

    # ---- configuration and inspection (thread-safe) ----

    def _set_faults(self, faults: FaultPlan) -> None:
        if faults is None or callable(faults):
            self._fault_fn, self._fault_queue = faults, []
        else:
            self._fault_fn, self._fault_queue = None, list(faults)

    def set_faults(self, faults: FaultPlan) -> None:
        with self._lock:
            self._set_faults(faults)

    def _reset_counters(self) -> None:
        self.requests: list[StubRequest] = []
        self.per_path: dict[str, int] = {}
        self._in_flight = 0
        self._max_in_flight = 0

    def reset(self) -> None:
        """Forget recorded requests and counters (the fault plan stays)."""
        with self._lock:
            self._reset_counters()

    @property
    def count(self) -> int:
        """All requests received (every path, every attempt)."""
        with self._lock:
            return len(self.requests)

    @property
    def completion_count(self) -> int:
        with self._lock:
            return self.per_path.get(OPENAI_PATH, 0) + self.per_path.get(ANTHROPIC_PATH, 0)

    @property
    def retries(self) -> int:
        """Requests that the SDK marked as retries (x-stainless-retry-count > 0)."""
        with self._lock:
            return sum(1 for r in self.requests if r.retry > 0)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def count_path(self, path: str) -> int:
        with self._lock:
            return self.per_path.get(path, 0)

    def recorded(self) -> list[StubRequest]:
        with self._lock:
            return list(self.requests)

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For the OpenAI SDK (and OpenAI-compatible specs)."""
        return f"{self.root_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For the Anthropic SDK (it appends /v1/messages itself)."""
        return self.root_url

    # ---- lifecycle ----

    def start(self) -> "StubServer":
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="stub-llm-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stub server did not start")
        if self._error is not None:
            raise RuntimeError(f"stub server failed: {self._error!r}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if thread is None:
            return
        if loop is not None and not loop.is_closed() and self._stop is not None:
            try:
                loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        thread.join(10)
        self._thread = None

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001
            self._error = exc
            self._ready.set()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, self.host, 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            self._server.close()
            for t in list(self._handlers):
                t.cancel()
            if self._handlers:
                await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    # ---- HTTP ----

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _version = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                try:
                    raw = await self._read_body(reader, headers)
                except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                    return
                keep = await self._respond(method, target.split("?", 1)[0], headers, raw, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return b"".join(chunks)
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
        n = int(headers.get("content-length", "0") or 0)
        return await reader.readexactly(n) if n else b""

    async def _respond(self, method: str, path: str, headers: dict[str, str], raw: bytes,
                       writer: asyncio.StreamWriter) -> bool:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if method == "GET" and path == STATS_PATH:  # for a stub in another process (bench/); not counted
            with self._lock:
                stats = {"count": len(self.requests), "per_path": dict(self.per_path),
                         "max_in_flight": self._max_in_flight,
                         "retries": sum(1 for r in self.requests if r.retry > 0)}
            return await self._send(StubRequest(-1, method, path, headers, None, time.monotonic()), writer, 200, stats)
        is_completion = method == "POST" and path in (OPENAI_PATH, ANTHROPIC_PATH)
        with self._lock:
            req = StubRequest(len(self.requests), method, path, headers,
                              body if self.record_bodies or not is_completion else None, time.monotonic())
            self.requests.append(req)
            self.per_path[path] = self.per_path.get(path, 0) + 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if is_completion:
                req.fault = self._next_fault(req, body)
                return await self._completion(req, body if isinstance(body, dict) else {}, writer)
            if method == "GET" and path == MODELS_PATH:
                data = {"object": "list", "data": [
                    {"id": m, "object": "model", "created": self._now, "owned_by": "stub"}
                    for m in ("gpt-4o-mini", "stub-model")]}
                return await self._send(req, writer, 200, data)
            status = 405 if path in (OPENAI_PATH, ANTHROPIC_PATH) else 404
            return await self._send(req, writer, status, {"error": {"message": f"no route {method} {path}",
                                                                     "type": "invalid_request_error"}})
        finally:
            with self._lock:
                self._in_flight -= 1

    def _next_fault(self, req: StubRequest, body: Any) -> Fault | None:
        with self._lock:
            fn, queue = self._fault_fn, self._fault_queue
            if fn is None:
                return Fault.parse(queue.pop(0)) if queue else None
        return Fault.parse(fn(req))

    async def _completion(self, req: StubRequest, body: dict, writer: asyncio.StreamWriter) -> bool:
        fault = req.fault
        api = req.api
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if fault is None or fault.kind == "ok":
            return await self._answer(req, body, writer)
        kind = fault.kind
        if kind == "drop":
            writer.transport.abort()  # close the socket without a response
            return False
        if kind == "slow":
            await asyncio.sleep(fault.delay_s)
            return await self._answer(req, body, writer)
        if kind == "malformed":
            if body.get("stream") and self.stream_mode == "sse":
                name = b"event: message_start\n" if api == "anthropic" else b""
                return await self._send_events(req, writer, [name + b'data: {"id": "chatcmpl-broken", "choices": [{"mess\n\n'])
            return await self._send(req, writer, 200, b'{"id": "chatcmpl-broken", "choices": [{"mess')
        if kind == "empty":
            return await self._answer(req, body, writer, text="")
        if kind == "length":
            return await self._answer(req, body, writer, cut_off=True)
        key = self._presented_key(req.headers) if fault.echo_key else ""
        extra: dict[str, str] = {}
        if kind == "401":
            status = 401
            msg = f"Incorrect API key provided: {self._presented_key(req.headers)}. Check your key."
            etype = "authentication_error" if api == "anthropic" else "invalid_request_error"
        elif kind == "429":
            status, msg, etype = 429, "Rate limit reached, slow down.", "rate_limit_error"
        elif kind in ("500", "503"):
            status, msg, etype = int(kind), "The server had an error while processing your request.", "api_error"
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        if kind in ("429", "503"):
            if fault.retry_after is not None:
                extra["Retry-After"] = f"{fault.retry_after:g}"
            if fault.retry_after_ms is not None:
                extra["retry-after-ms"] = str(int(fault.retry_after_ms))
        if key:
            msg += f" (key: {key})"
        if api == "anthropic":
            err = {"type": "error", "error": {"type": etype, "message": msg}}
        else:
            err = {"error": {"message": msg, "type": etype, "param": None,
                             "code": "invalid_api_key" if status == 401 else None}}
        return await self._send(req, writer, status, err, extra)

    @staticmethod
    def _presented_key(headers: dict[str, str]) -> str:
        return headers.get("x-api-key") or headers.get("authorization", "")

    async def _answer(self, req: StubRequest, body: dict, writer: asyncio.StreamWriter,
                      text: str | None = None, cut_off: bool = False) -> bool:
        if text is None:
            text = self.responder(body)
        tin, tout = self.usage(body, text)
        model = body.get("model", "stub-model")
        rid = f"{req.index:08d}"
        if body.get("stream") and self.stream_mode == "reject":
            return await self._send(req, writer, 400, {"error": {"message": "streaming is not supported",
                                                                 "type": "invalid_request_error"}})
        if body.get("stream") and self.stream_mode == "sse":
            return await self._send_events(req, writer, self._events(req, body, text, tin, tout, cut_off))
        if body.get("stream") and self.stream_mode == "cut":  # a stream ended early, with no finish reason
            events = self._events(req, body, text, tin, tout, cut_off)
            return await self._send_events(req, writer, events[:5] if req.api == "anthropic" else events[:2])
        if req.api == "anthropic":
            data = {"id": f"msg_{rid}", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": text}] if text else [],
                    "stop_reason": "max_tokens" if cut_off else "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": tin, "output_tokens": tout}}
        else:
            data = {"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": self._now, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "length" if cut_off else "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}}
        return await self._send(req, writer, 200, data)

    def _events(self, req: StubRequest, body: dict, text: str, tin: int, tout: int, cut_off: bool) -> list[bytes]:
        """The server-sent events of one streamed answer, one word a content chunk."""
        model, rid = body.get("model", "stub-model"), f"{req.index:08d}"
        words = [w + " " for w in text.split(" ")] if text else []
        if words:
            words[-1] = words[-1][:-1]

        def ev(data: dict, name: str | None = None) -> bytes:
            return ((f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n").encode()

        if req.api == "anthropic":
            out = [ev({"type": "message_start", "message": {
                "id": f"msg_{rid}", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": tin, "output_tokens": 1}}},
                "message_start"),
                ev({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                   "content_block_start"),
                ev({"type": "ping"}, "ping")]
            out += [ev({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
                       "content_block_delta") for w in words]
            out += [ev({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                    ev({"type": "message_delta", "delta": {"stop_reason": "max_tokens" if cut_off else "end_turn",
                                                           "stop_sequence": None},
                        "usage": {"output_tokens": tout}}, "message_delta"),
                    ev({"type": "message_stop"}, "message_stop")]
            return out

        def chunk(delta: dict, reason: str | None) -> bytes:
            return ev({"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": self._now,
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": reason,
                                                    "logprobs": None}]})

        out = [chunk({"role": "assistant", "content": ""}, None)]
        out += [chunk({"content": w}, None) for w in words]
        out.append(chunk({}, "length" if cut_off else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            out.append(ev({"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk", "created": self._now,
                           "model": model, "choices": [],
                           "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}}))
        out.append(b"data: [DONE]\n\n")
        return out

    async def _send_events(self, req: StubRequest, writer: asyncio.StreamWriter, events: list[bytes]) -> bool:
        """A 200 text/event-stream answer in chunked encoding, `chunk_delay_s` between events."""
        head = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked",
                "Connection: keep-alive", f"x-request-id: req_{req.index}", f"request-id: req_{req.index}"]
        req.status = 200
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            for i, e in enumerate(events):
                if i and self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                writer.write(f"{len(e):x}\r\n".encode() + e + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def _send(self, req: StubRequest, writer: asyncio.StreamWriter, status: int, data: Any,
                    extra: dict[str, str] | None = None) -> bool:
        payload = data if isinstance(data, bytes) else json.dumps(data).encode()
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                "Content-Type: application/json", f"Content-Length: {len(payload)}",
                "Connection: keep-alive", f"x-request-id: req_{req.index}", f"request-id: req_{req.index}"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        req.status = status  # before writing: the client may look at it as soon as it has the answer
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
            await writer.drain()
        except (ConnectionError, RuntimeError):
            return False
        return True


def fetch_stats(root_url: str) -> dict:
    """Counters of a stub running elsewhere (e.g. `python -m tests.stub_server` in another process)."""
    import urllib.request

    with urllib.request.urlopen(root_url + STATS_PATH, timeout=10) as r:
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> None:
    """Run a stub in the foreground: prints `PORT <n>` once listening; stops on stdin EOF or Ctrl-C."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=0.0, help="answer latency in seconds")
    ap.add_argument("--no-record-bodies", action="store_true")
    a = ap.parse_args(argv)
    with StubServer(delay_s=a.delay, record_bodies=not a.no_record_bodies) as s:
        print(f"PORT {s.port}", flush=True)
        try:
            sys.stdin.read()  # the parent closes our stdin to stop us
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

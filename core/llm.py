"""Chat models: spec strings, the OpenAI and Anthropic providers, usage and cost.

A `ChatModel` knows how to make one call (`acomplete`); a `Completion` is what came back.
Caching and concurrency live in `core/runner.py`; keys never leave this module's clients.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ipaddress
import itertools
import os
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from urllib.parse import urlsplit
from typing import Any, Callable, Protocol

from .checks import CheckError, check_base_url

OLLAMA_BASE_URL = "http://localhost:11434/v1"
PROVIDERS = ("openai", "anthropic", "ollama", "openai-compatible")

# USD per 1M tokens (input, output), standard tier, as listed on the providers' pricing pages
# (https://platform.openai.com/docs/pricing, https://platform.claude.com/docs/en/about-claude/pricing).
# A model is priced by its exact entry first (DATED_PRICES, then PRICES), then by the longest PRICES entry
# its name starts with (gpt-4o-mini-2024-07-18 -> gpt-4o-mini, claude-3-5-haiku-latest -> claude-3-5-haiku).
PRICES_DATE = "2025-10-15"  # override in Settings (or PGS_PRICES for pgs) when the providers change them
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    # added 2026-12-01 from Anthropic's model pages: later Opus 4 models list for a third of claude-opus-4's price
    "claude-opus-4-5": (5.00, 25.00),
    "claude-opus-4-6": (5.00, 25.00),
    "claude-opus-4-8": (5.00, 25.00),
}
# Snapshots whose list price differs from their family's (OpenAI pricing page, older models; checked 2026-12-01).
DATED_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-3.5-turbo-1106": (1.00, 2.00),
    "gpt-3.5-turbo-0613": (1.50, 2.00),
    "gpt-3.5-turbo-16k-0613": (3.00, 4.00),
}
_price_overrides: dict[str, tuple[float, float]] = {}


CUT_OFF_REASONS = ("length", "max_tokens")


def is_cut_off(finish_reason: str | None) -> bool:
    """Whether a finish/stop reason means the reply hit the token limit."""
    return (finish_reason or "") in CUT_OFF_REASONS


class LLMError(RuntimeError):
    """A provider problem the user must fix (bad key, unknown model, unreachable server)."""


# What a person can do about a failure, phrased per surface. Core messages end with the "core" phrase;
# each surface swaps it for one naming its own controls (`for_surface`), so a message never names a CLI
# flag in the app or a Settings field in a terminal.
HINTS: dict[str, dict[str, str]] = {
    "timeout": {"core": "Raise the timeout per call, then run it again.",
                "app": "Raise the timeout in Settings → Calls → Timeout per call (also in Setup → Models), "
                       "then run it again.",
                "cli": "Raise it with --timeout SECONDS, then run it again."},
    "connection": {"core": "Check that the server is running and its base URL is right, then run it again.",
                   "app": "Check that the server is running and its base URL in Setup → Models (Settings → "
                          "Probe lists what it serves), then run it again.",
                   "cli": "Check that the server is running and --base-url, then run it again."},
    "rate_limit": {"core": "Lower the number of concurrent calls, or wait a minute and run it again.",
                   "app": "Lower Settings → Calls → Concurrent calls per provider, or wait a minute and run it again.",
                   "cli": "Lower --concurrency, or wait a minute and run it again."},
    "base_url": {"core": "Give the server's base URL.",
                 "app": "Type the server's base URL in Setup → Models (Base URL), or probe it in Settings.",
                 "cli": "Pass --base-url URL, or set OPENAI_BASE_URL."},
}


def for_surface(text: str, surface: str) -> str:
    """A core message with its hint phrased for `surface` ("app" or "cli")."""
    for by_surface in HINTS.values():
        if by_surface["core"] in text and surface in by_surface:
            text = text.replace(by_surface["core"], by_surface[surface])
    return text


class AuthError(LLMError):
    """The provider rejected the credentials: the whole batch stops."""


@dataclass(frozen=True)
class ModelSpec:
    provider: str  # one of PROVIDERS, or one a plugin registered
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def is_local(self) -> bool:
        return self.provider in ("ollama", "openai-compatible")


def parse_spec(spec: str, base_url: str | None = None) -> ModelSpec:
    """'openai:gpt-4o-mini', 'anthropic:claude-3-5-haiku-latest', 'ollama:llama3.2',
    'openai-compatible:<model>' (needs base_url). A base_url given with 'openai:' makes
    it an OpenAI-compatible server."""
    spec = (spec or "").strip()
    if ":" not in spec:
        raise LLMError(f"Model spec '{spec}' needs a provider prefix, e.g. openai:gpt-4o-mini "
                       f"(providers: {', '.join(PROVIDERS)}).")
    provider, model = spec.split(":", 1)
    provider, model = provider.strip().lower(), model.strip()
    _load_plugins()
    if not model:
        raise LLMError(f"Model spec '{spec}' has no model name after '{provider}:'.")
    if provider not in PROVIDERS and provider not in _registry:
        raise LLMError(f"Unknown provider '{provider}' in '{spec}'. Use one of: {', '.join(PROVIDERS)}.")
    base_url = (base_url or "").strip() or None
    if provider == "ollama":
        base_url = base_url or os.environ.get("OLLAMA_BASE_URL") or OLLAMA_BASE_URL
    if provider == "openai-compatible" and not base_url:
        base_url = os.environ.get("OPENAI_BASE_URL") or None
        if not base_url:
            raise LLMError(f"openai-compatible models need a base URL. {HINTS['base_url']['core']}")
    if base_url:
        try:
            check_base_url(base_url)
        except CheckError as exc:
            raise LLMError(str(exc)) from None
    return ModelSpec(provider, model, base_url)


@dataclass(frozen=True)
class Request:
    """One chat call. Everything but `use_cache` and `tag` shapes the answer and the cache key."""

    messages: tuple[tuple[str, str], ...]  # (role, content); role "system" goes where each API wants it
    temperature: float = 0.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    sample: int = 0  # sample index: distinct, reproducible draws at temperature > 0
    use_cache: bool = True
    tag: str = ""  # what the call is for ("forward", "gradient", ...); not part of the key

    @staticmethod
    def chat(system: str | None, user: str, **kw: Any) -> "Request":
        msgs = ((("system", system),) if system else ()) + (("user", user),)
        return Request(messages=msgs, **kw)

    def key_fields(self) -> dict:
        return {
            "messages": [list(m) for m in self.messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "sample": self.sample,
        }


@dataclass
class Completion:
    text: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0  # what this call cost now (0 for a cache hit)
    saved_usd: float = 0.0  # what a cache hit would have cost
    latency_s: float = 0.0
    cached: bool = False
    error: str | None = None
    model: str = ""
    key: str = ""
    finish_reason: str = ""  # as the provider said: "stop", "length" (OpenAI), "end_turn", "max_tokens" (Anthropic)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def cut_off(self) -> bool:
        """The reply stopped at max_tokens: whatever it was writing is unfinished."""
        return is_cut_off(self.finish_reason)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "Completion":
        return Completion(**{k: d[k] for k in Completion.__dataclass_fields__ if k in d})


def set_price_overrides(prices: dict[str, tuple[float, float]]) -> None:
    """Process-wide USD per 1M tokens (input, output) by model name (pgs: PGS_PRICES); replaces earlier ones.
    The app passes each browser session's overrides to `price_for` instead."""
    _price_overrides.clear()
    _price_overrides.update({k: (float(v[0]), float(v[1])) for k, v in prices.items()})


def price_for(spec: ModelSpec, overrides: dict | None = None) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens: an override by model name, $0 for local servers, a registered
    provider's price, the exact table entry, then the longest entry the name starts with; None when unknown."""
    for table in (overrides or {}, _price_overrides):
        if spec.model in table:
            return (float(table[spec.model][0]), float(table[spec.model][1]))
    if spec.is_local or (spec.provider == "openai" and spec.base_url):
        return (0.0, 0.0)
    if spec.provider in _provider_prices:
        return _provider_prices[spec.provider]
    exact = DATED_PRICES.get(spec.model) or PRICES.get(spec.model)
    if exact is not None:
        return exact
    best = None
    for name, price in PRICES.items():  # longest prefix wins: dated names share their family's price
        if spec.model.startswith(name) and (best is None or len(name) > len(best[0])):
            best = (name, price)
    return best[1] if best else None


def cost_of(spec: ModelSpec, input_tokens: int, output_tokens: int,
            price: tuple[float, float] | None = None) -> float:
    """USD for a call: at `price` (a session's snapshot) when given, else at `price_for(spec)`; $0 when unknown."""
    price = price if price is not None else price_for(spec)
    if price is None:
        return 0.0
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


def estimate_tokens(text: str) -> int:
    """Offline estimate (about 4 characters a token); tiktoken cannot fetch its tables here."""
    return max(1, (len(text) + 3) // 4)


def redact(text: str, secrets: list[str | None]) -> str:
    """Remove every secret, and any long token that shares its first 8 characters, from text."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
            if len(s) >= 12:
                text = re.sub(re.escape(s[:8]) + r"[\w\-\.\*]*", "***", text)
    return text


class ChatModel(Protocol):
    spec: ModelSpec

    async def acomplete(self, req: Request) -> Completion: ...

    async def aclose(self) -> None: ...


# ---------- timeouts: chosen for the server ----------
HOSTED_TIMEOUT_S = 60.0  # api.openai.com / api.anthropic.com answer a call well within a minute
LOCAL_TIMEOUT_S = 600.0  # a local or self-hosted model on a CPU may take minutes for one long reply
HOSTED_API_HOSTS = ("api.openai.com", "api.anthropic.com")
DEFAULT_ENDPOINTS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}


def is_hosted_api(base_url: str | None) -> bool:
    """Whether calls go to OpenAI's or Anthropic's own API (no base URL, or one on their hosts)."""
    if not base_url:
        return True
    host = (urlsplit(base_url.strip()).hostname or "").lower().rstrip(".")
    return host in HOSTED_API_HOSTS


def is_private_host(base_url: str | None) -> bool:
    """127.0.0.1, localhost, ::1, private and link-local ranges, *.local: a server on this machine or network."""
    host = (urlsplit((base_url or "").strip()).hostname or "").lower().rstrip(".")
    if host in ("localhost",) or host.endswith((".localhost", ".local")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def default_timeout(spec: ModelSpec) -> float:
    """Seconds per call for this server: short for the hosted APIs, long for local and other compatible servers."""
    if spec.is_local or not is_hosted_api(spec.base_url):
        return LOCAL_TIMEOUT_S
    return HOSTED_TIMEOUT_S


def server_text(spec: ModelSpec) -> str:
    """The URL a model's calls go to, for messages."""
    return spec.base_url or DEFAULT_ENDPOINTS.get(spec.provider, spec.provider)


def call_name(tag: str) -> str:
    """'textgrad.gradient' -> 'gradient': what a call is for, in words."""
    return (tag or "").rsplit(".", 1)[-1].replace("_", " ")


# ---------- retries: visible while they happen ----------
@dataclass(frozen=True)
class RetryNotice:
    """The SDK is about to wait and try a call again."""

    attempt: int  # the attempt about to start: 2 is the first retry
    attempts: int  # attempts in all (retries + 1)
    wait_s: float
    reason: str  # "rate limited (HTTP 429)", "no answer within 60 s", ...
    server: str
    tag: str = ""

    def text(self) -> str:
        what = f"{call_name(self.tag)} call" if self.tag else "call"
        return (f"{what} to {self.server}: {self.reason}; retrying in {self.wait_s:.0f} s, "
                f"attempt {self.attempt} of {self.attempts}")


RetryFn = Callable[[RetryNotice], None]


# ---------- streamed text: readable while it is written ----------
@dataclass(frozen=True)
class TextSoFar:
    """A streamed reply as written so far (for display only: the Completion is what gets recorded)."""

    call: int  # one number per call in this process, so concurrent calls are told apart
    tag: str  # what the call is for: 'textgrad.gradient', 'protegi.edit', ...
    text: str
    done: bool = False  # the whole reply (its text is the completion's)


TextFn = Callable[[TextSoFar], None]
TEXT_EVERY_S = 0.1  # at most ~10 updates a second per call, plus one at the end
_call_numbers = itertools.count(1)


class _TextSink:
    """One call's `ClientOptions.on_text`, throttled; a failing display callback never breaks the call."""

    def __init__(self, fn: TextFn, tag: str):
        self.fn, self.tag, self.call = fn, tag, next(_call_numbers)
        self._last: float | None = None

    def grow(self, parts: list[str]) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last >= TEXT_EVERY_S:
            self._last = now
            self._send("".join(parts), False)

    def finish(self, text: str) -> None:
        self._send(text, True)

    def _send(self, text: str, done: bool) -> None:
        try:
            self.fn(TextSoFar(self.call, self.tag, text, done))
        except Exception:  # noqa: BLE001 - display only
            pass


def _text_sink() -> _TextSink | None:
    """The running call's text sink (set by `acomplete` when the options have `on_text`)."""
    ctx = _current_call.get()
    return ctx.text if ctx is not None else None


@dataclass
class ClientOptions:
    timeout_s: float | None = None  # per call (with streaming: to the first byte and between chunks); None: chosen for the server
    max_retries: int = 4
    stream: bool = True  # stream replies (falls back to one plain call, and remembers, if a server refuses)
    on_retry: RetryFn | None = field(default=None, repr=False, compare=False)  # called before each SDK retry
    on_text: TextFn | None = field(default=None, repr=False, compare=False)  # a streamed reply as it is written

    def timeout_for(self, spec: ModelSpec) -> float:
        return float(self.timeout_s) if self.timeout_s else default_timeout(spec)


@dataclass(frozen=True)
class _CallContext:
    options: ClientOptions
    server: str
    tag: str
    timeout_s: float
    text: _TextSink | None = None


_current_call: contextvars.ContextVar[_CallContext | None] = contextvars.ContextVar("pgs_current_call", default=None)


def _retry_reason(response: Any, exc: BaseException | None, timeout_s: float) -> str:
    if response is not None:
        code = getattr(response, "status_code", 0)
        return f"rate limited (HTTP {code})" if code == 429 else f"server error (HTTP {code})"
    if exc is not None and "timeout" in type(exc).__name__.lower():
        return f"no answer within {timeout_s:g} s"
    return "no connection" if exc is None else f"no connection ({type(exc).__name__})"


@functools.lru_cache(maxsize=None)
def _visible_retries(client_cls: type) -> type:
    """The SDK client, telling `ClientOptions.on_retry` before each retry it sleeps for (its own backoff)."""

    class Client(client_cls):  # type: ignore[misc, valid-type]
        async def _sleep_for_retry(self, *, retries_taken: int, max_retries: int, options: Any,
                                   response: Any) -> None:
            ctx = _current_call.get()
            if ctx is None or ctx.options.on_retry is None:
                return await super()._sleep_for_retry(retries_taken=retries_taken, max_retries=max_retries,
                                                       options=options, response=response)
            wait = self._calculate_retry_timeout(max_retries - retries_taken, options,
                                                 response.headers if response is not None else None)
            notice = RetryNotice(retries_taken + 2, max_retries + 1, float(wait),
                                 _retry_reason(response, sys.exc_info()[1], ctx.timeout_s), ctx.server, ctx.tag)
            try:
                ctx.options.on_retry(notice)
            except Exception:  # noqa: BLE001 - a display callback never breaks a call
                pass
            await asyncio.sleep(wait)

    Client.__name__ = Client.__qualname__ = client_cls.__name__
    return Client


# Servers that refused a streamed call but answered a plain one: later calls to them are not streamed.
_non_streaming: set[str] = set()
STREAM_REFUSED = (404, 405, 415, 501)  # the endpoint or the streamed form is not there
STREAM_MAYBE_REFUSED = (400, 422)  # a bad request: about streaming only when the server's message says so


class _NoStream(Exception):
    """The server answered a streamed request with no events (it ignored `stream`), or ended the stream without
    a finish reason: cut off, as llama-cpp-python's server does to a stream when the next request arrives. The
    call is sent once more without streaming, and the server remembered as one not to stream to."""


def _refuses_stream(exc: BaseException) -> bool:
    """A refused stream (tried once plainly), not a bad request such as a prompt over the context length,
    which would fail the same way plainly and only double the calls."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, _NoStream) or status in STREAM_REFUSED:
        return True
    return status in STREAM_MAYBE_REFUSED and "stream" in str(exc).lower()


class _ProviderBase:
    """Lazily builds one async SDK client per event loop; keys are read, never stored elsewhere."""

    def __init__(self, spec: ModelSpec, api_key: str | None = None, options: ClientOptions | None = None,
                 price: tuple[float, float] | None = None):
        self.spec = spec
        self._api_key = api_key
        self.options = options or ClientOptions()
        self.price = price  # USD per 1M tokens this session pays (its snapshot); None: the table's
        self._client: Any = None
        self._loop: Any = None

    @property
    def timeout_s(self) -> float:
        """Seconds per call for this model's server (the option, or the server's default)."""
        return self.options.timeout_for(self.spec)

    @property
    def streams(self) -> bool:
        """Whether the next call is streamed."""
        return self.options.stream and server_text(self.spec) not in _non_streaming

    def _secrets(self) -> list[str | None]:
        return [self._api_key, os.environ.get("OPENAI_API_KEY"), os.environ.get("ANTHROPIC_API_KEY")]

    def _get_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._make_client(), loop
        return self._client

    def _make_client(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    async def aclose(self) -> None:
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            try:
                await client.close()
            except Exception:
                pass

    def _error(self, exc: BaseException, req: Request) -> Completion:
        msg = redact(self._failure_text(exc, req), self._secrets())
        return Completion(error=msg[:500], model=str(self.spec))

    def _failure_text(self, exc: BaseException, req: Request) -> str:
        """What happened, to which server, and what to do (the hint in core words; see `for_surface`)."""
        name, server = type(exc).__name__, server_text(self.spec)
        what = f" ({call_name(req.tag)} call)" if req.tag else ""
        if name == "APITimeoutError":
            return f"The call to {server} timed out after {self.timeout_s:g} s{what}. {HINTS['timeout']['core']}"
        if name == "APIConnectionError":
            return f"The call to {server} could not connect{what} ({name}: {exc}). {HINTS['connection']['core']}"
        if name == "RateLimitError":
            return f"{server} kept refusing the call with HTTP 429{what} ({name}: {exc}). {HINTS['rate_limit']['core']}"
        return f"{name}: {exc}"

    async def acomplete(self, req: Request) -> Completion:
        t0 = time.perf_counter()
        sink = _TextSink(self.options.on_text, req.tag) if self.options.on_text is not None else None
        token = _current_call.set(_CallContext(self.options, server_text(self.spec), req.tag, self.timeout_s, sink))
        try:
            client = self._get_client()
            text, tin, tout, reason = await self._call_once(client, req)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a result
            if self._is_auth_error(exc):
                raise AuthError(f"{self.spec.provider} rejected the API key (authentication failed). "
                                f"Check {self._key_env()} or the key in Settings.") from None
            return self._error(exc, req)
        finally:
            _current_call.reset(token)
        return Completion(text=text, input_tokens=tin, output_tokens=tout,
                          cost_usd=cost_of(self.spec, tin, tout, self.price),
                          latency_s=time.perf_counter() - t0, model=str(self.spec), finish_reason=reason)

    async def _call_once(self, client: Any, req: Request) -> tuple[str, int, int, str]:
        """Streamed when the server allows; a refused stream is tried once plainly, and remembered if that works."""
        if not self.streams:
            return await self._call(client, req, stream=False)
        try:
            return await self._call(client, req, stream=True)
        except Exception as exc:  # noqa: BLE001
            if not _refuses_stream(exc) or self._is_auth_error(exc):
                raise
        out = await self._call(client, req, stream=False)
        _non_streaming.add(server_text(self.spec))
        return out

    async def _call(self, client: Any, req: Request, stream: bool) -> tuple[str, int, int, str]:  # pragma: no cover
        raise NotImplementedError

    def _key_env(self) -> str:
        return "OPENAI_API_KEY"

    @staticmethod
    def _is_auth_error(exc: BaseException) -> bool:
        return type(exc).__name__ in ("AuthenticationError", "PermissionDeniedError")


def _checked(text: str) -> str:
    if not text.strip():
        raise LLMError("The model returned empty content.")
    return text


class OpenAIModel(_ProviderBase):
    """OpenAI Chat Completions, and any OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio)."""

    def _make_client(self) -> Any:
        from openai import AsyncOpenAI

        key = self._api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.spec.base_url:  # local servers accept any key
                key = "not-needed"
            else:
                raise LLMError("No OpenAI key: set OPENAI_API_KEY or enter a key in Settings.")
        return _visible_retries(AsyncOpenAI)(api_key=key, base_url=self.spec.base_url or None,
                                             timeout=self.timeout_s, max_retries=self.options.max_retries)

    async def _call(self, client: Any, req: Request, stream: bool) -> tuple[str, int, int, str]:
        kw: dict[str, Any] = {}
        if req.stop:
            kw["stop"] = list(req.stop)
        if stream:
            kw.update(stream=True, stream_options={"include_usage": True})
        resp = await client.chat.completions.create(
            model=self.spec.model,
            messages=[{"role": r, "content": c} for r, c in req.messages],
            temperature=req.temperature, max_tokens=req.max_tokens, **kw)
        if stream:
            text, reason, usage = await self._read_stream(resp)
        else:
            if not resp.choices:
                raise LLMError("The server returned no choices.")
            text = resp.choices[0].message.content or ""
            reason = str(getattr(resp.choices[0], "finish_reason", "") or "")
            usage = resp.usage
        tin = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else 0
        tout = int(getattr(usage, "completion_tokens", 0) or 0) if usage else 0
        if not usage:  # some compatible servers omit usage: estimate rather than report zero
            tin = sum(estimate_tokens(c) for _, c in req.messages)
            tout = estimate_tokens(text) if text else 0
        return _checked(text), tin, tout, reason

    @staticmethod
    async def _read_stream(stream: Any) -> tuple[str, str, Any]:
        """(text, finish reason, usage) from chat.completion.chunk events; usage comes in the last one."""
        parts: list[str] = []
        reason, usage, events, choices = "", None, 0, 0
        sink = _text_sink()
        try:
            async for chunk in stream:
                events += 1
                usage = getattr(chunk, "usage", None) or usage
                for ch in getattr(chunk, "choices", None) or []:
                    choices += 1
                    delta = getattr(ch, "delta", None)
                    if delta is not None and getattr(delta, "content", None):
                        parts.append(delta.content)
                        if sink is not None:
                            sink.grow(parts)
                    reason = str(getattr(ch, "finish_reason", "") or "") or reason
        finally:
            await stream.close()
        if not events:
            raise _NoStream()
        if not choices:
            raise LLMError("The server returned no choices.")
        if not reason:  # the stream was cut off: its text may be partial, so it is never recorded as a reply
            raise _NoStream()
        text = "".join(parts)
        if sink is not None:
            sink.finish(text)
        return text, reason, usage


MAX_RETRY_AFTER_S = 120.0  # as the openai SDK does: a longer Retry-After fails the call, never stalls a batch


@functools.lru_cache(maxsize=None)
def _bounded_retry_after(client_cls: type) -> type:
    """The anthropic SDK sleeps for any Retry-After (up to 49 days); refuse to retry past MAX_RETRY_AFTER_S."""

    class Client(client_cls):  # type: ignore[misc, valid-type]
        def _should_retry(self, response: Any) -> bool:
            wait = self._parse_retry_after_header(response.headers)
            if wait is not None and wait > MAX_RETRY_AFTER_S:
                return False
            return super()._should_retry(response)

    Client.__name__ = Client.__qualname__ = client_cls.__name__
    return Client


def _accepts_temperature(create: Any) -> bool:
    """Whether this anthropic SDK's `messages.create` still takes `temperature` (removed in 1.0)."""
    import inspect

    try:
        return "temperature" in inspect.signature(create).parameters
    except (TypeError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def _installed_anthropic_takes_temperature() -> bool:
    try:
        from anthropic.resources.messages import AsyncMessages
    except Exception:  # noqa: BLE001 - no SDK: nothing is sent at all
        return False
    return _accepts_temperature(AsyncMessages.create)


def anthropic_sends_temperature(create: Any = None) -> bool:
    """Whether Anthropic calls carry `temperature` (the installed SDK's `messages.create`, or the one given).
    The cache key follows this, so it holds only what is actually sent."""
    return _accepts_temperature(create) if create is not None else _installed_anthropic_takes_temperature()


class AnthropicModel(_ProviderBase):
    """Anthropic Messages API; the system prompt goes in `system=`."""

    def _key_env(self) -> str:
        return "ANTHROPIC_API_KEY"

    def _secrets(self) -> list[str | None]:
        return super()._secrets()

    def _make_client(self) -> Any:
        from anthropic import AsyncAnthropic

        key = self._api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise LLMError("No Anthropic key: set ANTHROPIC_API_KEY or enter a key in Settings.")
        kw: dict[str, Any] = {}
        if self.spec.base_url:
            kw["base_url"] = self.spec.base_url
        return _bounded_retry_after(_visible_retries(AsyncAnthropic))(
            api_key=key, timeout=self.timeout_s, max_retries=self.options.max_retries, **kw)

    async def _call(self, client: Any, req: Request, stream: bool) -> tuple[str, int, int, str]:
        system = "\n\n".join(c for r, c in req.messages if r == "system")
        msgs = [{"role": r, "content": c} for r, c in req.messages if r != "system"]
        kw: dict[str, Any] = {}
        if system:
            kw["system"] = system
        if req.stop:
            kw["stop_sequences"] = list(req.stop)
        if anthropic_sends_temperature(client.messages.create):
            # anthropic>=1.0 removed `temperature` (TypeError); its API version 2026-10-21 answers 400 to it
            kw["temperature"] = req.temperature
        if stream:
            kw["stream"] = True
        resp = await client.messages.create(model=self.spec.model, messages=msgs,
                                            max_tokens=req.max_tokens, **kw)
        if stream:
            text, tin, tout, reason = await self._read_stream(resp)
        else:
            text = "".join(getattr(b, "text", "") for b in (resp.content or []))
            usage = resp.usage
            tin = int(getattr(usage, "input_tokens", 0) or 0)
            tout = int(getattr(usage, "output_tokens", 0) or 0)
            reason = str(getattr(resp, "stop_reason", "") or "")
        return _checked(text), tin, tout, reason

    @staticmethod
    async def _read_stream(stream: Any) -> tuple[str, int, int, str]:
        """(text, input tokens, output tokens, stop reason) from Messages stream events: usage starts in
        message_start and its final counts come in message_delta."""
        parts: list[str] = []
        tin = tout = events = 0
        reason = ""
        sink = _text_sink()
        try:
            async for ev in stream:
                events += 1
                kind = getattr(ev, "type", "")
                if kind == "message_start":
                    u = getattr(getattr(ev, "message", None), "usage", None)
                    tin = int(getattr(u, "input_tokens", 0) or 0)
                    tout = int(getattr(u, "output_tokens", 0) or 0)
                elif kind == "content_block_delta" and getattr(ev.delta, "type", "") == "text_delta":
                    parts.append(ev.delta.text or "")
                    if sink is not None:
                        sink.grow(parts)
                elif kind == "message_delta":
                    reason = str(getattr(ev.delta, "stop_reason", "") or "") or reason
                    u = getattr(ev, "usage", None)
                    tout = int(getattr(u, "output_tokens", None) or tout)
                    tin = int(getattr(u, "input_tokens", None) or tin)  # newer API versions repeat it here
        finally:
            await stream.close()
        if not events or not reason:  # no events, or cut off before message_delta's stop reason
            raise _NoStream()
        text = "".join(parts)
        if sink is not None:
            sink.finish(text)
        return text, tin, tout, reason


# Providers beyond PROVIDERS: added by `register_provider`, which plugins call from an entry point.
PLUGIN_GROUP = "prompt_gradient_studio.providers"
_registry: dict[str, Callable[..., ChatModel]] = {}
_provider_prices: dict[str, tuple[float, float]] = {}


def register_provider(name: str, factory: Callable[..., ChatModel], price: tuple[float, float] | None = None) -> None:
    """Add a provider; `price` (USD per 1M tokens) is what its models charge, so USD budgets can be kept."""
    _registry[name] = factory
    if price is not None:
        _provider_prices[name] = (float(price[0]), float(price[1]))


def registered_providers() -> tuple[str, ...]:
    """The providers plugins (or callers) registered, beyond the built-in PROVIDERS."""
    _load_plugins()
    return tuple(sorted(_registry))


_plugins_lock = threading.RLock()
_plugins_loaded = False


def _load_plugins() -> None:
    """Call each PLUGIN_GROUP entry point's object once; one that fails is one warning line naming it."""
    global _plugins_loaded
    with _plugins_lock:
        if _plugins_loaded:
            return
        _plugins_loaded = True
        for ep in entry_points(group=PLUGIN_GROUP):
            try:
                ep.load()()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the app or the CLI
                reason = redact(" ".join(f"{type(exc).__name__}: {exc}".split()),
                                [os.environ.get("OPENAI_API_KEY"), os.environ.get("ANTHROPIC_API_KEY")])[:300]
                print(f"pgs: warning: provider plugin '{ep.name}' ({ep.value}) was not loaded: {reason}",
                      file=sys.stderr, flush=True)


def make_model(spec: str | ModelSpec, base_url: str | None = None, api_key: str | None = None,
               options: ClientOptions | None = None, price: tuple[float, float] | None = None) -> ChatModel:
    """Build a ChatModel from a spec string (keys come from api_key or the environment); `price` fixes what
    its calls cost (a session's snapshot), else the price table decides."""
    _load_plugins()
    s = spec if isinstance(spec, ModelSpec) else parse_spec(spec, base_url)
    if s.provider in _registry:
        return _registry[s.provider](s)
    if s.provider == "anthropic":
        return AnthropicModel(s, api_key, options, price)
    return OpenAIModel(s, api_key, options, price)


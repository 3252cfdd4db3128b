"""Batch pricing for big runs: the requests a run needs, sent as one OpenAI Batch API job (files + batches
endpoints) or one Anthropic Message Batch (half price, results within 24 hours) instead of one call each.

Cached answers are used first; the rest go in one JSONL file, uploaded and submitted. The batch id is recorded
(<cache>/batches/<hash of the requests>.json, written atomically) before the first poll, so a run that is killed
while it waits picks the same batch up again instead of paying twice. Answers are stored in the response cache
like any call's; failed ones are returned as errors (never cached).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .cache import ResponseCache, cache_key
from .llm import Completion, LLMError, ModelSpec, Request, anthropic_sends_temperature, cost_of, redact
from .progress import Progress
from .runner import BatchResult

BATCH_DISCOUNT = 0.5  # OpenAI bills Batch API tokens at half the synchronous price
ENDPOINT = "/v1/chat/completions"
DONE = ("completed", "failed", "expired", "cancelled")
BATCH_PROVIDERS = ("openai", "openai-compatible", "anthropic")


@dataclass
class BatchRecord:
    """A submitted batch, as recorded so a later run can resume it."""

    batch_id: str
    input_file_id: str
    model: str
    base_url: str | None
    requests: int
    submitted: float


@dataclass
class BatchStatus:
    """One poll: the batch's status and its request counts."""

    batch_id: str
    status: str
    completed: int
    failed: int
    total: int
    resumed: bool = False


def batch_body(spec: ModelSpec, req: Request) -> dict:
    """The Chat Completions body of one request, as OpenAIModel sends it."""
    body: dict[str, Any] = {"model": spec.model, "messages": [{"role": r, "content": c} for r, c in req.messages],
                            "temperature": req.temperature, "max_tokens": req.max_tokens}
    if req.stop:
        body["stop"] = list(req.stop)
    return body


def requests_hash(spec: ModelSpec, keys: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([spec.provider, spec.base_url or "", spec.model, list(keys)]).encode()).hexdigest()[:32]


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(digest: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(digest, threading.Lock())


class BatchRunner:
    """Runs requests as one Batch API job with the real `openai` SDK (sync client); `poll_s` between polls."""

    KEY_ENV = "OPENAI_API_KEY"  # redacted from SDK errors, with the key given

    def __init__(self, spec: ModelSpec, *, cache: ResponseCache | None, record_dir: Path | str, api_key: str | None = None,
                 price: tuple[float, float] | None = None, poll_s: float = 30.0, timeout_s: float = 60.0,
                 max_wait_s: float = 26 * 3600):
        if spec.provider not in BATCH_PROVIDERS:
            raise LLMError(f"Batch pricing needs an OpenAI or Anthropic model (openai:, openai-compatible:, "
                           f"anthropic:), not {spec.provider}.")
        self.spec, self.cache, self.record_dir = spec, cache, Path(record_dir)
        self.price, self.poll_s, self.max_wait_s = price, poll_s, max_wait_s
        self._api_key, self._timeout = api_key, timeout_s
        self._client: Any = None

    # ---------- the SDK ----------
    def client(self) -> Any:
        if self._client is None:
            from openai import OpenAI

            key = self._api_key or os.environ.get("OPENAI_API_KEY")
            if not key:
                if not self.spec.base_url:
                    raise LLMError("No OpenAI key: set OPENAI_API_KEY or enter a key in Settings.")
                key = "not-needed"
            self._client = OpenAI(api_key=key, base_url=self.spec.base_url or None, timeout=self._timeout)
        return self._client

    def _sdk(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except LLMError:
            raise
        except Exception as exc:  # noqa: BLE001 - an SDK or network failure is one line, key redacted
            secrets = [self._api_key, os.environ.get(self.KEY_ENV)]
            raise LLMError(redact(f"The batch {what} failed ({type(exc).__name__}: {exc})", secrets)[:500]) from None

    # ---------- the record ----------
    def _record_path(self, digest: str) -> Path:
        return self.record_dir / f"{digest}.json"

    def _load_record(self, digest: str) -> BatchRecord | None:
        try:
            d = json.loads(self._record_path(digest).read_text(encoding="utf-8"))
            return BatchRecord(**d)
        except (OSError, ValueError, TypeError):
            return None

    def _save_record(self, digest: str, rec: BatchRecord) -> None:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".batch-", dir=self.record_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(asdict(rec), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._record_path(digest))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _forget(self, digest: str) -> None:
        try:
            self._record_path(digest).unlink()
        except OSError:
            pass

    # ---------- the run ----------
    def run(self, requests: Sequence[Request], *, on_status: Callable[[BatchStatus], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> list[Completion]:
        """One completion per request, in order: cache hits, then the batch's answers (cached as they land)."""
        keys = [cache_key(self.spec, r) for r in requests]
        with _lock_for(requests_hash(self.spec, keys)):  # the same requests from two threads: one batch
            return self._run(requests, keys, on_status, sleep)

    def _run(self, requests, keys, on_status, sleep) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        for i, (k, r) in enumerate(zip(keys, requests)):
            hit = self.cache.get(k) if (self.cache is not None and r.use_cache) else None
            if hit is not None:
                out[i] = hit
        pending = [i for i, c in enumerate(out) if c is None]
        if pending:
            # custom ids are request numbers in this batch (a cache key may repeat)
            digest = requests_hash(self.spec, [keys[i] for i in pending])
            rec = self._load_record(digest)
            resumed = rec is not None
            if rec is None:
                rec = self._submit([requests[i] for i in pending])
                self._save_record(digest, rec)
            batch = self._wait(rec, resumed, on_status, sleep)
            answers = self._results(batch)
            for n, i in enumerate(pending):
                c = answers.get(f"r{n}") or Completion(
                    error=f"The batch {rec.batch_id} ended '{batch.status}' without an answer for this request.",
                    model=str(self.spec))
                c.key = keys[i]
                if c.error is None and self.cache is not None and requests[i].use_cache:
                    self.cache.put(keys[i], c)
                out[i] = c
            self._forget(digest)
        return [c for c in out if c is not None]

    def _submit(self, requests: Sequence[Request]) -> BatchRecord:
        lines = [json.dumps({"custom_id": f"r{n}", "method": "POST", "url": ENDPOINT,
                             "body": batch_body(self.spec, r)}, ensure_ascii=False) for n, r in enumerate(requests)]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        client = self.client()
        f = self._sdk("upload", lambda: client.files.create(file=("pgs-batch.jsonl", data), purpose="batch"))
        b = self._sdk("submission", lambda: client.batches.create(input_file_id=f.id, endpoint=ENDPOINT,
                                                                 completion_window="24h"))
        return BatchRecord(b.id, f.id, self.spec.model, self.spec.base_url, len(requests), time.time())

    def _wait(self, rec: BatchRecord, resumed: bool, on_status, sleep) -> Any:
        client = self.client()
        t0 = time.monotonic()
        while True:
            b = self._sdk("poll", lambda: self._retrieve(client, rec.batch_id))
            status = self._status(b, rec, resumed)
            if on_status:
                on_status(status)
            if status.status in self.done_states:
                return b
            if time.monotonic() - t0 > self.max_wait_s:
                raise LLMError(f"The batch {rec.batch_id} is still '{status.status}' after {self.max_wait_s / 3600:.0f} "
                               f"hours; run the same command again later to pick it up.")
            sleep(self.poll_s)

    done_states = DONE

    def _retrieve(self, client: Any, batch_id: str) -> Any:
        return client.batches.retrieve(batch_id)

    def _status(self, b: Any, rec: BatchRecord, resumed: bool) -> BatchStatus:
        counts = getattr(b, "request_counts", None)
        return BatchStatus(rec.batch_id, str(b.status), int(getattr(counts, "completed", 0) or 0),
                           int(getattr(counts, "failed", 0) or 0), int(getattr(counts, "total", 0) or rec.requests),
                           resumed)

    def _results(self, batch: Any) -> dict[str, Completion]:
        """Completions by custom id from the batch's output (and error) files."""
        client = self.client()
        out: dict[str, Completion] = {}
        for file_id in (getattr(batch, "output_file_id", None), getattr(batch, "error_file_id", None)):
            if not file_id:
                continue
            text = self._sdk("download", lambda: client.files.content(file_id).text)
            for line in text.splitlines():
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    out[str(row["custom_id"])] = self._completion(row)
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    def _completion(self, row: dict) -> Completion:
        resp, err = row.get("response") or {}, row.get("error")
        body = resp.get("body") or {}
        if err or int(resp.get("status_code") or 0) != 200:
            why = (err or {}).get("message") if isinstance(err, dict) else None
            why = why or (body.get("error") or {}).get("message") or f"status {resp.get('status_code')}"
            return Completion(error=f"batch request failed: {str(why)[:300]}", model=str(self.spec))
        choice = (body.get("choices") or [{}])[0]
        text = ((choice.get("message") or {}).get("content") or "")
        usage = body.get("usage") or {}
        tin, tout = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        if not text.strip():
            return Completion(error="The model returned empty content.", model=str(self.spec))
        return Completion(text=text, input_tokens=tin, output_tokens=tout,
                          cost_usd=BATCH_DISCOUNT * cost_of(self.spec, tin, tout, self.price), model=str(self.spec),
                          finish_reason=str(choice.get("finish_reason") or ""))


class AnthropicBatchRunner(BatchRunner):
    """The same run through Anthropic's Message Batches (messages/batches endpoints; half price)."""

    KEY_ENV = "ANTHROPIC_API_KEY"

    done_states = ("ended",)

    def client(self) -> Any:
        if self._client is None:
            from anthropic import Anthropic

            key = self._api_key or os.environ.get("ANTHROPIC_API_KEY")
            if not key:
                raise LLMError("No Anthropic key: set ANTHROPIC_API_KEY or enter a key in Settings.")
            self._client = Anthropic(api_key=key, base_url=self.spec.base_url or None, timeout=self._timeout)
        return self._client

    def _submit(self, requests: Sequence[Request]) -> BatchRecord:
        client = self.client()
        items = [{"custom_id": f"r{n}", "params": anthropic_params(self.spec, r)} for n, r in enumerate(requests)]
        b = self._sdk("submission", lambda: client.messages.batches.create(requests=items))
        return BatchRecord(b.id, "", self.spec.model, self.spec.base_url, len(requests), time.time())

    def _retrieve(self, client: Any, batch_id: str) -> Any:
        return client.messages.batches.retrieve(batch_id)

    def _status(self, b: Any, rec: BatchRecord, resumed: bool) -> BatchStatus:
        c = getattr(b, "request_counts", None)
        n = {k: int(getattr(c, k, 0) or 0) for k in ("processing", "succeeded", "errored", "canceled", "expired")}
        return BatchStatus(rec.batch_id, str(b.processing_status), n["succeeded"],
                           n["errored"] + n["canceled"] + n["expired"], sum(n.values()) or rec.requests, resumed)

    def _results(self, batch: Any) -> dict[str, Completion]:
        client = self.client()
        rows = self._sdk("download", lambda: list(client.messages.batches.results(batch.id)))
        out: dict[str, Completion] = {}
        for row in rows:
            res = row.result
            if getattr(res, "type", "") != "succeeded":
                err = getattr(getattr(getattr(res, "error", None), "error", None), "message", None)
                out[str(row.custom_id)] = Completion(error=f"batch request {getattr(res, 'type', '?')}: "
                                                           f"{str(err or 'no answer')[:300]}", model=str(self.spec))
                continue
            msg = res.message
            text = "".join(getattr(b, "text", "") or "" for b in (msg.content or []))
            tin, tout = int(msg.usage.input_tokens or 0), int(msg.usage.output_tokens or 0)
            out[str(row.custom_id)] = (Completion(error="The model returned empty content.", model=str(self.spec))
                                       if not text.strip() else Completion(
                text=text, input_tokens=tin, output_tokens=tout, model=str(self.spec),
                cost_usd=BATCH_DISCOUNT * cost_of(self.spec, tin, tout, self.price),
                finish_reason=str(getattr(msg, "stop_reason", "") or "")))
        return out


def anthropic_params(spec: ModelSpec, req: Request) -> dict:
    """The Messages API params of one request, as AnthropicModel sends them."""
    system = "\n\n".join(c for r, c in req.messages if r == "system")
    params: dict[str, Any] = {"model": spec.model, "max_tokens": req.max_tokens,
                              "messages": [{"role": r, "content": c} for r, c in req.messages if r != "system"]}
    if system:
        params["system"] = system
    if req.stop:
        params["stop_sequences"] = list(req.stop)
    if anthropic_sends_temperature():
        params["temperature"] = req.temperature
    return params


def batch_runner(spec: ModelSpec, **kw: Any) -> BatchRunner:
    """The batch runner for a model's provider (OpenAI Batch API, or Anthropic Message Batches)."""
    return (AnthropicBatchRunner if spec.provider == "anthropic" else BatchRunner)(spec, **kw)


class BatchAsRunner:
    """What a scoring job needs of a Runner (`cache`, `arun`), answered by one batch per `arun`: a study's test
    reveals at batch price. The batch waits in a worker thread, so the job's event loop stays free."""

    def __init__(self, *, cache: ResponseCache | None, record_dir: Path | str, poll_s: float = 30.0,
                 on_status: Callable[[BatchStatus], None] | None = None, timeout_s: float = 60.0):
        self.cache, self.record_dir, self.poll_s = cache, Path(record_dir), poll_s
        self.on_status, self.timeout_s = on_status, timeout_s

    async def arun(self, model: Any, requests: Sequence[Request], *, progress: Any = None, cancel: Any = None,
                   on_result: Callable[[Completion], None] | None = None, job: Any = None, phase: str = "") -> Any:
        runner = batch_runner(model.spec, cache=self.cache, record_dir=self.record_dir, poll_s=self.poll_s,
                             price=getattr(model, "price", None), timeout_s=self.timeout_s)
        if job is not None:
            job.ask(phase, len(requests))
        completions = await asyncio.to_thread(runner.run, list(requests), on_status=self.on_status)
        prog = Progress(total=len(requests))
        for c in completions:
            prog.add(c)
            if on_result:
                on_result(c)
            if job is not None:
                if not c.cached:
                    job.launch(phase)
                job.land(phase, c, None, sent=not c.cached)
        if progress:
            progress(prog)
        return BatchResult(completions, prog)

"""A stub of OpenAI's Batch API (files + batches endpoints) on 127.0.0.1, for the real `openai` SDK.

POST /v1/files (multipart, purpose=batch), POST /v1/batches, GET /v1/batches/{id}, GET /v1/files/{id}/content.
A batch moves validating -> in_progress -> completed over `polls_to_finish` polls (never while `hold` is set);
each line is answered by `responder(body)` (e.g. tests/fake_model.stub_responder), custom ids in `fail_ids`
come back as failed requests in the error file.
"""

from __future__ import annotations

import json
import threading
import time
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from tests.stub_server import default_usage


class BatchStub:
    def __init__(self, responder: Callable[[dict], str], *, polls_to_finish: int = 3):
        self.responder = responder
        self.polls_to_finish = polls_to_finish
        self.hold = False
        self.fail_ids: set[str] = set()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.uploads = 0
        self.chat_calls = 0
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "BatchStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, payload, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/files":
                    return self._send(200, stub._upload(self.headers.get("Content-Type", ""), body))
                if self.path == "/v1/batches":
                    return self._send(200, stub._create(json.loads(body)))
                if self.path == "/v1/messages/batches":  # Anthropic Message Batches
                    return self._send(200, stub._create_anthropic(json.loads(body), self._root()))
                if self.path == "/v1/chat/completions":  # the synchronous calls of a study's steps
                    with stub.lock:
                        stub.chat_calls += 1
                    return self._send(200, stub._answer(json.loads(body), "sync")["body"])
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _root(self) -> str:
                return f"http://127.0.0.1:{self.server.server_address[1]}"

            def do_GET(self):
                parts = self.path.strip("/").split("/")
                if len(parts) >= 4 and parts[1:3] == ["messages", "batches"]:
                    if len(parts) == 5 and parts[4] == "results":
                        with stub.lock:
                            data = stub.files.get(f"results-{parts[3]}")
                        return self._send(200, None, data) if data is not None else self._send(404, {"error": {}})
                    b = stub._poll_anthropic(parts[3])
                    return self._send(200, b) if b else self._send(404, {"error": {"message": "no such batch"}})
                if len(parts) == 3 and parts[1] == "batches":
                    b = stub._poll(parts[2])
                    return self._send(200, b) if b else self._send(404, {"error": {"message": "no such batch"}})
                if len(parts) == 4 and parts[1] == "files" and parts[3] == "content":
                    with stub.lock:
                        data = stub.files.get(parts[2])
                    return self._send(200, None, data) if data is not None else self._send(404, {"error": {}})
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ---- the endpoints ----
    def _upload(self, content_type: str, body: bytes) -> dict:
        msg = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in msg.iter_parts()}
        with self.lock:
            self.uploads += 1
            fid = f"file-{len(self.files) + 1}"
            self.files[fid] = fields["file"]
        return {"id": fid, "object": "file", "bytes": len(fields["file"]), "created_at": int(time.time()),
                "filename": "pgs-batch.jsonl", "purpose": fields.get("purpose", b"").decode(), "status": "processed"}

    def _create(self, req: dict) -> dict:
        with self.lock:
            lines = [json.loads(x) for x in self.files[req["input_file_id"]].decode().splitlines() if x.strip()]
            bid = f"batch_{len(self.batches) + 1}"
            self.batches[bid] = {"id": bid, "object": "batch", "endpoint": req["endpoint"],
                                 "input_file_id": req["input_file_id"], "completion_window": req["completion_window"],
                                 "status": "validating", "created_at": int(time.time()), "output_file_id": None,
                                 "error_file_id": None,
                                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
            self.polls[bid] = 0
            return dict(self.batches[bid])

    def _poll(self, bid: str) -> dict | None:
        with self.lock:
            b = self.batches.get(bid)
            if b is None:
                return None
            self.polls[bid] += 1
            if b["status"] != "completed" and not self.hold:
                n = self.polls[bid]
                total = b["request_counts"]["total"]
                if n >= self.polls_to_finish:
                    self._finish(b)
                else:
                    b["status"] = "in_progress"
                    b["request_counts"]["completed"] = total * n // self.polls_to_finish
            return json.loads(json.dumps(b))

    def _create_anthropic(self, req: dict, root: str) -> dict:
        with self.lock:
            bid = f"msgbatch_{len(self.batches) + 1}"
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.batches[bid] = {"id": bid, "type": "message_batch", "processing_status": "in_progress",
                                 "request_counts": {"processing": len(req["requests"]), "succeeded": 0, "errored": 0,
                                                    "canceled": 0, "expired": 0},
                                 "created_at": now, "expires_at": now, "ended_at": None, "archived_at": None,
                                 "cancel_initiated_at": None, "results_url": None,
                                 "_requests": req["requests"], "_root": root}
            self.polls[bid] = 0
            return self._public(self.batches[bid])

    @staticmethod
    def _public(b: dict) -> dict:
        return {k: v for k, v in json.loads(json.dumps(b)).items() if not k.startswith("_")}

    def _poll_anthropic(self, bid: str) -> dict | None:
        with self.lock:
            b = self.batches.get(bid)
            if b is None:
                return None
            self.polls[bid] += 1
            if b["processing_status"] != "ended" and not self.hold and self.polls[bid] >= self.polls_to_finish:
                lines = []
                for item in b["_requests"]:
                    cid, params = item["custom_id"], item["params"]
                    if cid in self.fail_ids:
                        lines.append({"custom_id": cid, "result": {"type": "errored", "error": {
                            "type": "error", "error": {"type": "api_error", "message": "stub: this request failed"}}}})
                        continue
                    text = self.responder(params)
                    tin, tout = default_usage(params, text)
                    lines.append({"custom_id": cid, "result": {"type": "succeeded", "message": {
                        "id": f"msg_{cid}", "type": "message", "role": "assistant", "model": params["model"],
                        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                        "usage": {"input_tokens": tin, "output_tokens": tout}}}})
                self.files[f"results-{bid}"] = ("\n".join(json.dumps(x) for x in lines) + "\n").encode()
                ok = sum(1 for x in lines if x["result"]["type"] == "succeeded")
                b["request_counts"].update(processing=0, succeeded=ok, errored=len(lines) - ok)
                b["processing_status"] = "ended"
                b["results_url"] = f"{b['_root']}/v1/messages/batches/{bid}/results"
            return self._public(b)

    def _answer(self, body: dict, cid: str) -> dict:
        text = self.responder(body)
        tin, tout = default_usage(body, text)
        return {"status_code": 200, "request_id": f"rq_{cid}", "body": {
            "id": f"chatcmpl-{cid}", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout}}}

    def _finish(self, b: dict) -> None:
        lines = [json.loads(x) for x in self.files[b["input_file_id"]].decode().splitlines() if x.strip()]
        out, err = [], []
        for line in lines:
            cid = line["custom_id"]
            if cid in self.fail_ids:
                err.append({"id": f"req_{cid}", "custom_id": cid, "response": {"status_code": 500, "body": {
                    "error": {"message": "stub: this request failed"}}}, "error": None})
                continue
            out.append({"id": f"req_{cid}", "custom_id": cid, "error": None, "response": self._answer(line["body"], cid)})
        for kind, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                fid = f"file-{len(self.files) + 1}"
                self.files[fid] = ("\n".join(json.dumps(r) for r in rows) + "\n").encode()
                b[kind] = fid
        b["status"] = "completed"
        b["request_counts"].update(completed=len(out), failed=len(err))

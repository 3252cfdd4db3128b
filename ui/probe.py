"""Probe an OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio) for its models.

GET {base}/models with a short timeout; no key is sent, so none can reach a URL or a log.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

OLLAMA = "http://localhost:11434/v1"


class ProbeError(RuntimeError):
    """The server could not be listed; the message is for the user."""


def probe_models(base_url: str, timeout: float = 1.5) -> list[str]:
    """Model ids served at base_url (OpenAI `/models` format, or Ollama's `/api/tags`)."""
    base = (base_url or "").strip().rstrip("/")
    if not re.match(r"^https?://[^\s/@]+(/[^\s]*)?$", base):
        raise ProbeError("Enter a base URL like http://localhost:11434/v1 (no credentials in the URL).")
    req = urllib.request.Request(base + "/models", headers={"Accept": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # local servers: no proxy
    try:
        with opener.open(req, timeout=timeout) as resp:
            body = resp.read(2_000_000)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise ProbeError(f"{base} wants a key to list models; type the model name by hand.") from None
        raise ProbeError(f"{base}/models answered HTTP {exc.code}.") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProbeError(f"No server answered at {base} ({reason}).") from None
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProbeError(f"{base}/models did not return JSON; is this an OpenAI-compatible base URL?") from None
    items = data.get("data") if isinstance(data, dict) else None
    if items is None and isinstance(data, dict):
        items = data.get("models")  # Ollama /api/tags
    if not isinstance(items, list):
        raise ProbeError(f"{base}/models returned JSON without a model list.")
    ids = []
    for it in items:
        mid = it.get("id") or it.get("name") if isinstance(it, dict) else None
        if isinstance(mid, str) and mid.strip():
            ids.append(mid.strip()[:200])
    return sorted(dict.fromkeys(ids))


def spec_for(base_url: str, model: str) -> tuple[str, str | None]:
    """(spec, base URL) for a probed model: ollama:<m> for the default Ollama URL, else openai-compatible."""
    if base_url.rstrip("/") == OLLAMA:
        return f"ollama:{model}", None
    return f"openai-compatible:{model}", base_url

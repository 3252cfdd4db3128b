"""How soon a person reads the backward model's reply on the page, against a local stub that streams a
reply over 3 s (server-sent events, one word a chunk), through the real openai SDK and our OpenAIModel.

ttft_s: from sending the call to the first `ClientOptions.on_text` (the first words the page can show);
full_s: to the whole reply (the completion that gets recorded). Median over --repeats.

Last line: ttft_s=<float> full_s=<float>   (target ttft_s <= 0.5)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.llm import ClientOptions, Request, TextSoFar, make_model  # noqa: E402
from core.runner import Runner  # noqa: E402
from tests.stub_server import StubServer  # noqa: E402

WORDS = 40
REPLY = " ".join(f"gradient-word-{i}" for i in range(WORDS))
OPENAI_EVENTS = WORDS + 4  # role chunk, one a word, finish, usage, [DONE]


def one_call(base_url: str, index: int) -> tuple[float, float]:
    """(seconds to the first on_text, seconds to the whole reply) for one streamed gradient call."""
    first: list[float] = []

    def on_text(t: TextSoFar) -> None:
        if not first:
            first.append(time.perf_counter())

    model = make_model("openai:bench-bwd", base_url=base_url, api_key="not-needed",
                       options=ClientOptions(max_retries=0, on_text=on_text))
    req = Request.chat("You critique prompts.", f"Why did the prompt fail? ({index})", max_tokens=512,
                       use_cache=False, tag="textgrad.gradient")
    t0 = time.perf_counter()
    res = Runner(concurrency=1).run(model, [req])
    t1 = time.perf_counter()
    c = res.completions[0]
    if not c.ok or c.text != REPLY or not first:
        raise SystemExit(f"bench/stream.py: the streamed call did not return the reply ({c.error or 'wrong text'})")
    return first[0] - t0, t1 - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reply-s", type=float, default=3.0, help="how long the stub takes to write the reply")
    a = ap.parse_args(argv)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    ttft, full = [], []
    with StubServer(responder=lambda body: REPLY, chunk_delay_s=a.reply_s / (OPENAI_EVENTS - 1)) as s:
        for i in range(max(1, a.repeats)):
            t, f = one_call(s.base_url, i)
            ttft.append(t)
            full.append(f)
            print(f"repeat {i + 1}: first text after {t:.3f} s, whole reply after {f:.3f} s", flush=True)
    print(f"ttft_s={statistics.median(ttft):.3f} full_s={statistics.median(full):.3f}")


if __name__ == "__main__":
    main()

"""Record the shipped demo session against the real local model (../shared/tools/local-llm start).

    python bench/record_demo.py --home /tmp/demo-rec
    PGS_HOME=/tmp/demo-rec pgs export <session-id> -o exported.json
    then core.demo.stamp(...) adds the recording note, and the result goes to core/data/demo/.

The script stands in for the person: each step it takes the first candidate and lets the strict gate
decide, except at step 2, where it accepts over the gate so the demo shows an override. The bundle's
recording note says so. The model's output is recorded as it comes; nothing is edited."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.cache import ResponseCache
from core.llm import ClientOptions
from core.runner import Runner
from core.session import Models, Session, SessionConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", required=True, help="folder for sessions/ and cache/")
    ap.add_argument("--base-url", default="http://127.0.0.1:8088/v1")
    ap.add_argument("--model", default="openai:qwen2.5-coder-0.5b")
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    home = Path(a.home)
    cfg = SessionConfig(task={"name": "pubmedqa", "seed": 0, "split_version": 3}, method="textgrad",
                        preset="AutoMedPrompt paper", forward=a.model, backward=a.model,
                        forward_base_url=a.base_url, backward_base_url=a.base_url, policy="strict",
                        val_limit=10, patience=10, params={"batch_size": 2})
    models = Models.from_config(cfg, Runner(cache=ResponseCache(home / "cache"), concurrency=1),
                                keys={"openai": "local"}, options=ClientOptions(timeout_s=600, max_retries=1))
    s = Session.create(cfg, root=home / "sessions", models=models)
    print("session", s.id, flush=True)
    print("baseline", s.run_baseline().accuracy, flush=True)
    for i in range(1, a.steps + 1):
        cands = s.start_step().proposal.candidates
        if not cands:
            s.decide("reject")
            print(f"step {i}: no candidate, rejected", flush=True)
            continue
        s.decide("accept", candidate=cands[0].id)
        g = s.validate()
        s.confirm(accept=True if i == 2 else None)  # step 2: accepted over the gate (an override)
        print(f"step {i}: gate {g.reason}; {s.steps[-1].outcome}; val {s.current.accuracy:.3f}", flush=True)
    print("done", s.id, flush=True)


if __name__ == "__main__":
    main()

"""Both methods for a few steps against the real local model on PubMedQA with small splits.

Prints, per step, validation and test accuracy of the current prompt, calls, tokens and wall time.
Needs ../shared/tools/local-llm (started here if it is not up). Quality is not the point: a 0.5B
model is weak; this shows the real path end to end and what a step costs in time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.cache import ResponseCache  # noqa: E402
from core.evaluate import evaluate  # noqa: E402
from core.runner import Runner  # noqa: E402
from core.session import Models, Session, SessionConfig  # noqa: E402

MODEL = "openai-compatible:qwen2.5-coder-0.5b"


def base_url() -> str:
    tool = ROOT.parent / "shared" / "tools" / "local-llm"
    out = subprocess.run(["bash", str(tool), "start"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--val", type=int, default=10)
    ap.add_argument("--test", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    url = base_url()
    tmp = Path(tempfile.mkdtemp(prefix="pgs-local-"))
    runner = Runner(cache=ResponseCache(tmp / "cache"), concurrency=4)
    plans = {"textgrad": ("quick", {"batch_size": 3, "max_tokens": 256}),
             "protegi": ("quick", {"minibatch": 8, "n_groups": 2, "errors_per_group": 2, "bandit_budget": 16,
                                   "max_tokens": 256})}
    for method, (preset, params) in plans.items():
        cfg = SessionConfig(task={"name": "pubmedqa"}, method=method, preset=preset, forward=MODEL, backward=MODEL,
                            forward_base_url=url, backward_base_url=url, val_limit=a.val, params=params,
                            forward_max_tokens=a.max_tokens, policy="tie", patience=99)
        s = Session.create(cfg, root=tmp / "sessions", models=Models.from_config(cfg, runner))
        test = s.task.split("test")[: a.test]

        def test_acc(prompt: str) -> float:
            m = Models.from_config(cfg, runner).forward
            return evaluate(prompt, test, m, task=s.task, runner=runner, max_tokens=a.max_tokens).accuracy

        t0 = time.perf_counter()
        s.run_baseline()
        print(f"{method} step 0: val={s.current.accuracy:.3f} test={test_acc(s.current.prompt):.3f} "
              f"calls={s.spend.calls} tokens={s.spend.input_tokens + s.spend.output_tokens} "
              f"wall_s={time.perf_counter() - t0:.1f}", flush=True)
        for _ in range(a.steps):
            t0 = time.perf_counter()
            before = s.spend.calls
            s.run_auto(1)
            st = s.steps[-1]
            val = st.gate.new_accuracy if st.gate else float("nan")
            print(f"{method} step {st.index}: outcome={st.outcome} candidate_val={val:.3f} "
                  f"current_val={s.current.accuracy:.3f} test={test_acc(s.current.prompt):.3f} "
                  f"calls={s.spend.calls - before} tokens={st.spend.input_tokens + st.spend.output_tokens} "
                  f"wall_s={time.perf_counter() - t0:.1f}", flush=True)
        s.close()


if __name__ == "__main__":
    main()

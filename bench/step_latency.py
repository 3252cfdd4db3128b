"""How long a person waits for one step's proposal, against a local stub that answers after 1 s.

TextGrad method, batch 5: forward → losses → gradient → update are the only dependent calls, so a
step should take about 4 s (TextGrad's own loop makes 13 sequential calls: about 13 s).
ProTeGi "quick": forward → gradients → edits → paraphrases → bandit rounds.
Validation is excluded (it is a separate, cancellable phase after the person's decision).

Last line: textgrad_step_s=<float> protegi_step_s=<float>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.cache import ResponseCache  # noqa: E402
from core.runner import Runner  # noqa: E402
from core.session import Models, Session, SessionConfig  # noqa: E402
from core.llm import make_model  # noqa: E402
from tests.fake_model import stub_responder  # noqa: E402
from tests.stub_server import StubServer  # noqa: E402


def one_step(base_url: str, method: str, preset: str, tmp: Path, seed: int) -> tuple[float, int]:
    cfg = SessionConfig(task={"name": "pubmedqa"}, method=method, preset=preset, forward="openai:bench-fwd",
                        backward="openai:bench-bwd", forward_base_url=base_url, backward_base_url=base_url,
                        val_limit=8, seed=seed)
    runner = Runner(cache=ResponseCache(tmp / f"cache-{method}-{seed}"), concurrency=16)
    models = Models.from_config(cfg, runner)
    s = Session.create(cfg, root=tmp / "sessions", models=models)
    s.run_baseline()
    t0 = time.perf_counter()
    st = s.start_step()
    dt = time.perf_counter() - t0
    s.close()
    return dt, len(st.proposal.candidates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pgs-bench-"))
    results: dict[str, list[float]] = {"textgrad": [], "protegi": []}
    with StubServer(delay_s=a.delay, responder=stub_responder()) as stub:
        for r in range(a.repeats):
            for method, preset in (("textgrad", "AutoMedPrompt paper"), ("protegi", "quick")):
                before = stub.count
                dt, n = one_step(stub.base_url, method, preset, tmp, seed=r)
                results[method].append(dt)
                print(f"repeat {r} {method}: {dt:.2f}s, {n} candidates, {stub.count - before} requests "
                      f"(incl. baseline)", flush=True)
    tg, pg = statistics.median(results["textgrad"]), statistics.median(results["protegi"])
    print(f"reference: TextGrad's sequential loop = 13 calls x {a.delay:.1f}s = {13 * a.delay:.1f}s")
    print(f"textgrad_step_s={tg:.2f} protegi_step_s={pg:.2f}")


if __name__ == "__main__":
    main()

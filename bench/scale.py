"""Scale figures that need no Streamlit (page-run timings live with the app's bench).

Prints one `name=value` line per figure:
  cache_entries, cache_build_s, cache_lookup_ms_p50, cache_lookup_ms_p99, cache_miss_ms_p99  (target p99 < 2 ms)
  memory_growth_mb_50_steps, rss_growth_mb_50_steps, retained_kb_per_step, events_kb_per_step  (target: flat)
  session_open_ms_50_steps, session_list_ms_50_steps
  task_load_ms_1000_rows, cached_eval_ms_1000_questions, estimate_step_ms
  with --sdk: memory_growth_mb_50_steps_sdk (the same run through the openai SDK and the local stub)

    python bench/scale.py [--entries 100000] [--steps 50] [--val 50] [--sdk] [--only cache|steps|task|sdk]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.cache import ResponseCache, cache_key  # noqa: E402
from core.evaluate import evaluate  # noqa: E402
from core.llm import Completion, ModelSpec, Request  # noqa: E402
from core.runner import Runner  # noqa: E402
from core.session import Models, Session, SessionConfig, list_sessions  # noqa: E402
from core.tasks import load_custom  # noqa: E402
from tests.fake_model import FakeModel, register  # noqa: E402

register()  # `fake:` specs


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- cache


def bench_cache(tmp: Path, entries: int) -> dict:
    """A cache holding `entries` answers of a realistic size; time lookups as the runner does them
    (SHA-256 of the canonical request, sqlite read, JSON decode, Completion)."""
    spec = ModelSpec("openai", "gpt-4o-mini")
    rc = ResponseCache(tmp / "cache")
    rnd = random.Random(0)
    reqs = [Request.chat("You are a careful assistant. Weigh the evidence.", f"Question {i}: " + "context " * 60)
            for i in range(entries)]
    t0 = time.perf_counter()
    batch = 5000
    for start in range(0, entries, batch):
        with rc._cache.transact():  # one sqlite transaction per 5,000 puts (a cold build, not a lookup)
            for r in reqs[start:start + batch]:
                text = "Looking at the study design and the results. " * rnd.randint(2, 8) + "\nAnswer: yes"
                rc.put(cache_key(spec, r), Completion(text=text, input_tokens=300, output_tokens=60, cost_usd=1e-4))
    build = time.perf_counter() - t0
    rc.close()

    rc = ResponseCache(tmp / "cache")  # reopen: a new process's view
    runner = Runner(cache=rc)
    model = FakeModel(spec=spec)
    assert len(rc) == entries
    hits, misses = [], []
    for i in rnd.sample(range(entries), 3000):
        t = time.perf_counter()
        c = runner.lookup(model, reqs[i])
        hits.append((time.perf_counter() - t) * 1000)
        assert c is not None and c.cached
    for i in range(1000):
        r = Request.chat("You are a careful assistant.", f"never asked {i}")
        t = time.perf_counter()
        assert runner.lookup(model, r) is None
        misses.append((time.perf_counter() - t) * 1000)
    rc.close()
    return {"cache_entries": entries, "cache_build_s": round(build, 1),
            "cache_lookup_ms_p50": round(pct(hits, 0.50), 3), "cache_lookup_ms_p99": round(pct(hits, 0.99), 3),
            "cache_miss_ms_p99": round(pct(misses, 0.99), 3)}


# ---------------------------------------------------------------- 50 automatic steps


def bench_steps(tmp: Path, steps: int, val: int) -> dict:
    """An automatic TextGrad run (AutoMedPrompt paper preset, validation `val`) with the scripted fake
    model and the response cache on, as a person's session would run.

    Memory measure: Python heap in use (tracemalloc, after a full gc) at the end of step 10 and step 50;
    the difference is what 40 steps keep alive. A session keeps its own history by design (every event,
    and the steps, reports and proposals built from them), so "flat" means: the growth is of the order
    of the history itself (`events_kb_per_step`), not of the work done (calls, event loops, SDK
    clients, progress callbacks, which must all be freed). RSS is printed too but is noisier (the
    allocator keeps freed arenas)."""
    fwd, bwd = FakeModel(spec=ModelSpec("fake", "fwd")), FakeModel(spec=ModelSpec("fake", "bwd"))
    cfg = SessionConfig(task={"name": "pubmedqa", "val_size": val}, method="textgrad", preset="AutoMedPrompt paper",
                        forward="fake:fwd", backward="fake:bwd", patience=10 ** 6)
    runner = Runner(cache=ResponseCache(tmp / "steps-cache"), concurrency=8)
    s = Session.create(cfg, root=tmp / "sessions", models=Models(fwd, bwd, runner))
    marks: dict[int, tuple[float, float, int]] = {}

    def on_step(sess: Session, st) -> None:
        done = sum(1 for x in sess.steps if x.outcome)
        if done in (10, steps) and done not in marks:
            gc.collect()
            marks[done] = (tracemalloc.get_traced_memory()[0] / 2**20, rss_mb(), sess.events_path.stat().st_size)

    tracemalloc.start()
    t0 = time.perf_counter()
    s.run_auto(steps, on_step=on_step)
    wall = time.perf_counter() - t0
    tracemalloc.stop()
    sid = s.id
    s.close()
    (h10, r10, e10), (h50, r50, e50) = marks[10], marks[steps]
    span = steps - 10
    opens = []
    for _ in range(5):
        t = time.perf_counter()
        Session.open(sid, root=tmp / "sessions", readonly=True)
        opens.append((time.perf_counter() - t) * 1000)
    lists = []
    for _ in range(5):
        t = time.perf_counter()
        list_sessions(tmp / "sessions")
        lists.append((time.perf_counter() - t) * 1000)
    accepted = sum(1 for st in Session.open(sid, root=tmp / "sessions", readonly=True).steps if st.outcome == "accepted")
    return {"steps_wall_s": round(wall, 1), "steps_accepted": accepted,
            "memory_growth_mb_50_steps": round(h50 - h10, 2), "rss_growth_mb_50_steps": round(r50 - r10, 1),
            "retained_kb_per_step": round((h50 - h10) * 1024 / span, 1),
            "events_kb_per_step": round((e50 - e10) / 1024 / span, 1),
            "events_mb_50_steps": round(e50 / 2**20, 2),
            "session_open_ms_50_steps": round(statistics.median(opens), 1),
            "session_list_ms_50_steps": round(statistics.median(lists), 2)}


def bench_steps_sdk(tmp: Path, steps: int, val: int) -> dict:
    """The same automatic run through the real openai SDK against the local stub (a new event loop and
    client per phase): checks that clients, connections and loops are freed, not only the fake's objects.
    The stub runs in this process, so its own request log is cleared before each measurement."""
    from core.llm import ClientOptions
    from tests.fake_model import stub_responder
    from tests.stub_server import StubServer

    with StubServer(responder=stub_responder(), record_bodies=False) as stub:
        cfg = SessionConfig(task={"name": "pubmedqa", "val_size": 50}, method="textgrad", forward="openai:bench-fwd",
                            backward="openai:bench-bwd", forward_base_url=stub.base_url,
                            backward_base_url=stub.base_url, val_limit=val, patience=10 ** 6)
        models = Models.from_config(cfg, Runner(cache=ResponseCache(tmp / "sdk-cache"), concurrency=8),
                                    keys={"openai": "sk-bench"}, options=ClientOptions(timeout_s=30, max_retries=2))
        s = Session.create(cfg, root=tmp / "sdk-sessions", models=models)
        marks: dict[int, tuple[float, int]] = {}

        def on_step(sess: Session, st) -> None:
            done = sum(1 for x in sess.steps if x.outcome)
            if done in (10, steps) and done not in marks:
                stub.reset()
                gc.collect()
                marks[done] = (tracemalloc.get_traced_memory()[0] / 2**20, sess.events_path.stat().st_size)

        tracemalloc.start()
        s.run_auto(steps, on_step=on_step)
        tracemalloc.stop()
        s.close()
    (h10, e10), (h50, e50) = marks[10], marks[steps]
    span = steps - 10
    return {"memory_growth_mb_50_steps_sdk": round(h50 - h10, 2),
            "retained_kb_per_step_sdk": round((h50 - h10) * 1024 / span, 1),
            "events_kb_per_step_sdk": round((e50 - e10) / 1024 / span, 1)}


# ---------------------------------------------------------------- a 1,000-question task


def bench_task(tmp: Path) -> dict:
    rows = ["question,context,answer"] + [
        f'"Is finding {i} supported?","{"Background and methods of study " * 20}{i}",{("yes", "no", "maybe")[i % 3]}'
        for i in range(1000)]
    data = "\n".join(rows).encode()
    loads = []
    for _ in range(5):
        t = time.perf_counter()
        task = load_custom(data, "big.csv", input_cols=["question", "context"], label_col="answer",
                           val_size=100, test_size=100)
        loads.append((time.perf_counter() - t) * 1000)
    exs = task.splits["train"] + task.splits["val"] + task.splits["test"]
    model = FakeModel(spec=ModelSpec("fake", "fwd"))
    runner = Runner(cache=ResponseCache(tmp / "task-cache"))
    evaluate("Be careful.", exs, model, task=task, runner=runner)  # fills the cache
    evals = []
    for _ in range(3):
        t = time.perf_counter()
        rep = evaluate("Be careful.", exs, model, task=task, runner=runner)
        evals.append((time.perf_counter() - t) * 1000)
        assert rep.summary()["cached"] == len(exs)
    cfg = SessionConfig(task={"name": "pubmedqa"}, forward="fake:fwd", backward="fake:bwd")
    s = Session.create(cfg, root=tmp / "est", models=Models(model, model, runner))
    s.run_baseline()
    ests = []
    for _ in range(20):
        t = time.perf_counter()
        s.estimate_step()
        ests.append((time.perf_counter() - t) * 1000)
    s.close()
    return {"task_load_ms_1000_rows": round(statistics.median(loads), 1),
            "cached_eval_ms_1000_questions": round(statistics.median(evals), 1),
            "estimate_step_ms": round(statistics.median(ests), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--val", type=int, default=50)
    ap.add_argument("--only", choices=("cache", "steps", "task", "sdk"))
    ap.add_argument("--sdk", action="store_true", help="also run the 50 steps through the openai SDK and the stub "
                                                       "(about a minute more)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgs-scale-") as d:
        tmp = Path(d)
        parts = [("cache", lambda: bench_cache(tmp, a.entries)), ("steps", lambda: bench_steps(tmp, a.steps, a.val)),
                 ("task", lambda: bench_task(tmp)), ("sdk", lambda: bench_steps_sdk(tmp, a.steps, 20))]
        for name, fn in parts:
            if (a.only and a.only != name) or (name == "sdk" and not (a.sdk or a.only == "sdk")):
                continue
            for k, v in fn().items():
                print(f"{k}={v}", flush=True)


if __name__ == "__main__":
    main()

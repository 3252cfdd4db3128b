"""Script run time of every page with a 1,000-question task (target: under 300 ms each).

LIAR with a 1,000-question validation split (the rest train, 461 test): a session with several
validated steps (scripted fake model), then one step left open with its proposal, as a person would
find it. Each page runs in AppTest (the whole frame: navigation, sidebar, page); after a warm-up run,
the median of 5 reruns is reported. Optimize is timed in two states (a proposal to decide, and the
gate after validation), Evaluate with the head-to-head of two prompts on the whole test split.

Prints one line per page, `page_<name>_ms=<float>`, then `page_max_ms=<float>`.

    python bench/pages.py [--val 1000] [--steps 6] [--runs 5] [--profile optimize]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
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
from tests.fake_model import FakeModel, register  # noqa: E402

APP = str(ROOT / "app.py")


def build_session(tmp: Path, val: int, steps: int) -> str:
    """A LIAR session with `val` validation questions, `steps` finished steps and one open proposal."""
    cfg = SessionConfig(task={"name": "liar", "val_size": val}, method="textgrad", preset="quick",
                        forward="fake:scripted", backward="fake:scripted", policy="tie", patience=50,
                        title="bench: 1,000 validation questions")
    models = Models(FakeModel(), FakeModel(), Runner(cache=ResponseCache(tmp / "cache"), concurrency=64))
    s = Session.create(cfg, root=tmp / "sessions", models=models)
    s.run_auto(steps)
    s.start_step()
    outcomes = [x.outcome for x in s.steps if x.outcome]
    print(f"# {len(outcomes)} steps ({outcomes.count('accepted')} accepted), validation reports of "
          f"{s.steps[0].candidate_report.n} questions", file=sys.stderr)
    sid = s.id
    s.close()
    return sid


def timed(at, runs: int) -> float:
    at.run()  # warm-up (caches, imports)
    assert not at.exception, [e.value for e in at.exception]
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        at.run()
        out.append((time.perf_counter() - t0) * 1000)
        assert not at.exception, [e.value for e in at.exception]
    return statistics.median(out)


def profile_one_run(at) -> None:
    """cProfile one run inside the script thread (AppTest runs the script in a thread of its own)."""
    from streamlit.runtime.scriptrunner import script_runner

    prof = cProfile.Profile()
    original = script_runner.ScriptRunner._run_script

    def wrapped(self, *args, **kw):
        prof.enable()
        try:
            return original(self, *args, **kw)
        finally:
            prof.disable()

    script_runner.ScriptRunner._run_script = wrapped
    try:
        at.run()
    finally:
        script_runner.ScriptRunner._run_script = original
    pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(40)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", default="", help="page name to profile (cProfile, top 25 by cumulative time)")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pgs-pages-"))
    os.environ.update(PGS_SESSIONS_DIR=str(tmp / "sessions"), PGS_CACHE_DIR=str(tmp / "cache"),
                      PGS_INLINE_JOBS="1")
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL"):
        os.environ.pop(name, None)
    register()
    t0 = time.perf_counter()
    sid = build_session(tmp, a.val, a.steps)
    print(f"# session {sid}: {a.val} validation questions, {a.steps} steps + an open proposal, built in "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["sid"] = sid
    at.run()
    results: dict[str, float] = {}

    def page(name: str, path: str, label: str | None = None, prepare=None) -> None:
        at.switch_page(path)
        if prepare is not None:
            at.run()
            prepare()
        results[label or name] = timed(at, a.runs)
        if a.profile == (label or name):
            profile_one_run(at)

    page("overview", "pages/overview.py")

    def liar_1000() -> None:
        at.selectbox(key="task_name").set_value("liar")
        at.run()
        at.number_input(key="val_size_liar").set_value(a.val)

    page("setup", "pages/setup.py", prepare=liar_1000)
    page("optimize", "pages/optimize.py")  # an open proposal: minibatch, gradients, candidates, editor
    page("history", "pages/history.py")  # chart, spend, versions, the 1,000-row grid, lineage
    page("settings", "pages/settings.py")

    def evaluated() -> None:
        at.number_input(key="eval_limit").set_value(0)  # the whole test split
        at.run()
        at.button(key="run_eval").click()
        at.run()

    page("evaluate", "pages/evaluate.py", prepare=evaluated)

    def gate() -> None:  # accept the first candidate: validation on the 1,000 questions runs inline
        accept = next(b for b in at.button if (b.key or "").startswith(f"accept_s{a.steps + 1}_"))
        accept.click()
        at.run()
        assert any(b.key == "confirm" for b in at.button), "no gate after validation"

    page("optimize", "pages/optimize.py", label="optimize_gate", prepare=gate)

    for name, ms in results.items():
        print(f"page_{name}_ms={ms:.1f}")
    print(f"page_max_ms={max(results.values()):.1f}")


if __name__ == "__main__":
    main()

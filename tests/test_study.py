"""Studies (core/study.py, `pgs study`): a grid of ordinary sessions, its statistics recomputed from the sessions'
own events, resume after a kill without redoing finished runs, and one concurrency limit shared by all runs."""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.cli import main
from core.limits import SharedLimit, SharedRunner
from core.llm import register_provider
from core.metrics import summarise
from core.runner import Runner
from core.session import Models
from core.study import Study, StudyError, StudySpec, read_results, run_study, studies_root
from core.tasks import builtin_spec
from tests.conftest import pgs_cmd
from tests.fake_model import FakeModel, MinibatchFake


class InFlight:
    """Calls in flight across every model instance and thread, and the most seen at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0
        self.calls = 0

    def reset(self):
        self.now = self.max = self.calls = 0


FLIGHT = InFlight()


@dataclass
class FlightFake(FakeModel):
    delay_s: float = 0.01
    flight: InFlight = field(default=FLIGHT)

    async def acomplete(self, req):
        with self.flight.lock:
            self.flight.now += 1
            self.flight.calls += 1
            self.flight.max = max(self.flight.max, self.flight.now)
        try:
            return await super().acomplete(req)
        finally:
            with self.flight.lock:
                self.flight.now -= 1


register_provider("fakevary", lambda spec: MinibatchFake(spec=spec), price=(1.0, 2.0))
register_provider("fakeflight", lambda spec: FlightFake(spec=spec), price=(1.0, 2.0))


def final_val_from_events(sessions: Path, sid: str) -> float:
    """The run's final validation accuracy read straight from events.jsonl: the baseline's, replaced by the
    candidate's report at each accepted gate."""
    events = [json.loads(line) for line in (sessions / sid / "events.jsonl").read_text().splitlines() if line.strip()]
    def accuracy(report: dict) -> float:
        answered = [r for r in report["rows"] if not r.get("error")]
        return sum(bool(r["correct"]) for r in answered) / len(answered)

    acc = next(accuracy(e["report"]) for e in events if e["type"] == "baseline")
    validations = {e["step"]: e for e in events if e["type"] == "validation"}
    for e in events:
        if e["type"] == "gate" and e["accepted"]:
            acc = accuracy(validations[e["step"]]["candidate_report"])
    return acc


def t975_df2() -> float:
    """Student's t, 2 degrees of freedom, 0.975 quantile in closed form: F(t) = 1/2 + t / (2 sqrt(2 + t^2))."""
    r = 0.95 ** 2
    return math.sqrt(2 * r / (1 - r))


def test_three_seed_study_json_agrees_with_its_sessions(pgs_env, capsys):
    code = main(["study", "--task", "pubmedqa", "--forward", "fakevary:f", "--backward", "fakevary:b", "--seeds", "3",
                 "--steps", "2", "--presets", "quick", "--val-sizes", "60", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    d = json.loads(out[-1])
    assert len(d["runs"]) == 3 and {r["seed"] for r in d["runs"]} == {0, 1, 2}
    assert sum("done: val" in line for line in out) == 3  # one progress line per finished run
    sessions = pgs_env / "sessions"
    vals = [final_val_from_events(sessions, r["session"]) for r in d["runs"]]
    assert [r["final_val"] for r in d["runs"]] == pytest.approx(vals)
    assert len(set(vals)) > 1, "the seeds should lead to different prompts here"
    mean, sd = statistics.mean(vals), statistics.stdev(vals)
    half = t975_df2() * sd / math.sqrt(3)
    for block in (d["overall"], d["settings"][0]):
        fv = block["final_val"]
        assert fv["n"] == 3
        assert fv["mean"] == pytest.approx(mean, abs=1e-6) and fv["sd"] == pytest.approx(sd, abs=1e-6)
        assert fv["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-5)
    assert d["overall"]["calls"] == sum(r["calls"] for r in d["runs"]) > 0
    manifest = json.loads(Path(d["manifest"]).read_text())
    assert [r["session"] for r in manifest["runs"]] == [r["session"] for r in d["runs"]]
    assert Path(d["manifest"]).parent == studies_root(sessions)


def test_summary_of_one_run_has_no_spread():
    s = summarise([0.5])
    assert (s.n, s.mean, s.sd, s.ci95) == (1, 0.5, None, None)
    assert summarise([]).mean is None


def run_lines(proc: subprocess.Popen, until: str, timeout: float = 120) -> list[str]:
    lines, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if until in line:
            return lines
    raise AssertionError(f"never printed {until!r}: {lines}")


def test_killed_study_resumes_without_redoing_finished_runs(pgs_env):
    env = {**os.environ, "PGS_FAKE_DELAY": "0.01"}
    args = ["study", "--task", "pubmedqa", "--forward", "fake:f", "--backward", "fake:b", "--seeds", "3", "--steps",
            "2", "--val-limit", "40", "--parallel", "1", "--concurrency", "2", "--no-cache"]
    proc = subprocess.Popen(pgs_cmd() + args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        lines = run_lines(proc, "done: val")
    finally:
        proc.kill()
        proc.wait()
    study_id = lines[0].split()[1].rstrip(":")
    sessions = pgs_env / "sessions"
    study = Study.load(study_id, studies_root(sessions))
    first = sessions / study.runs[0].session / "events.jsonl"
    before = first.read_bytes()
    calls_before = {r.session: r.calls for r in read_results(study, sessions)}
    assert calls_before[study.runs[0].session] > 0

    out = subprocess.run(pgs_cmd() + ["study", "--resume", study_id, "--no-cache", "--json"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["status"] for r in d["runs"]] == ["done"] * 3
    assert first.read_bytes() == before  # the finished run made no call and wrote nothing
    assert "run 1/3" in out.stdout and "already finished, skipped" in out.stdout.split("run 1/3", 1)[1].split("\n")[0]
    made = {r["session"]: r["calls"] - calls_before[r["session"]] for r in d["runs"]}
    assert made[study.runs[0].session] == 0 and sum(made.values()) > 0
    again = subprocess.run(pgs_cmd() + ["study", "--resume", study_id, "--no-cache", "--json"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert json.loads(again.stdout.strip().splitlines()[-1])["overall"]["calls"] == d["overall"]["calls"]
    assert again.stdout.count("already finished, skipped") == 3


def study_with(runner: Runner, tmp: Path) -> list[str]:
    sessions = tmp / "sessions"
    spec = StudySpec(task=builtin_spec("pubmedqa", 0), method="textgrad", forward="fakeflight:f",
                     backwards=["fakeflight:b"], steps=1, seeds=3, presets=["quick"], val_limit=30)
    study = Study.plan(spec, studies_root(sessions))
    lines: list[str] = []
    run_study(study, sessions=sessions, models_for=lambda cfg: Models.from_config(cfg, runner), parallel=3,
              say=lines.append)
    assert [r.status for r in study.runs] == ["done"] * 3, lines
    return lines


def test_one_concurrency_limit_holds_across_all_runs(tmp_path):
    FLIGHT.reset()
    study_with(SharedRunner(concurrency=2), tmp_path / "shared")
    assert FLIGHT.calls > 0 and FLIGHT.max == 2  # full use of the limit, never more
    FLIGHT.reset()
    study_with(Runner(concurrency=2), tmp_path / "plain")  # a runner per loop: each run would get its own 2
    assert FLIGHT.max > 2


def test_shared_limit_gives_back_the_slots_of_cancelled_waiters():
    limit = SharedLimit(1)

    async def hold(seconds):
        async with limit:
            await asyncio.sleep(seconds)

    async def go():
        first = asyncio.ensure_future(hold(0.05))
        await asyncio.sleep(0)
        waiters = [asyncio.ensure_future(hold(0)) for _ in range(5)]
        await asyncio.sleep(0.01)
        for w in waiters[:3]:
            w.cancel()
        await asyncio.gather(first, *waiters, return_exceptions=True)

    def other_loop():
        asyncio.run(go())

    threads = [threading.Thread(target=other_loop) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert limit.in_use == 0 and not limit._waiters


@pytest.mark.parametrize("args, says", [
    (["--resume", "study-nope"], "No study 'study-nope'"),
    (["--task", "pubmedqa", "--forward", "fake:f", "--backward", "fake:b", "--steps", "1", "--bandits", "ucb"],
     "use --method protegi"),
    (["--task", "pubmedqa", "--forward", "fake:f", "--backward", "fake:b", "--steps", "1", "--preset-study",
      "backward model ablation"], "needs 2 backward models"),
    (["--task", "pubmedqa", "--forward", "fake:f", "--backward", "fake:b", "--steps", "1", "--method", "protegi",
      "--bandits", "ucb,thompson"], "Unknown bandit 'thompson'"),
    (["--task", "pubmedqa", "--forward", "fake:f", "--backward", "fake:b", "--steps", "1", "--seeds", "0"], "--seeds"),
    (["--task", "pubmedqa", "--forward", "fake:f", "--backward", "fake:b", "--steps", "1", "--val-sizes", "50,99999"],
     "Validation size 99999"),
    (["--resume", "../../etc/passwd"], "is not a study id"),
])
def test_bad_study_arguments_are_one_line(pgs_env, args, says):
    out = subprocess.run(pgs_cmd() + ["study"] + args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (pgs_env / "studies").exists() or not list((pgs_env / "studies").glob("*.json"))


def test_studies_page_shows_the_runs_and_opens_one(app_test_env):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, check, goto, plotly_spec

    sessions = app_test_env / "sessions"
    spec = StudySpec(task=builtin_spec("pubmedqa", 0), method="textgrad", forward="fakevary:f",
                     backwards=["fakevary:b"], steps=2, seeds=3, presets=["quick"], val_sizes=[60], reveal_test=True,
                     test_limit=40)
    study = Study.plan(spec, studies_root(sessions))
    run_study(study, sessions=sessions, models_for=lambda cfg: Models.from_config(cfg, Runner()), parallel=3,
              say=lambda line: None)
    results = read_results(study, sessions)
    at = check(AppTest.from_file(APP, default_timeout=60).run())
    goto(at, "studies")
    settings, runs = (d.value for d in at.dataframe)
    assert list(runs["session"]) == [r.session for r in study.runs]
    assert list(runs["final val"]) == pytest.approx([r.final_val for r in results])
    assert runs["test"].notna().all()  # revealed at the end of each run
    fig = plotly_spec(at)
    points = {t["name"]: t for t in fig["data"]}
    assert sorted(points["final val, one run each"]["y"]) == pytest.approx(sorted(r.final_val for r in results))
    assert len(points["test, one run each"]["y"]) == 3
    mean = points["final val mean, 95% t-interval"]
    vals = [r.final_val for r in results]
    assert mean["y"][0] == pytest.approx(statistics.mean(vals))
    half = t975_df2() * statistics.stdev(vals) / math.sqrt(3)
    assert mean["error_y"]["array"][0] == pytest.approx(half, abs=1e-4)
    assert list(settings["calls"])[-1] == sum(r.calls for r in results) > 0
    target = study.runs[1].session
    at.button(key=f"study_open_{target}").click().run()
    check(at)
    assert at.session_state["sid"] == target
    assert any(t.value == "History" for t in at.title)


def test_study_presets_expand_to_their_grids(pgs_env, capsys):
    from core.cli import build_parser
    from core.cli.study import spec_from_args

    def grid(*args):
        return spec_from_args(build_parser().parse_args(["study", "--task", "pubmedqa", "--forward", "fake:f",
                                                         "--steps", "1", *args])).grid()

    assert [r.seed for r in grid("--backward", "fake:b", "--preset-study", "stability over 5 seeds")] == [0, 1, 2, 3, 4]
    ablation = grid("--backward", "fake:a,fake:b", "--preset-study", "backward model ablation")
    assert [(r.backward, r.seed) for r in ablation] == [("fake:a", s) for s in range(3)] + [("fake:b", s) for s in range(3)]
    assert sorted({r.val_size for r in grid("--backward", "fake:b", "--preset-study", "validation 50 vs 200")}) == [50, 200]
    assert len(grid("--backward", "fake:b", "--preset-study", "stability over 5 seeds", "--seeds", "2")) == 2


def test_bandit_study_runs_each_bandit_it_names(pgs_env, capsys):
    code = main(["study", "--task", "liar", "--method", "protegi", "--forward", "fake:f", "--backward", "fake:b",
                 "--preset-study", "UCB vs Successive Rejects", "--seeds", "1", "--steps", "1", "--val-limit", "20",
                 "--json"])
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and [r["bandit"] for r in d["runs"]] == ["ucb", "successive-rejects"]
    for r in d["runs"]:
        events = [json.loads(x) for x in (pgs_env / "sessions" / r["session"] / "events.jsonl").read_text().splitlines()]
        used = {e["proposal"]["bandit"]["algorithm"] for e in events if e["type"] == "proposal"
                and e["proposal"].get("bandit")}
        assert used == {r["bandit"]}
    assert [s["label"] for s in d["settings"]] == ["bandit ucb", "bandit successive-rejects"]


def test_a_tampered_manifest_is_one_line(pgs_env, capsys):
    spec = StudySpec(task=builtin_spec("pubmedqa", 0), method="textgrad", forward="fake:f", backwards=["fake:b"],
                     steps=1, seeds=2)
    study = Study.plan(spec, studies_root(pgs_env / "sessions"))
    d = json.loads(study.path.read_text())
    d["runs"][1]["settings"]["seed"] = 7
    study.path.write_text(json.dumps(d))
    with pytest.raises(StudyError, match="lists runs its grid does not have"):
        Study.load(study.id, study.path.parent)
    study.path.write_text("{not json")
    assert main(["study", "--resume", study.id]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["study", "--resume", study.id, "--seeds", "3"]) == 2
    assert "drop --seeds" in capsys.readouterr().err


def test_help_of_pgs_and_pgs_study_prints(capsys):
    for argv in (["--help"], ["study", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "study" in out and "--preset-study" in out and "stability over 5 seeds" in out


def test_a_stopped_study_resumes_to_exactly_its_steps(tmp_path):
    from core.runner import CancelToken

    sessions = tmp_path / "sessions"
    spec = StudySpec(task=builtin_spec("pubmedqa", 0), method="textgrad", forward="fake:f", backwards=["fake:b"],
                     steps=2, seeds=2, presets=["quick"], val_limit=30)
    study = Study.plan(spec, studies_root(sessions))
    cancel = CancelToken()
    lines: list[str] = []

    def say(line):
        lines.append(line)
        if ": step 1 " in line:  # Stop pressed after the first decided step
            cancel.cancel()

    run_study(study, sessions=sessions, models_for=lambda cfg: Models.from_config(cfg, Runner()), parallel=1,
              say=say, cancel=cancel)
    assert any("stopped; pgs study --resume" in x for x in lines), lines
    first = read_results(study, sessions)
    assert first[0].steps == 1 and first[0].status != "done"
    run_study(Study.load(study.id, study.path.parent), sessions=sessions,
              models_for=lambda cfg: Models.from_config(cfg, Runner()), parallel=2, say=lines.append)
    assert [(r.status, r.steps) for r in read_results(study, sessions)] == [("done", 2), ("done", 2)]

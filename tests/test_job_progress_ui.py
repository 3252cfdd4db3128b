"""One counter per job in the app: a Job's JobProgress is passed to every phase, its N is known before the
phase's first answer lands, and the status line names the phase actually running."""

from __future__ import annotations

from core.testlock import Entry, score_split, version_entries
from tests.test_method_fidelity import make
from ui.jobs import Job, _progress_text


def test_a_jobs_line_names_the_running_phase_with_n_known_before_it_starts(tmp_path):
    s, _, _ = make(tmp_path, method="textgrad", preset="quick", cache=True, val_limit=10)
    seen: list[tuple[str, int, int]] = []
    job = Job("j1", "baseline", "Baseline", "owner")
    job.progress.listener = lambda p: seen.append((p.phase, p.done, p.total))
    s.run_baseline(progress=job.progress)
    assert seen[0] == ("baseline", 0, 10)  # planned before the first call
    assert _progress_text(job).startswith("Baseline · baseline (seed prompt on validation): 10 of 10 calls")

    step_job = Job("j2", "step", "Step 1", "owner")
    phases: list[str] = []
    step_job.progress.listener = lambda p: phases.append(p.phase) if not phases or phases[-1] != p.phase else None
    s.start_step(progress=step_job.progress)
    assert phases == ["forward", "loss", "gradient", "update"]  # in the order they ran
    cfg = s.config.engine_config()
    assert "prompt update: 3 of 3 calls" in _progress_text(step_job) and cfg.candidates == 3

    s.decide("accept", candidate=s.step.proposal.candidates[0].id)
    val_job = Job("j4", "validate", "Validate", "owner")
    totals: list[int] = []
    val_job.progress.listener = lambda p: totals.append(p.total)
    s.validate(progress=val_job.progress)
    assert s.config.policy == "strict" and set(totals) == {20}  # both prompts on 10 questions, N known at once


def test_an_evaluate_job_counts_its_calls_once(tmp_path):
    s, _, _ = make(tmp_path, method="textgrad", preset="quick", cache=True, val_limit=10)
    s.run_baseline()
    job = Job("j3", "evaluate", "Evaluate", "owner")
    entries = version_entries(s, [0]) + [Entry("other", "Answer yes, no or maybe.")]
    score_split(s, entries, "test", limit=8, reveal=True, on_progress=job.progress)
    assert (job.progress.done, job.progress.total) == (16, 16)  # 2 prompts x 8 questions, one counter
    assert "test questions: 16 of 16 calls" in _progress_text(job)
    assert job.progress.spend.calls == next(ev for ev in s.events if ev["type"] == "test_revealed")["spend"]["calls"]

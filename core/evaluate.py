"""Run one prompt over examples and keep one row per question: `EvalReport`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Sequence

from .llm import ChatModel, Completion, Request
from .metrics import accuracy, macro_f1, wilson_interval
from .parsing import parse_answer_detail
from .progress import JobProgress, ProgressFn
from .runner import CancelToken, Runner, run_job
from .tasks import Example, Task

if TYPE_CHECKING:
    import pandas as pd

FORWARD_MAX_TOKENS = 512


@dataclass
class EvalRow:
    id: str
    input: str
    gold: str
    raw_output: str
    parsed: str | None  # None = unparsed (counted wrong)
    correct: bool  # never True for a failed call; failed calls are left out of scores
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False
    error: str | None = None
    key: str = ""
    ambiguous: bool = False  # unparsed because the reply commits to conflicting answers
    finish_reason: str = ""  # the provider's; "length" / "max_tokens" = cut off

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.parsed is None:
            return "unparsed"
        return "correct" if self.correct else "wrong"


@dataclass
class EvalReport:
    prompt: str
    rows: list[EvalRow]
    labels: list[str] = field(default_factory=list)
    cancelled: bool = False
    fatal: str | None = None

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def answered_rows(self) -> list[EvalRow]:
        """Rows whose call succeeded; a failed call is not a wrong answer, so scores use only these."""
        return [r for r in self.rows if not r.error]

    @property
    def answered(self) -> int:
        return self.n - self.errors

    @property
    def correct(self) -> int:
        return sum(1 for r in self.rows if r.correct and not r.error)

    @property
    def accuracy(self) -> float:
        """Correct over answered questions (failed calls left out)."""
        return accuracy([r.correct for r in self.answered_rows])

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.answered)

    @property
    def macro_f1(self) -> float:
        rows = self.answered_rows
        return macro_f1([r.gold for r in rows], [r.parsed for r in rows], self.labels)

    @property
    def unparsed(self) -> int:
        return sum(1 for r in self.rows if r.parsed is None and not r.error)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.rows if r.error)

    @property
    def failures(self) -> list[EvalRow]:
        return [r for r in self.rows if not r.correct and not r.error]

    def correct_by_id(self) -> dict[str, bool]:
        """Correctness per answered question; questions whose call failed are absent (paired tests drop them)."""
        return {r.id: r.correct for r in self.answered_rows}

    def outcome_by_id(self) -> dict[str, bool | None]:
        """Correctness per question, None where the call failed (for `metrics.paired_outcomes`)."""
        return {r.id: None if r.error else r.correct for r in self.rows}

    def counts_line(self) -> str:
        """'n answered, k failed' for captions and warnings."""
        return f"{self.answered} answered, {self.errors} failed"

    def summary(self) -> dict:
        lo, hi = self.interval
        return {
            "accuracy": self.accuracy, "ci_low": lo, "ci_high": hi, "macro_f1": self.macro_f1,
            "n": self.n, "answered": self.answered, "correct": self.correct, "unparsed": self.unparsed,
            "errors": self.errors, "calls": sum(1 for r in self.rows if not r.cached and not r.error),
            "cached": sum(r.cached for r in self.rows),
            "input_tokens": sum(r.input_tokens for r in self.rows),
            "output_tokens": sum(r.output_tokens for r in self.rows),
            "cost_usd": round(sum(r.cost_usd for r in self.rows), 6),
            "cancelled": self.cancelled,
        }

    def to_dataframe(self) -> "pd.DataFrame":
        import pandas as pd

        df = pd.DataFrame([asdict(r) for r in self.rows])
        if not df.empty:
            df["status"] = [r.status for r in self.rows]
        return df

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "labels": self.labels, "cancelled": self.cancelled,
                "fatal": self.fatal, "rows": [asdict(r) for r in self.rows]}

    @staticmethod
    def from_json(d: dict) -> "EvalReport":
        return EvalReport(d["prompt"], [EvalRow(**r) for r in d["rows"]], d.get("labels", []),
                          d.get("cancelled", False), d.get("fatal"))


def forward_request(prompt: str, task: Task, ex: Example, *, max_tokens: int = FORWARD_MAX_TOKENS,
                    use_cache: bool = True) -> Request:
    """The forward call: the prompt under optimisation as system message, the fixed question template as user."""
    return Request.chat(prompt if prompt.strip() else None, task.render(ex), temperature=0.0,
                        max_tokens=max_tokens, use_cache=use_cache, tag="forward")


def row_for(task: Task, ex: Example, c: Completion) -> EvalRow:
    parsed = task.parse(c.text, ex) if c.error is None else None
    ambiguous = c.error is None and parsed is None and parse_answer_detail(c.text, task.labels, ex.choices).ambiguous
    return EvalRow(id=ex.id, input=task.render(ex), gold=ex.label, raw_output=c.text, parsed=parsed,
                   correct=parsed == ex.label, input_tokens=c.input_tokens, output_tokens=c.output_tokens,
                   cost_usd=c.cost_usd, cached=c.cached, error=c.error, key=c.key,
                   ambiguous=ambiguous, finish_reason=c.finish_reason)


def report_from(prompt: str, task: Task, examples: Sequence[Example], completions: Sequence[Completion],
                *, cancelled: bool = False, fatal: str | None = None) -> EvalReport:
    rows = [row_for(task, ex, c) for ex, c in zip(examples, completions)]
    return EvalReport(prompt, rows, list(task.labels), cancelled, fatal)


async def aevaluate(prompt: str, examples: Sequence[Example], model: ChatModel, *, task: Task,
                    runner: Runner, progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                    use_cache: bool = True, max_tokens: int = FORWARD_MAX_TOKENS,
                    job: JobProgress | None = None, phase: str = "evaluate") -> EvalReport:
    """Score `prompt` on `examples`; `job` (shared by the prompts of one job) counts the calls under `phase`."""
    reqs = [forward_request(prompt, task, ex, max_tokens=max_tokens, use_cache=use_cache) for ex in examples]
    res = await runner.arun(model, reqs, progress=progress, cancel=cancel, job=job, phase=phase)
    return report_from(prompt, task, examples, res.completions, cancelled=res.cancelled, fatal=res.fatal)


def evaluate(prompt: str, examples: Sequence[Example], model: ChatModel, *, task: Task,
             runner: Runner | None = None, progress: ProgressFn | None = None,
             cancel: CancelToken | None = None, use_cache: bool = True,
             max_tokens: int = FORWARD_MAX_TOKENS) -> EvalReport:
    """Score `prompt` on `examples` (synchronous, one job: see `aevaluate`)."""
    runner = runner or Runner()
    return run_job(lambda: aevaluate(prompt, examples, model, task=task, runner=runner, progress=progress,
                                     cancel=cancel, use_cache=use_cache, max_tokens=max_tokens), model)

"""The phases of a session and the events they write: baseline, start_step (minibatch, proposal), decide,
validate (fixed or adaptive gate), confirm, and the automatic run.

One step's data flow, top to bottom in this file: check the budget (core/estimate.py) -> log 'step_started'
-> answer the minibatch with each beam prompt (engine.forward_batch) -> log 'forward' -> the engine proposes
(ProTeGi/TextGrad) -> candidate checks -> log 'proposal' -> decide -> log 'decision' -> score the chosen and
the current prompt on validation -> gate -> log 'validation' -> confirm -> log 'gate'. Every event goes
through `Session.emit` (one lock, fsynced), which folds it into the session's state (core/state.py).

Models come as an argument (a worker's own), else the session's; a worker never changes the session's.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ContextManager, Protocol

from . import candidate_checks as checks
from . import estimate, guided
from . import events as E
from . import person_marks as marks
from .config import BudgetExceeded, SessionConfig, SessionError
from .engine import Cancelled, JobProgress, PhaseProgress, Spend, StepContext, forward_batch, normalise
from .evaluate import EvalReport
from .gate import GateResult, gate
from .llm import ChatModel, ClientOptions, make_model, parse_spec
from .meta_prompts import Templates
from .protegi import ProtegiEngine
from .runner import CancelToken, Runner, run_job
from .sequential import look_schedule
from .state import SessionState, Step, Version, compact_report
from .textgrad import TextGradEngine

class SessionWriter(Protocol):
    """What the step runner needs of a session (core/session.py's Session): its state and its one writer."""

    folded: "SessionState"
    models: "Models | None"
    lock: ContextManager
    writable: bool

    def emit(self, event: Any) -> Any: ...

    def servers_text(self) -> str: ...


@dataclass
class Models:
    """The live models for a session; keys stay in memory, inside the SDK clients."""

    forward: ChatModel
    backward: ChatModel
    runner: Runner
    price_overrides: dict = field(default_factory=dict)  # by model name, for models the snapshot lacks

    @staticmethod
    def from_config(cfg: SessionConfig, runner: Runner, keys: dict[str, str] | None = None,
                    options: ClientOptions | None = None, price_overrides: dict | None = None) -> "Models":
        """Models whose calls cost what the config's price snapshot says (the table for a model it lacks);
        `options.on_text` sees the backward (optimiser) model's replies only."""
        keys = keys or {}
        forward_options = replace(options, on_text=None) if options is not None else None

        def build(spec: str, url: str | None, opts: ClientOptions | None) -> ChatModel:
            s = parse_spec(spec, url)
            return make_model(s, api_key=keys.get(s.provider), options=opts,
                              price=cfg.model_price(spec, url, price_overrides))

        return Models(build(cfg.forward, cfg.forward_base_url, forward_options),
                      build(cfg.backward, cfg.backward_base_url, options), runner, dict(price_overrides or {}))

    @property
    def cached(self) -> bool:
        return self.runner.cache is not None


def hash_seed(*parts: Any) -> int:
    """A stable seed from parts (Python's hash() of str is salted per process)."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def make_engine(cfg: SessionConfig) -> ProtegiEngine | TextGradEngine:
    ec = cfg.engine_config()
    return ProtegiEngine(ec) if cfg.method == "protegi" else TextGradEngine(ec)


def ahead_candidates(state: SessionState, st: Step) -> list:
    """The candidates worth validating ahead, best-ranked first: the ones the automatic policy could take
    (not flagged by the checks, not the current prompt unchanged)."""
    cur = normalise(state.current.prompt)
    return [c for c in st.proposal.candidates if not c.flagged and not c.flags and normalise(c.prompt) != cur]


class StepRunner:
    """Performs the phases of one session; reads its state, writes only through `session.emit`."""

    def __init__(self, session: SessionWriter):
        self.s = session

    @property
    def state(self):
        return self.s.folded

    # ---------- models, budget, running a phase ----------
    def models(self, models: Models | None) -> Models:
        """The models a phase uses: the ones given, else the session's; refused before the servers are confirmed."""
        if not self.state.servers_confirmed:
            raise SessionError("This session came from a bundle: confirm or change the servers it would contact "
                               f"({self.s.servers_text()}) before any call.")
        m = models if models is not None else self.s.models
        if m is None:
            raise SessionError("No models are connected to this session (read-only, or replay without a bundle).")
        return m

    def check_budget(self, est: dict, models: Models | None = None) -> None:
        """Stop the session (a 'stopped' event) and raise BudgetExceeded when `est` would exceed its budget."""
        m = models if models is not None else self.s.models
        why = estimate.over_budget(self.state, est, price_overrides=getattr(m, "price_overrides", None))
        if why:
            self.s.emit(E.Stopped(reason=f"budget: {why}"))
            raise BudgetExceeded(f"Stopped before exceeding the budget ({why}).")

    def context(self, m: Models, step: int, attempt: int, cancel: CancelToken | None,
                progress: PhaseProgress | None) -> StepContext:
        cfg, task = self.state.config, self.state.task
        return StepContext(task=task, runner=m.runner, forward_model=m.forward, backward_model=m.backward,
                           templates=Templates(cfg.templates, cfg.template_version), train=self.state.train_examples(),
                           seed=hash_seed(cfg.seed, step, attempt), attempt=attempt,
                           prefix=f"s{step}.", cancel=cancel, on_progress=progress,
                           forward_max_tokens=cfg.forward_max_tokens, locked=self.state.active_locks(),
                           flush=lambda sp, keys: self.s.emit(E.SpendOnly(step=step, phase="interim",
                                                                          spend=sp.to_json(), keys=keys)))

    def run(self, m: Models, coro_fn: Callable[[], Any], ctx: StepContext | None = None, phase: str = "",
            check: Callable[[Any], None] | None = None) -> Any:
        """Run a phase on one event loop; if it stops (failed calls, cancel, auth error, Ctrl-C), the calls it
        already paid for are logged as a 'spend' event, so the spend shown equals the spend made."""
        try:
            out = run_job(coro_fn, m.forward, m.backward)  # one event loop; the clients closed on it
            if check is not None:
                check(out)
            return out
        except BaseException as exc:
            if ctx is not None:
                self.record_unfinished(ctx, phase, exc)
            raise

    def record_unfinished(self, ctx: StepContext, phase: str, exc: BaseException) -> None:
        sp = ctx.spend
        if not sp.calls or not self.s.writable:  # failed calls cost nothing: no event
            return
        paid = Spend(calls=sp.calls, failed=sp.failed, input_tokens=sp.input_tokens,
                     output_tokens=sp.output_tokens, cost_usd=sp.cost_usd)  # cache hits are not spend
        step = self.state.step.index if (phase != "baseline" and self.state.step is not None) else 0
        try:
            self.s.emit(E.SpendOnly(step=step, phase=phase, reason=type(exc).__name__, spend=paid.to_json(),
                                    keys=ctx.keys))
        except (OSError, SessionError):
            pass
        ctx.spend, ctx.keys = Spend(), []

    @staticmethod
    def check_errors(rep: EvalReport, what: str, partial: bool = True, cached: bool = False) -> None:
        """Refuse to record a phase whose calls all failed; scores (baseline, validation) also refuse partial
        failures: a failed call is not a wrong answer, and a gate must not rest on one."""
        bad = [r for r in rep.rows if r.error]
        if rep.rows and len(bad) == len(rep.rows):
            raise SessionError(f"Every call of the {what} failed ({bad[0].error}). Nothing was recorded; "
                               f"check the model settings and try again.")
        if bad and not partial:
            raise SessionError(f"{len(bad)} of {len(rep.rows)} calls of the {what} failed (first: {bad[0].error}). "
                               f"Nothing was recorded; try again" + (" (the answers received are cached, so only the "
                                                                     "failed calls are sent again)." if cached else "."))

    # ---------- the phases ----------
    def baseline(self, *, models: Models | None = None, progress: PhaseProgress | None = None,
                 cancel: CancelToken | None = None) -> Version:
        """Step 0: the seed prompt scored on validation, so the first gate compares against something real."""
        s = self.state
        if s.versions:
            return s.versions[0]
        m = self.models(models)
        self.check_budget(estimate.baseline(s, price_overrides=m.price_overrides), m)
        ctx = self.context(m, 0, 0, cancel, progress)
        seed, val = s.config.seed_prompt, s.val_examples()

        async def go():
            ctx.plan("baseline", len(val))
            rows = await forward_batch(ctx, [seed] * len(val), val, phase="baseline")
            return EvalReport(seed, rows, list(s.task.labels))

        rep = self.run(m, go, ctx, "baseline",
                       check=lambda r: self.check_errors(r, "baseline", partial=False, cached=m.cached))
        self.s.emit(E.Baseline(prompt=seed, report=compact_report(rep), spend=ctx.spend.to_json(), keys=ctx.keys))
        return s.versions[0]

    def start_step(self, *, models: Models | None = None, progress: PhaseProgress | None = None,
                   cancel: CancelToken | None = None, regenerate: bool = False,
                   pause_after_forward: bool = False) -> Step:
        """Sample the minibatch, answer it, and propose gradients and candidates; `pause_after_forward` stops
        after the answers (a 'paused' event) until continue_step (core/guided.py). A step interrupted before
        its proposal runs again on its recorded minibatch; a regeneration is logged only once its answers (when
        pausing) or its proposal are ready, so cancelling it keeps what was on screen."""
        s = self.state
        s.current  # noqa: B018 - requires the baseline
        if s.stopped:
            raise SessionError(f"This session has stopped ({s.stopped}).")
        m = self.models(models)
        with self.s.lock:  # the step to start is decided and logged in one go
            open_step = s.step
            if open_step is not None and open_step.status not in ("started", "answered", "proposed"):
                raise SessionError(f"Step {open_step.index} is {open_step.status}; finish it first.")
            if open_step is not None and open_step.status in ("answered", "proposed") and not regenerate:
                return open_step
            index = s.next_step_index
            replacing = open_step if open_step is not None and open_step.status in ("answered", "proposed") else None
            attempt = (open_step.attempt + (1 if replacing else 0)) if open_step else 0
            self.check_budget(estimate.step(s, cached=m.cached, price_overrides=m.price_overrides), m)
            cfg = s.config.engine_config()
            size = cfg.minibatch if s.config.method == "protegi" else cfg.batch_size
            train = s.train_examples()  # without the excluded questions
            if open_step is not None and not replacing:  # interrupted before its proposal: the same sample
                batch = [s.task.example(i) for i in open_step.minibatch_ids]
            else:
                batch = random.Random(hash_seed(s.config.seed, index, attempt, "minibatch")).sample(
                    train, min(size, len(train)))
            beam = s.beam()
            started = E.StepStarted(step=index, attempt=attempt, parent_version=s.current.number, beam=beam,
                                    minibatch_ids=[e.id for e in batch])
            if not replacing:
                self.s.emit(started)
        ctx = self.context(m, index, attempt, cancel, progress)
        engine = make_engine(s.config)
        labels = list(s.task.labels)
        forward: list[E.Forward] = []

        def commit_replacement(evs: list) -> None:  # the regenerated attempt, logged in one go
            with self.s.lock:
                if s.step is not replacing or replacing.status not in ("answered", "proposed"):
                    exc = SessionError(f"Step {index} changed while it was regenerated; regenerate again.")
                    self.record_unfinished(ctx, "step", exc)
                    raise exc
                for ev in evs:
                    self.s.emit(ev)

        async def forward_then_propose():  # one event loop and one client for the whole step
            ctx.plan("minibatch", len(beam) * len(batch))
            rows = await asyncio.gather(*(forward_batch(ctx, [p] * len(batch), batch, phase="minibatch") for p in beam))
            reports = [EvalReport(p, r, labels) for p, r in zip(beam, rows)]
            self.check_errors(reports[0], "minibatch")
            if replacing:  # its spend stays in ctx: on a cancel it is still recorded, else with what is logged
                forward.append(E.Forward(step=index, reports=[compact_report(r) for r in reports]))
            else:
                self.s.emit(E.Forward(step=index, reports=[compact_report(r) for r in reports],
                                      spend=ctx.spend.to_json(), keys=ctx.keys))
                ctx.spend, ctx.keys = Spend(), []
            if pause_after_forward:
                if replacing:
                    fw = forward[0]
                    fw.spend, fw.keys = ctx.spend.to_json(), ctx.keys
                    commit_replacement([started, fw, E.StepPaused(step=index)])
                    ctx.spend, ctx.keys = Spend(), []
                else:
                    self.s.emit(E.StepPaused(step=index))
                return None
            if isinstance(engine, TextGradEngine):
                return await engine.propose(ctx, beam, reports, memory=s.memory())
            return await engine.propose(ctx, beam, reports)

        prop = self.run(m, forward_then_propose, ctx, "step")
        if prop is None:  # paused after the forward pass
            return s.steps[-1]
        checks.review(prop, s.task, getattr(cfg, "constraints", []), locked=s.active_locks())
        made = E.ProposalMade(step=index, proposal=prop.to_json(), spend=ctx.spend.to_json(), keys=ctx.keys)
        if replacing:
            commit_replacement([started, forward[0], made])
        else:
            self.s.emit(made)
        return s.steps[-1]

    def retry_failed(self, *, models: Models | None = None, progress: PhaseProgress | None = None,
                     cancel: CancelToken | None = None) -> Step:
        """Send the open proposal's failed calls again: the same minibatch, forward answers, samples and seeds,
        so the calls that succeeded come from the cache. Logged as 'proposal_retried'."""
        s = self.state
        st = s.step
        if st is None or st.status != "proposed":
            raise SessionError("There is no proposal waiting for a decision whose calls could be retried.")
        failed = st.failed_calls
        if not failed:
            raise SessionError(f"No call of step {st.index}'s proposal failed: nothing to retry.")
        m = self.models(models)
        self.check_budget({"calls": len(failed), "cost_usd": estimate.cost(
            s, len(failed), forward=False, price_overrides=m.price_overrides)}, m)
        ctx = self.context(m, st.index, st.attempt, cancel, progress)
        engine, cfg = make_engine(s.config), s.config.engine_config()
        beam, reports = list(st.beam), list(st.forward)

        async def propose():
            if isinstance(engine, TextGradEngine):
                return await engine.propose(ctx, beam, reports, memory=s.memory())
            return await engine.propose(ctx, beam, reports)

        prop = self.run(m, propose, ctx, "retry")
        checks.review(prop, s.task, getattr(cfg, "constraints", []), locked=s.active_locks())
        with self.s.lock:
            if s.step is not st or st.status != "proposed":
                exc = SessionError(f"Step {st.index} changed while its failed calls were retried.")
                self.record_unfinished(ctx, "retry", exc)
                raise exc
            self.s.emit(E.ProposalRetried(step=st.index, attempt=st.attempt, retried=len(failed),
                                          proposal=prop.to_json(), spend=ctx.spend.to_json(), keys=ctx.keys))
        return st

    def revert(self, version: int) -> Version:
        """Make version `version`'s prompt the current one again, as a new version (a 'reverted' event)."""
        with self.s.lock:
            s = self.state
            if s.step is not None:
                raise SessionError(f"Step {s.step.index} is open; decide it (or skip it) before reverting.")
            if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < len(s.versions):
                raise SessionError(f"There is no version {version}; this session has versions 0 to "
                                   f"{len(s.versions) - 1}.")
            if version == s.current.number:
                raise SessionError(f"Version {version} is the current version already.")
            self.s.emit(E.Reverted(to_version=version))
            return s.current

    def decide(self, action: str, candidate: str | None = None, prompt: str | None = None,
               override: bool = False) -> Step:
        """accept (a candidate id) | edit (your own text) | reject (all) | skip. A decision not yet validated
        may be changed (e.g. when its validation keeps failing: a prompt longer than the model's context).
        A prompt that changes a locked sentence is refused unless `override` (recorded on the decision)."""
        with self.s.lock:
            st = self.state.step
            if st is None or st.status not in ("proposed", "decided"):
                raise SessionError("There is no proposal waiting for a decision.")
            if action == "accept":
                if not candidate:
                    raise SessionError("Say which candidate to accept.")
                try:
                    prompt = st.proposal.candidate(candidate).prompt
                except KeyError as exc:
                    raise SessionError(str(exc.args[0])) from None
            elif action == "edit":
                if not (prompt or "").strip():
                    raise SessionError("The edited prompt is empty.")
            elif action not in E.Decision.ACTIONS:
                raise SessionError(f"Unknown action '{action}'. Use accept, edit, reject or skip.")
            if prompt is not None and action in ("accept", "edit") and \
                    normalise(prompt) == normalise(self.state.current.prompt):
                raise SessionError("That is the current prompt unchanged; edit it, or reject.")
            broken = marks.broken_locks(prompt, self.state.active_locks()) if action in ("accept", "edit") else []
            if broken and not override:
                n = len(broken)
                raise SessionError(f"That prompt changes {n} locked sentence{'s' if n > 1 else ''} "
                                   f"(\"{broken[0][:80]}\"): unlock {'them' if n > 1 else 'it'}, or take it with "
                                   f"an override.")
            self.s.emit(E.Decision(step=st.index, action=action, candidate=candidate,
                                   prompt=prompt if action in ("accept", "edit") else None,
                                   override=True if broken else None))
            return st

    def validate(self, *, models: Models | None = None, progress: PhaseProgress | None = None,
                 cancel: CancelToken | None = None) -> GateResult:
        """Score the chosen prompt and the current one on the same validation questions; compute the gate."""
        s = self.state
        st = s.step
        if st is None or st.status not in ("decided", "validated"):
            raise SessionError("Choose a candidate (or edit one) before validating.")
        if st.gate is not None:
            return st.gate
        m = self.models(models)
        if s.config.policy != "adaptive":
            self.check_budget(estimate.validation(s, cached=m.cached, price_overrides=m.price_overrides), m)
        ctx = self.context(m, st.index, st.attempt, cancel, progress)
        new, cur, g = self.run(m, self._scoring(m, ctx, st.decision["prompt"]), ctx, "validation")
        self._emit_validation(st, new, cur, g, ctx)
        return g

    def prevalidate(self, *, models: Models | None = None, progress: PhaseProgress | None = None,
                    cancel: CancelToken | None = None) -> dict[str, GateResult]:
        """Validate the open proposal's candidates ahead of the decision (best-ranked first, one job), so the
        gate of the one accepted is answered from the response cache at once. Nothing is decided or gated
        here: each candidate's calls are logged as a 'spend' event (phase 'prevalidation') of its step."""
        s = self.state
        st = s.step
        if st is None or st.status != "proposed":
            raise SessionError("There is no proposal waiting for a decision to validate ahead.")
        m = self.models(models)
        if not m.cached:
            raise SessionError("Validating ahead needs the response cache (the real validation re-uses its answers).")
        todo = ahead_candidates(s, st)
        est = estimate.prevalidation(s, len(todo), price_overrides=m.price_overrides)
        why = estimate.over_budget(s, est, price_overrides=m.price_overrides)
        if why:  # not the person's phase: refused, the session is not stopped
            raise BudgetExceeded(f"Not validating ahead: it would exceed the budget ({why}).")
        job = progress if isinstance(progress, JobProgress) else JobProgress(
            listener=(lambda jp: progress(jp.phase, jp)) if progress else None)  # one counter for every candidate
        gates: dict[str, GateResult] = {}

        async def each() -> None:
            for c in todo:
                ctx = self.context(m, st.index, st.attempt, cancel, job)
                try:
                    _, _, gates[c.id] = await self._scoring(m, ctx, c.prompt, budget=False)()
                except BaseException as exc:
                    self.record_unfinished(ctx, "prevalidation", exc)
                    raise
                if ctx.spend.calls or ctx.spend.cached:
                    self.s.emit(E.SpendOnly(step=st.index, phase="prevalidation", spend=ctx.spend.to_json(),
                                            keys=ctx.keys))

        run_job(each, m.forward, m.backward)
        return gates

    def _scoring(self, m: Models, ctx: StepContext, new_prompt: str, *, budget: bool = True):
        """The coroutine function that scores `new_prompt` against the current prompt on validation under
        the session's policy: -> (candidate report, current report, gate). Logs nothing."""
        s = self.state
        cur_prompt, labels = s.current.prompt, list(s.task.labels)
        if s.config.policy == "adaptive":
            return self._adaptive_looks(m, ctx, new_prompt, budget)
        val = s.val_examples()

        async def fixed():
            ctx.plan("validation", 2 * len(val))
            cur_rows, new_rows = await asyncio.gather(
                forward_batch(ctx, [cur_prompt] * len(val), val, phase="validation"),
                forward_batch(ctx, [new_prompt] * len(val), val, phase="validation"))
            cur, new = EvalReport(cur_prompt, cur_rows, labels), EvalReport(new_prompt, new_rows, labels)
            self._check_scores((cur, new), m)
            return new, cur, gate(s.config.policy, cur.correct_by_id(), new.correct_by_id(), s.config.alpha)

        return fixed

    def _check_scores(self, reports, m: Models) -> None:
        for r in reports:
            self.check_errors(r, "validation", partial=False, cached=m.cached)

    def _emit_validation(self, st: Step, new: EvalReport, cur: EvalReport, g: GateResult, ctx: StepContext) -> None:
        with self.s.lock:  # a decision changed meanwhile (another thread) must not get this validation
            if self.state.step is not st or (st.decision or {}).get("prompt") != new.prompt:
                exc = SessionError(f"The decision of step {st.index} changed while it was being validated; "
                                   f"validate again (the answers received are cached, if a cache is used).")
                self.record_unfinished(ctx, "validation", exc)  # what the calls cost is still recorded
                raise exc
            self.s.emit(E.Validation(step=st.index, candidate_report=compact_report(new),
                                     current_report=compact_report(cur), gate=g.to_json(), spend=ctx.spend.to_json(),
                                     keys=ctx.keys))

    def _adaptive_looks(self, m: Models, ctx: StepContext, new_prompt: str, budget: bool):
        """The adaptive gate: score a batch for the candidate (the current prompt's answers are reused when
        known), look, and extend batch by batch until the sequential test decides or the cap is reached."""
        s = self.state
        pool, batch, cur_prompt = s.val_examples(), s.config.gate_batch, s.current.prompt
        known, labels = s.known_current(), list(s.task.labels)

        async def looks():  # every look on one event loop, the budget checked before each
            cur_rows: list = []
            new_rows: list = []
            g = None
            for n in look_schedule(batch, len(pool)):
                part = pool[len(new_rows):n]
                missing = [e for e in part if e.id not in known]
                calls = len(part) + len(missing)
                if budget:
                    self.check_budget({"calls": calls, "cost_usd": estimate.cost(
                        s, calls, forward=True, price_overrides=m.price_overrides)}, m)
                if g is None:
                    ctx.plan("validation", calls)
                else:
                    ctx.job.add_plan("validation", calls)
                cur, new = await asyncio.gather(
                    forward_batch(ctx, [cur_prompt] * len(missing), missing, phase="validation"),
                    forward_batch(ctx, [new_prompt] * len(part), part, phase="validation"))
                self._check_scores((EvalReport(cur_prompt, cur, labels), EvalReport(new_prompt, new, labels)), m)
                known.update({r.id: r for r in cur})
                cur_rows.extend(known[e.id] for e in part)
                new_rows.extend(new)
                g = gate("adaptive", {r.id: r.correct for r in cur_rows}, {r.id: r.correct for r in new_rows},
                         s.config.alpha, batch=batch, cap=len(pool))
                if g.decided:
                    break
            return EvalReport(new_prompt, new_rows, labels), EvalReport(cur_prompt, cur_rows, labels), g

        return looks

    def confirm(self, accept: bool | None = None) -> Step:
        """Record the gate: the policy's verdict, or the person's override (accept True/False)."""
        with self.s.lock:
            st = self.state.step
            if st is None or st.gate is None:
                raise SessionError("Validate the chosen prompt first.")
            verdict = st.gate.passed and not self.state.heldout_leaks(st.decision["prompt"])  # an override is explicit
            final = verdict if accept is None else bool(accept)
            self.s.emit(E.Gate(step=st.index, verdict=verdict, accepted=final,
                               override=accept is not None and final != verdict))
            return self.state.steps[-1]

    # ---------- the automatic policy ----------
    def plan_auto(self, steps: int, *, more: bool = False) -> None:
        """Record the automatic run to finish: `steps` more finished steps. An interrupted run keeps its
        target unless `more` (resume --steps N: N more from now)."""
        with self.s.lock:
            if self.state.auto is None or more:
                self.s.emit(E.Auto(steps=self.state.finished_steps + steps, policy=self.state.config.policy))

    def run_auto(self, steps: int, *, models: Models | None = None, policy: str | None = None,
                 on_step: Callable[[Any, Step], None] | None = None, progress: PhaseProgress | None = None,
                 cancel: CancelToken | None = None) -> str:
        """Run until `steps` steps are done (counting earlier ones of this run), patience, budget or cancel.
        The automatic policy accepts the top-ranked unflagged candidate and applies the gate's verdict."""
        s, cfg = self.state, self.state.config
        if policy and policy != cfg.policy:
            raise SessionError("The gate policy is fixed when the session is created.")
        self.plan_auto(steps)  # before the baseline: a crash during it keeps the requested run for resume
        if not s.versions:
            self.baseline(models=models, progress=progress, cancel=cancel)
        target = s.auto["steps"]
        try:
            while s.finished_steps < target:
                if s.rejections_in_a_row() >= cfg.patience:
                    self.s.emit(E.Stopped(reason=f"patience: {cfg.patience} rejections in a row"))
                    return s.stopped
                st = s.step
                if st is None or st.status == "started":
                    st = self.start_step(models=models, progress=progress, cancel=cancel)
                if st.status == "answered":  # a guided step left paused: the automatic run continues it
                    st = guided.continue_step(self, models=models, progress=progress, cancel=cancel)
                if st.status == "proposed":
                    # flagged = the model ignored the output tags (e.g. it refused): a person may take it, the policy won't
                    cur = normalise(s.current.prompt)
                    # so are candidates the checks flagged: cut off, breaking a constraint, leaking data, or
                    # changing a locked sentence (also one locked after the proposal was made)
                    locks = s.active_locks()
                    pick = next((c for c in st.proposal.candidates
                                 if not c.flagged and not c.flags and normalise(c.prompt) != cur
                                 and not marks.broken_locks(c.prompt, locks)), None)
                    if pick is None:
                        self.decide("skip")
                        if on_step:
                            on_step(self.s, st)
                        continue
                    self.decide("accept", candidate=pick.id)
                if st.status == "decided":
                    self.validate(models=models, progress=progress, cancel=cancel)
                if s.step is not None and s.step.status == "validated":
                    self.confirm()
                if on_step:
                    on_step(self.s, s.steps[-1])
        except BudgetExceeded:
            return s.stopped or "budget"
        except Cancelled:  # the person pressed Stop: this automatic run is over (a crash keeps it for resume)
            self.s.emit(E.Auto(steps=None, policy=cfg.policy))
            raise
        self.s.emit(E.Auto(steps=None, policy=cfg.policy))
        return "done"

"""ProTeGi (Pryzant et al. 2023): textual gradients from groups of errors, edits, Monte-Carlo
paraphrases, bandit selection of the beam. Follows microsoft/LMOps `prompt_optimization`.

Calls that do not depend on each other run together: every error group's pipeline
(gradient → edits → paraphrases) is its own coroutine, and the bandit's rounds are batches.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from . import bandits, candidate_checks as checks
from .engine import StepContext, forward_batch, normalise
from .evaluate import EvalReport, EvalRow
from .lineage import CallRecord, Candidate, Gradient, Proposal
from .llm import Request, is_cut_off
from .meta_prompts import extract_tagged, tagged_spans
from .person_marks import locked_block

SAMPLED_TEMPERATURE = 0.7  # LMOps samples gradients, edits and paraphrases (its chatgpt() default)
GROUP_REPEAT_STRIDE = 1_000_000  # sample offset of a repeated error group (identical errors, so distinct keys)
ANSWER_EXCERPT_CHARS = 600  # of the model's raw answer, shown in each error block


@dataclass
class ProtegiConfig:
    beam: int = 4
    minibatch: int = 64
    n_groups: int = 4
    errors_per_group: int = 4
    reasons_per_group: int = 1
    edits_per_reason: int = 1
    paraphrases: int = 2
    max_successors: int = 8
    bandit: str = "ucb"  # one of bandits.ALGORITHMS, or "none"
    bandit_budget: int = 2048  # forward calls on train samples (LMOps: 8 rounds x 8 prompts x 32)
    samples_per_eval: int = 32
    arms_per_round: int = 8
    ucb_c: float = 1.0  # UCB's exploration constant (bandit "ucb")
    ucb_e_a: float | None = None  # UCB-E's exploration parameter a (bandit "ucb-e"); None = bandits.default_ucb_e_a
    max_tokens: int = 1024


PRESETS: dict[str, ProtegiConfig] = {
    "ProTeGi paper": ProtegiConfig(),
    "quick": ProtegiConfig(beam=1, minibatch=16, n_groups=2, errors_per_group=3, reasons_per_group=1,
                           edits_per_reason=1, paraphrases=1, max_successors=4,
                           bandit="successive-halving", bandit_budget=32, samples_per_eval=8, arms_per_round=2),
    # the product's preset: "quick"'s method settings; sessions start with the adaptive gate (session.default_policy)
    "recommended": ProtegiConfig(beam=1, minibatch=16, n_groups=2, errors_per_group=3, reasons_per_group=1,
                                 edits_per_reason=1, paraphrases=1, max_successors=4,
                                 bandit="successive-halving", bandit_budget=32, samples_per_eval=8, arms_per_round=2),
}


def answer_excerpt(text: str, limit: int = ANSWER_EXCERPT_CHARS) -> str:
    """The model's free-form answer, bounded: its start and its end (where the conclusion is)."""
    text = " ".join((text or "").split())
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def error_block(ctx: StepContext, rows: list[EvalRow]) -> str:
    return "\n".join(ctx.templates.text("protegi.error", index=i, text=ctx.task_text(r.id), label=r.gold,
                                        prediction=r.parsed if r.parsed is not None else "unparsed",
                                        answer=answer_excerpt(r.raw_output))
                     for i, r in enumerate(rows, 1)).strip()


def calls_per_parent(cfg: ProtegiConfig, n_failures: int) -> int:
    """Optimiser (backward) calls for one beam prompt with `n_failures` errors, before the bandit."""
    if n_failures == 0:
        return 0
    edits = cfg.n_groups * cfg.reasons_per_group
    return cfg.n_groups + edits + edits * cfg.edits_per_reason * cfg.paraphrases


class ProtegiEngine:
    method = "protegi"

    def __init__(self, cfg: ProtegiConfig):
        self.cfg = cfg
        self.failed: list[CallRecord] = []  # failed calls whose reply would have fed nothing visible

    async def _call(self, ctx: StepContext, template: str, values: dict, sample: int) -> tuple[str, CallRecord]:
        msgs = ctx.templates.messages(template, **values)
        req = Request(messages=msgs, temperature=SAMPLED_TEMPERATURE, max_tokens=self.cfg.max_tokens,
                      sample=sample, tag=template)
        c = (await ctx.backward([req], phase=template))[0]
        rec = CallRecord.of(template, msgs, c)
        if not c.ok:
            self.failed.append(rec)
        return c.text if c.ok else "", rec

    async def _group(self, ctx: StepContext, gi: int, parent: str, errors: list[EvalRow],
                     repeat: int = 0) -> tuple[list[Gradient], list[Candidate]]:
        """One error group's gradient → edits → paraphrases; `repeat` > 0 for a group identical to an earlier
        one: its sample indices move by GROUP_REPEAT_STRIDE, so its calls get their own cache keys."""
        cfg, att, off = self.cfg, ctx.attempt, repeat * GROUP_REPEAT_STRIDE
        errs = error_block(ctx, errors)
        ids = [r.id for r in errors]
        reply, rec = await self._call(ctx, "protegi.gradient",
                                      {"prompt": parent, "errors": errs, "num_reasons": cfg.reasons_per_group}, att + off)
        reasons = extract_tagged(reply, "<START>", "<END>")[: cfg.reasons_per_group]
        flagged = not reasons and bool(reply.strip())
        if flagged:
            reasons = [reply.strip()]
        missing = cfg.reasons_per_group - len(reasons)  # fewer reasons: fewer edits and paraphrases follow
        ctx.job.add_plan("edit", -missing)
        ctx.job.add_plan("paraphrase", -missing * cfg.edits_per_reason * cfg.paraphrases)
        grads = [Gradient(id=f"{ctx.prefix}g{gi}.{k}", text=t, failure_ids=ids, parent=parent,
                          flagged=flagged, call=rec if k == 1 else None) for k, t in enumerate(reasons, 1)]

        async def edit(g: Gradient) -> list[Candidate]:
            reply, rec = await self._call(ctx, "protegi.edit", {"prompt": parent, "errors": errs, "reason": g.text,
                                                                "num_edits": cfg.edits_per_reason,
                                                                "locked": locked_block(ctx.locked, parent)}, att + off)
            spans = tagged_spans(reply, "<START>", "<END>")[: cfg.edits_per_reason]
            flag = not spans and bool(reply.strip())
            if flag:
                spans = [(reply.strip().strip('"').strip(), True)]
            cut = is_cut_off(rec.finish_reason)
            edits = [Candidate(id=f"{g.id}.e{k}", prompt=t, parent=parent, origin="edit", gradient_id=g.id,
                               flagged=flag, call=rec if k == 1 else None,
                               flags=["cut off"] if (cut or not closed) else [])
                     for k, (t, closed) in enumerate(spans, 1)]

            async def para(e: Candidate, j: int) -> Candidate | None:
                reply, rec = await self._call(ctx, "protegi.paraphrase", {"prompt": e.prompt}, att * 100 + j + off)
                text = reply.strip()
                if text.lower().startswith("output:"):
                    text = text[7:].strip()
                text = text.strip('"').strip()
                if not text:
                    return None
                return Candidate(id=f"{e.id}.p{j}", prompt=text, parent=parent, origin="paraphrase",
                                 gradient_id=g.id, source_id=e.id, flagged=e.flagged, call=rec,
                                 flags=["cut off"] if is_cut_off(rec.finish_reason) else [])

            # a degenerate edit ("and") is dropped by checks.review; paraphrasing it would only pay for noise
            kept = [e for e in edits if not checks.degenerate(e.prompt)]
            ctx.job.add_plan("paraphrase", (len(kept) - cfg.edits_per_reason) * cfg.paraphrases)
            paras = await asyncio.gather(*(para(e, j) for e in kept for j in range(1, cfg.paraphrases + 1)))
            return edits + [p for p in paras if p is not None]

        cands = [c for group in await asyncio.gather(*(edit(g) for g in grads)) for c in group]
        return grads, cands

    async def _expand(self, ctx: StepContext, pi: int, parent: str, report: EvalReport) -> tuple[list[Gradient], list[Candidate]]:
        failures = [r for r in report.rows if not r.correct and not r.error]
        if not failures:
            return [], []
        rng = random.Random(f"{ctx.seed}:{pi}:groups")
        groups = [rng.sample(failures, min(self.cfg.errors_per_group, len(failures))) for _ in range(self.cfg.n_groups)]
        repeats, seen_groups = [], {}
        for errs in groups:  # few failures: groups repeat; a repeat needs its own sample indices
            key = tuple(r.id for r in errs)
            repeats.append(seen_groups.get(key, 0))
            seen_groups[key] = repeats[-1] + 1
        results = await asyncio.gather(*(self._group(ctx, f"{pi}.{gi}" if pi else gi, parent, errs, rep)
                                         for gi, (errs, rep) in enumerate(zip(groups, repeats), 1)))
        grads = [g for gs, _ in results for g in gs]
        cands, seen = [], {normalise(parent)}
        for _, cs in results:
            for c in cs:
                if normalise(c.prompt) not in seen:
                    seen.add(normalise(c.prompt))
                    cands.append(c)
        if len(cands) > self.cfg.max_successors:  # LMOps: random.sample(new_prompts, max_expansion_factor)
            keep = set(id(c) for c in rng.sample(cands, self.cfg.max_successors))
            cands = [c for c in cands if id(c) in keep]
        return grads, cands

    def plan(self, ctx: StepContext, reports: list[EvalReport]) -> None:
        """The optimiser calls this proposal will make, told to the progress before the first is sent."""
        cfg = self.cfg
        parents = sum(1 for r in reports if any(not x.correct and not x.error for x in r.rows))
        gradients = parents * cfg.n_groups
        edits = gradients * cfg.reasons_per_group
        ctx.plan("gradient", gradients)
        ctx.plan("edit", edits)
        ctx.plan("paraphrase", edits * cfg.edits_per_reason * cfg.paraphrases)

    async def propose(self, ctx: StepContext, beam: list[str], reports: list[EvalReport]) -> Proposal:
        self.plan(ctx, reports)
        self.failed = []
        results = await asyncio.gather(*(self._expand(ctx, i, p, r) for i, (p, r) in enumerate(zip(beam, reports))))
        # failed calls, in an order that does not depend on which answer landed first (replay compares them)
        prop = Proposal(calls=sorted(self.failed, key=lambda r: (r.template, r.key, repr(r.messages))))
        seen = {normalise(p) for p in beam}
        for grads, cands in results:
            prop.gradients += grads
            for c in cands:
                if normalise(c.prompt) not in seen:
                    seen.add(normalise(c.prompt))
                    prop.candidates.append(c)
        checks.review(prop, ctx.task)  # degenerate spans are dropped before the bandit pays for them
        if not prop.candidates:
            failures = sum(1 for r in reports[0].rows if not r.correct) if reports else 0
            prop.note = ("No failures in this minibatch: nothing to learn from. Skip, or regenerate with a new sample."
                         if failures == 0 else "The optimiser model produced no usable edits. Regenerate, or edit by hand."
                         + (f" {prop.note}" if prop.note else ""))
            return prop
        if self.cfg.bandit != "none":
            await self.screen(ctx, beam, prop)
        return prop

    async def screen(self, ctx: StepContext, beam: list[str], prop: Proposal) -> None:
        """Bandit selection over beam ∪ candidates on training samples; scores land on the candidates."""
        arms = list(beam) + [c.prompt for c in prop.candidates]
        train, cfg = ctx.train, self.cfg
        pulled: list[str] = []
        bandit = bandits.Bandit(cfg.bandit, len(arms), len(train), cfg.bandit_budget, seed=ctx.seed, c=cfg.ucb_c,
                                a=cfg.ucb_e_a, samples_per_eval=cfg.samples_per_eval, arms_per_round=cfg.arms_per_round)
        ctx.plan("bandit", min(cfg.bandit_budget, len(arms) * len(train)) if len(arms) > 1 else 0)
        while pulls := bandit.next_pulls():  # each batch is one concurrent forward batch on this loop
            rows = await forward_batch(ctx, [arms[a] for a, _ in pulls], [train[e] for _, e in pulls], phase="bandit")
            pulled.extend(r.key for r in rows if r.key)
            bandit.tell([None if r.error else 1.0 if r.correct else 0.0 for r in rows])  # a failed call is no answer
        ctx.job.end("bandit")
        res = bandit.result()
        nb = len(beam)
        for i, c in enumerate(prop.candidates):
            c.score, c.pulls = res.means[nb + i], res.pulls[nb + i]
        rank = {arm: r for r, arm in enumerate(res.ranking)}
        order = sorted(range(len(prop.candidates)), key=lambda i: rank[nb + i])
        prop.candidates = [prop.candidates[i] for i in order]
        prop.bandit = {"algorithm": res.algorithm, "spent": res.spent, "budget": cfg.bandit_budget,
                       "beam_scores": [{"prompt": beam[i], "score": res.means[i], "pulls": res.pulls[i],
                                        "failed": res.failed[i]} for i in range(nb)],
                       "failed": sum(res.failed),
                       "ranking": [arms[i] for i in res.ranking], "rounds": res.rounds, "keys": pulled}

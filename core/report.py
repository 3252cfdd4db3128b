"""The Markdown report of a session: every text from a bundle, dataset or model is escaped or fenced."""

from __future__ import annotations

import math

from .blame import BlameError, blame
from .blame_report import blame_markdown
from .diffs import unified
from .lineage import Proposal, Verdict, call_name, verdicts
from .markdown_text import fenced, md_text  # noqa: F401 - also for callers of this module
from .meta_prompts import TEMPLATES, Templates
from .session import Session, Step
from .testlock import reveal_summary

def _num(x: object, fmt: str) -> str:
    """A number as `fmt`; anything else (an odd value on disk) as escaped text, never an exception."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        try:
            return format(x, fmt)
        except ValueError:  # e.g. a float where a count belongs
            return format(x, "g")
    return md_text(x)


def _scores(rep) -> tuple[object, object, object]:
    """Accuracy and 95% interval of a report, or blanks when its rows hold odd values."""
    try:
        lo, hi = rep.interval
        return rep.accuracy, lo, hi
    except (TypeError, ValueError, ZeroDivisionError, AttributeError):
        return "?", "?", "?"


def markdown_report(session: Session) -> str:
    """Prompt versions, scores with intervals, diffs, decisions and cost, as Markdown."""
    cfg, sp = session.config, session.spend
    task = cfg.task.get("name") or cfg.task.get("file")
    title = [f"- Title: {md_text(cfg.title)}"] if str(cfg.title or "").strip() else []
    lines = [f"# Prompt Gradient Studio — session {md_text(session.id)}", "", *title,
             f"- Task: **{md_text(task)}**  ·  method: **{md_text(cfg.method)}** ({md_text(cfg.preset)})  ·  "
             f"gate: {md_text(cfg.policy)}",
             f"- Forward model: {md_text(cfg.forward)}  ·  backward model: {md_text(cfg.backward)}",
             f"- Spend: {_num(sp.calls, 'd')} calls, {_num(sp.input_tokens, 'd')} input + "
             f"{_num(sp.output_tokens, 'd')} output tokens, ${_num(sp.cost_usd, '.4f')} "
             f"(cache saved ${_num(sp.saved_usd, '.4f')} over {_num(sp.cached, 'd')} calls)",
             f"- {md_text(reveal_summary(session))}", "",
             "## Validation per step", "", "| step | decision | validation accuracy | 95% CI | vs current | p | outcome |",
             "|---|---|---|---|---|---|---|"]
    if session.versions and session.versions[0].report is not None:
        acc, lo, hi = _scores(session.versions[0].report)
        lines.append(f"| 0 | seed | {_num(acc, '.3f')} | {_num(lo, '.3f')}–{_num(hi, '.3f')} | | | baseline |")
    story = verdicts(session.events)
    for st in session.steps:
        d = md_text((st.decision or {}).get("action") or "—")
        v = story.get(st.index)
        outcome = md_text(st.outcome or "open") + (f": {md_text(v.text())}" if v and (v.override or st.outcome) else "")
        if st.gate:
            g = st.gate
            delta = (_num(g.new_accuracy - g.old_accuracy, "+.3f")
                     if all(isinstance(x, (int, float)) for x in (g.new_accuracy, g.old_accuracy)) else "")
            ci = list(g.new_ci) if isinstance(g.new_ci, (list, tuple)) and len(g.new_ci) == 2 else ["?", "?"]
            lines.append(f"| {_num(st.index, 'd')} | {d} | {_num(g.new_accuracy, '.3f')} | "
                         f"{_num(ci[0], '.3f')}–{_num(ci[1], '.3f')} | {delta} | "
                         f"{_num(g.p_value, '.3g')} | {outcome} |")
        else:
            lines.append(f"| {_num(st.index, 'd')} | {d} | | | | | {outcome} |")
    lines += ["", "## Prompt versions", ""]
    prev = None
    by_step = {st.index: st for st in session.steps}
    for v in session.versions:
        head = f"### Version {v.number} (step {_num(v.step, 'd')}, {md_text(v.origin)})"
        if v.report is not None:
            acc, lo, hi = _scores(v.report)
            head += f" — {_num(acc, '.3f')} [{_num(lo, '.3f')}–{_num(hi, '.3f')}]"
        lines += [head, "", *fenced(str(v.prompt)), ""]
        st = by_step.get(v.step) if v.number else None
        grads = [str(g.text) for g in (st.proposal.gradients if st and st.proposal else []) if g.text]
        if grads:
            lines += ["Feedback (textual gradient) it came from:", "", *fenced("\n\n".join(grads)), ""]
        if prev is not None:
            diff = unified(str(prev.prompt), str(v.prompt), f"v{prev.number}", f"v{v.number}")
            lines += ["Diff from the previous version:", "", *fenced(diff, "diff"), ""]
        prev = v
    lines += blame_section(session) + disputes_section(session)
    if session.steps:
        lines += ["## Steps", ""]
        for st in session.steps:
            lines += step_section(session, st, story.get(st.index))
        lines += meta_prompt_section(session)
    if session.stopped:
        lines += [f"Stopped: {md_text(session.stopped)}", ""]
    return "\n".join(lines)


def blame_section(session: Session) -> list[str]:
    """Where each sentence of the current prompt came from (core/blame_report.py)."""
    try:
        return [blame_markdown(blame(session)), ""]
    except BlameError:
        return []


def disputes_section(session: Session) -> list[str]:
    """Every disputed label and excluded question, in the order the person marked them."""
    disputes = getattr(session, "disputes", None) or []
    if not disputes:
        return []
    lines = ["## Disputed labels", "", "Excluded questions left minibatches and gates from the step shown on; "
             "nothing was deleted from the data.", "", "| question | what | from step | reason |", "|---|---|---|---|"]
    for d in disputes:
        what = "excluded" if d.exclude else "disputed (still asked)"
        lines.append(f"| {md_text(d.question)} | {what} | {md_text(d.step)} | {md_text(d.reason)} |")
    return lines + [""]


def meta_prompt_section(session: Session) -> list[str]:
    """Every meta-prompt the steps sent, as this session's templates (its overrides applied), placeholders kept."""
    used = list(dict.fromkeys(str(r.template) for st in session.steps if st.proposal
                              for r in st.proposal.all_calls()))
    if "protegi.gradient" in used:
        used.insert(used.index("protegi.gradient") + 1, "protegi.error")  # how each failure is shown inside it
    used = [t for t in used if t in TEMPLATES]
    if not used:
        return []
    cfg = session.config
    tpl = Templates(cfg.templates, cfg.template_version)
    lines = ["## Meta-prompts used", ""]
    for name in used:
        mp = tpl.get(name)
        mine = " (changed in this session)" if name in tpl.overrides else ""
        parts = ([f"[system]\n{mp.system}"] if mp.system.strip() else []) + [f"[user]\n{mp.user}"]
        title = call_name(name)
        lines += [f"### {md_text(title[:1].upper() + title[1:])} — template {md_text(name)}{mine}", "", md_text(mp.purpose), "",
                  *fenced("\n\n".join(parts)), ""]
    return lines


def _names(prop: Proposal | None) -> dict[str, str]:
    if prop is None:
        return {}
    out = {g.id: f"gradient {n}" for n, g in enumerate(prop.gradients, 1)}
    out.update({c.id: f"candidate {k}" for k, c in enumerate(prop.candidates, 1)})
    return out


def _answer(r) -> str:
    return "(call failed)" if r.error else r.parsed if r.parsed is not None else "(unparsed)"


def step_section(session: Session, st: Step, verdict: Verdict | None) -> list[str]:
    """The whole step: minibatch failures, gradients, candidates with their diffs, the meta-prompts sent, the
    decision and the gate with its numbers, and who decided (an override says so)."""
    prop, d, sp = st.proposal, st.decision or {}, st.spend
    names = _names(prop)
    parent = session.versions[st.parent_version].prompt if 0 <= st.parent_version < len(session.versions) else ""
    who = verdict.text() if verdict else (st.outcome or st.status)
    lines = [f"### Step {_num(st.index, 'd')} — {md_text(st.outcome or st.status)}: {md_text(who)}", ""]
    if st.attempt:
        lines.append(f"- Attempt {_num(st.attempt + 1, 'd')} (the earlier proposals were regenerated)")
    lines.append(f"- Spend: {_num(sp.calls, 'd')} calls ({_num(sp.cached, 'd')} from the cache), "
                 f"{_num(sp.input_tokens + sp.output_tokens, 'd')} tokens, ${_num(sp.cost_usd, '.4f')}")
    lines.append(f"- Parent: version {_num(st.parent_version, 'd')}")
    if st.forward:
        rep = st.forward[0]
        lines.append(f"- Minibatch: {_num(rep.n, 'd')} training questions, accuracy {_num(rep.accuracy, '.3f')} "
                     f"({md_text(rep.counts_line())}), {_num(len(rep.failures), 'd')} failures")
    action = d.get("action")
    if action == "accept":
        c = next((c for c in (prop.candidates if prop else []) if c.id == d.get("candidate")), None)
        lines.append(f"- Decision: accept {md_text(names.get(d.get('candidate'), d.get('candidate')))}"
                     + (f" ({md_text(c.origin)})" if c else ""))
    elif action == "edit":
        lines.append("- Decision: accept a hand edit")
    elif action:
        lines.append(f"- Decision: {'reject every candidate' if action == 'reject' else md_text(action)}")
    lines += _gate_lines(st, verdict)
    lines.append("")
    if prop is not None and prop.note:
        lines += [f"Note: {md_text(prop.note)}", ""]
    if st.forward and st.forward[0].failures:
        lines += ["#### Failures in the minibatch", "", "| question | gold | answer | status |", "|---|---|---|---|"]
        lines += [f"| {md_text(r.id)} | {md_text(r.gold)} | {md_text(_answer(r))} | {md_text(r.status)} |"
                  for rep in st.forward[:1] for r in rep.failures]
        lines.append("")
    if prop is not None:
        lines += _proposal_lines(prop, names, d.get("candidate") if action == "accept" else None)
    if action == "edit" and d.get("prompt"):
        lines += ["#### Your hand edit (diff from the parent version)", "",
                  *fenced(unified(str(parent), str(d["prompt"]), f"v{st.parent_version}", "edit"), "diff"), ""]
    return lines


def _gate_lines(st: Step, verdict: Verdict | None) -> list[str]:
    g = st.gate
    if g is None:
        return []
    ci = [g.old_ci, g.new_ci]
    ok = all(isinstance(x, (list, tuple)) and len(x) == 2 for x in ci)
    rng = [f"[{_num(x[0], '.3f')}–{_num(x[1], '.3f')}]" if ok else "" for x in ci]
    delta = (_num(g.new_accuracy - g.old_accuracy, "+.3f")
             if all(isinstance(x, (int, float)) for x in (g.new_accuracy, g.old_accuracy)) else "?")
    out = [f"- Gate ({md_text(g.policy)}, {md_text(g.test)}): current prompt {_num(g.old_accuracy, '.3f')} {rng[0]} "
           f"→ chosen {_num(g.new_accuracy, '.3f')} {rng[1]} on {_num(g.n, 'd')} validation questions; "
           f"change {delta}; p = {_num(g.p_value, '.3g')}"
           + (f"; e-value {_num(g.e_value, '.3g')}" if g.e_value is not None else ""),
           f"- Fixed {_num(len(g.fixed), 'd')} ({md_text(', '.join(map(str, g.fixed))) or 'none'}); "
           f"broke {_num(len(g.broke), 'd')} ({md_text(', '.join(map(str, g.broke))) or 'none'})"]
    if g.looks:
        out.append(f"- Looks at {md_text(', '.join(map(str, g.looks)))} questions; "
                   f"{_num(g.questions_used, 'd')} used")
    passed = verdict.gate_verdict if verdict is not None and verdict.gate_verdict is not None else g.passed
    out.append(f"- Gate verdict: {'accept' if passed else 'reject'} — {md_text(g.reason)}"
               + ("" if passed == g.passed else " (the prompt holds held-out question text)"))
    if verdict is not None and verdict.gate_verdict is not None:
        final = "accepted" if verdict.accepted else "rejected"
        out.append(f"- Outcome: **{final}**, " + ("an override: " if verdict.override else "") + md_text(verdict.text()))
    return out


def _proposal_lines(prop: Proposal, names: dict[str, str], chosen: str | None) -> list[str]:
    lines: list[str] = []
    if prop.gradients:
        lines += [f"#### Gradients ({len(prop.gradients)})", ""]
        for n, g in enumerate(prop.gradients, 1):
            lines += [f"Gradient {n}, from the failures {md_text(', '.join(map(str, g.failure_ids))) or '(none)'}"
                      + (" (parsed by fallback: the reply had no tags)" if g.flagged else "") + ":", "",
                      *fenced(str(g.text)), ""]
            for qid, fb in (g.feedback or {}).items():
                lines += [f"Per-question feedback on {md_text(qid)}:", "", *fenced(str(fb)), ""]
    if prop.bandit:
        b = prop.bandit
        lines += [f"Candidates screened with {md_text(b.get('algorithm'))}: {_num(b.get('spent'), 'd')} of "
                  f"{_num(b.get('budget'), 'd')} forward calls on training samples, ranked best first.", ""]
    if prop.candidates:
        lines += [f"#### Candidates ({len(prop.candidates)})", ""]
    for k, c in enumerate(prop.candidates, 1):
        src = [f"from {md_text(names.get(c.gradient_id, c.gradient_id))}"] if c.gradient_id else []
        if c.source_id:
            src.append(f"rephrasing {md_text(names.get(c.source_id, c.source_id))}")
        extra = [f"bandit score {_num(c.score, '.3f')} over {_num(c.pulls, 'd')} samples"] if c.score is not None else []
        extra += [f"flagged: {md_text(f)}" for f in c.flags]
        head = f"Candidate {k} ({md_text(c.origin)}{', ' + ', '.join(src) if src else ''})"
        head += (" — " + "; ".join(extra) if extra else "") + (" — **chosen**" if c.id == chosen else "")
        lines += [head + ":", "", *fenced(unified(str(c.parent), str(c.prompt), "parent", f"candidate {k}"), "diff"), ""]
    calls = prop.all_calls()
    if calls:
        counts: dict[str, int] = {}
        for rec in calls:
            counts[str(rec.template)] = counts.get(str(rec.template), 0) + 1
        lines += ["Optimiser calls (meta-prompts below): " + ", ".join(
            f"{md_text(call_name(t))} × {n}" for t, n in counts.items()), ""]
        failed = [r for r in calls if r.error]
        if failed:
            lines += ["Failed calls:", ""] + [f"- {md_text(call_name(r.template))}: {md_text(r.error)}" for r in failed]
            lines.append("")
    return lines

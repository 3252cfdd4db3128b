"""The Markdown report of a session: every text from a bundle, dataset or model is escaped or fenced."""

from __future__ import annotations

import html
import math
import re

from .diffs import unified
from .session import Session
from .testlock import reveal_summary

_MD_PUNCT = re.compile(r"([\\`*_\[\]|~])")  # inline markup; '<' and '&' are HTML-escaped first


def md_text(value: object) -> str:
    """One line of literal text for Markdown: no HTML, no emphasis, links, tables or line breaks."""
    s = re.sub(r"[\r\n\t\x0b\x0c\u2028\u2029]+", " ", str(value))
    s = "".join(ch for ch in s if ch >= " ")
    return _MD_PUNCT.sub(r"\\\1", html.escape(s, quote=True))


def fenced(text: str, info: str = "text") -> list[str]:
    """A fenced code block whose fence is longer than any backtick run in the text, so the text cannot end it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, text.rstrip("\n"), fence]


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
    for st in session.steps:
        d = md_text((st.decision or {}).get("action") or "—")
        outcome = md_text(st.outcome or "open")
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
    if session.stopped:
        lines += [f"Stopped: {md_text(session.stopped)}", ""]
    return "\n".join(lines)

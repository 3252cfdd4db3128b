"""Per-sentence blame as Markdown, for the session report: every sentence, gradient and answer is escaped or
fenced (core/report.py's md_text and fenced), so model text stays text."""

from __future__ import annotations

from .blame import SentenceBlame
from .markdown_text import fenced, md_text


def _delta(s: SentenceBlame) -> str:
    return f"{s.delta_pts:+.1f}" if s.delta_pts is not None else ""


def blame_markdown(sentences: list[SentenceBlame]) -> str:
    """A table of the sentences and the step that introduced each, then, per step once, its gradient and failures."""
    lines = ["## Where each sentence came from", ""]
    if not sentences:
        return "\n".join(lines + ["(The prompt has no sentences.)", ""])
    lines += ["| # | sentence | step | origin | Δ points |", "|---|---|---|---|---|"]
    for n, s in enumerate(sentences, 1):
        origin = md_text(s.origin) + (" (accepted by override)" if s.override else "")
        lines.append(f"| {n} | {md_text(s.text)} | {md_text(s.step)} | {origin} | {_delta(s)} |")
    lines.append("")
    shown: set[tuple] = set()
    for s in sentences:
        if s.step == 0 or (s.step, s.origin, s.gradient_id) in shown:
            continue
        shown.add((s.step, s.origin, s.gradient_id))
        numbers = [str(n) for n, x in enumerate(sentences, 1)
                   if (x.step, x.origin, x.gradient_id) == (s.step, s.origin, s.gradient_id)]
        head = f"### From step {md_text(s.step)} — {md_text(s.origin)}"
        head += f", {_delta(s)} points" if s.delta_pts is not None else ""
        lines += [head, "", f"Sentence{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}."
                  + (" Written by the person (a hand edit)." if s.origin == "person" else ""), ""]
        if s.gradient:
            lines += [f"Gradient {md_text(s.gradient_id or '')}:", "", *fenced(s.gradient), ""]
        if s.failures:
            lines += ["Failures it came from:", ""]
            for f in s.failures:
                gold = md_text(f.gold) if f.gold is not None else "unknown"
                answer = md_text(f.answer) if f.answer is not None else "unparsed"
                lines.append(f"- {md_text(f.id)}: gold {gold}, answered {answer}")
            lines.append("")
            for f in (f for f in s.failures if f.feedback):
                lines += [f"Feedback on {md_text(f.id)}:", "", *fenced(f.feedback), ""]
    return "\n".join(lines)

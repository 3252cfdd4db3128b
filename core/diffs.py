"""Word-level and line-level diffs between prompt versions."""

from __future__ import annotations

import difflib
import html
import re


def word_diff(old: str, new: str) -> list[tuple[str, str]]:
    """(op, text) pieces with op in 'equal' | 'delete' | 'insert'; whitespace kept with its word."""
    a = re.findall(r"\S+\s*", old)
    b = re.findall(r"\S+\s*", new)
    out: list[tuple[str, str]] = []
    # compare words without their trailing whitespace, so appending text does not mark the old last word
    matcher = difflib.SequenceMatcher(a=[w.strip() for w in a], b=[w.strip() for w in b], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.append(("equal", "".join(b[j1:j2])))
        else:
            if i2 > i1:
                out.append(("delete", "".join(a[i1:i2])))
            if j2 > j1:
                out.append(("insert", "".join(b[j1:j2])))
    return out


def word_diff_html(old: str, new: str) -> str:
    """Escaped HTML with <del>/<ins> around changed words; the texts themselves are never HTML."""
    parts = []
    for op, text in word_diff(old, new):
        t = html.escape(text)
        if op == "delete":
            gap = "" if text[-1:].isspace() else " "  # keep "old" and "new" words apart
            parts.append(f'<del style="background:#fdd;color:#900">{t}</del>{gap}')
        elif op == "insert":
            parts.append(f'<ins style="background:#dfd;color:#060;text-decoration:none">{t}</ins>')
        else:
            parts.append(t)
    return '<div style="white-space:pre-wrap;font-family:monospace;font-size:0.9em">' + "".join(parts) + "</div>"


def unified(old: str, new: str, a: str = "before", b: str = "after") -> str:
    """A unified line diff, one output line per changed line (also for texts without a final newline)."""
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), a, b, lineterm=""))
    return "\n".join(lines) + "\n" if lines else "(no change)\n"


def change_ratio(old: str, new: str) -> float:
    return 1.0 - difflib.SequenceMatcher(a=old.split(), b=new.split(), autojunk=False).ratio()

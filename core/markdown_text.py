"""Literal text in Markdown: one escaped line, or a fenced block no text can end (the report and blame)."""

from __future__ import annotations

import html
import re

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

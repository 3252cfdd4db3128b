"""Showing text that came from a dataset or a model: always as text, never as HTML or Markdown."""

from __future__ import annotations

import re
from typing import Iterable

import streamlit as st

from core.diffs import word_diff_html
from core.lineage import CallRecord
from core.llm import is_cut_off

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$^&=:\"'%@/])")


def md_escape(text: object, *, limit: int | None = None) -> str:
    """Text safe to put inside Markdown (labels, captions): every special character backslash-escaped,
    newlines folded to spaces; optionally cut to `limit` characters."""
    s = " ".join(str(text).split())
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", s)


def md_code(text: object) -> str:
    """Text as an inline Markdown code span (literal; backticks and newlines neutralised)."""
    s = " ".join(str(text).split()).replace("`", "ˋ")
    return f"`{s}`" if s else ""


def plain(text: object, *, box: bool = False, height: int | None = None, copy: bool = False) -> None:
    """Dataset or model text shown literally: st.text, or (box/copy/long) st.code without highlighting.

    A question containing `<script>`, HTML or `**Markdown**` appears exactly as written."""
    s = "" if text is None else str(text)
    lines = s.count("\n") + 1
    if box or copy or lines > 12 or len(s) > 1200:
        if height is None and (lines > 14 or len(s) > 1800):
            height = 300
        st.code(s, language=None, wrap_lines=True, height=height if height else "content")
    else:
        st.text(s)


def diff(old: str, new: str) -> None:
    """Word-level diff (deleted red, inserted green). word_diff_html escapes both texts itself:
    this is the only place the app renders HTML. st.html, not st.markdown: a blank line in a prompt
    would end Markdown's HTML block and the rest of the prompt would be rendered as Markdown."""
    body = word_diff_html(old, new)
    if len(old) + len(new) > 2400:  # long prompts: a scrolling box, so candidates side by side stay comparable
        with st.container(height=360):
            st.html(body)
    else:
        st.html(body)


def call_record(rec: CallRecord | None, *, title: str = "Exact call: messages sent and raw reply") -> None:
    """For teaching: the messages exactly as sent, and the raw reply, in an expander."""
    if rec is None:
        return
    with st.expander(title):
        meta = [f"template `{rec.template}`", f"{rec.input_tokens} in / {rec.output_tokens} out tokens"]
        meta.append("from cache" if rec.cached else f"${rec.cost_usd:.5f}")
        if getattr(rec, "finish_reason", ""):
            meta.append(f"finish reason `{md_escape(rec.finish_reason)}`" + (" (cut off at the token limit)"
                                                                           if is_cut_off(rec.finish_reason) else ""))
        st.caption(" · ".join(meta))
        for role, content in rec.messages:
            st.markdown(f"**{md_escape(role)}**")
            plain(content, box=True, height=240 if len(content) > 1500 else None)
        st.markdown("**reply**")
        if rec.error:
            st.error(f"The call failed: {md_escape(rec.error)}", icon=":material/warning:")
        plain(rec.reply, box=True)


def badge_row(items: Iterable[tuple[str, str]]) -> None:
    """Small coloured badges: (label, color). Labels must be app text, not dataset text."""
    items = list(items)
    if items:
        st.markdown(" ".join(f":{color}-badge[{md_escape(label)}]" for label, color in items))


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def ci(lo_hi: tuple[float, float] | None) -> str:
    if not lo_hi:
        return ""
    return f"95% CI {100 * lo_hi[0]:.0f}–{100 * lo_hi[1]:.0f}%"


def money(x: float | None) -> str:
    if x is None:
        return "–"
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def empty_state(message: str, page: str | None = None, label: str | None = None) -> None:
    """'Nothing here yet — do X' with a link to the page that does X."""
    st.info(message, icon=":material/info:")
    if page:
        st.page_link(page, label=label or "Go", icon=":material/arrow_forward:")

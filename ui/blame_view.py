"""Blame in the app: each sentence of a version as text, with the step, gradient and failures behind it in an
expander (the teaching view: failure -> gradient -> edit -> score). History's "Blame" tab is `blame_tab`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.blame import SentenceBlame, blame
from core.testlock import AFTER_TEST

from .render import md_escape, plain


def sentence_label(n: int, s: SentenceBlame) -> str:
    """The expander's label: sentence number, step, origin, score change; all escaped (origin comes from a bundle)."""
    parts = [f"Sentence {n}", "seed prompt" if s.step == 0 else f"step {md_escape(s.step)}"]
    if s.step:
        parts.append("your edit" if s.origin == "person" else md_escape(s.origin))
    if s.delta_pts is not None:
        parts.append(f"{s.delta_pts:+.1f} points at the gate")
    if s.override:
        parts.append("accepted by override")
    return " · ".join(parts)


def failures_frame(s: SentenceBlame) -> pd.DataFrame:
    """The failures behind a sentence's gradient: id, gold, answer (and the loss feedback when recorded)."""
    rows = [{"id": f.id, "gold": f.gold, "answer": f.answer if f.answer is not None else "(unparsed)",
             "feedback": f.feedback or ""} for f in s.failures]
    return pd.DataFrame(rows, columns=["id", "gold", "answer", "feedback"])


def render_blame(sentences: list[SentenceBlame]) -> None:
    """Every sentence as literal text, each with an expander saying where it came from."""
    if not sentences:
        st.caption("This prompt has no sentences.")
        return
    for n, s in enumerate(sentences, 1):
        plain(s.text)
        with st.expander(sentence_label(n, s)):
            if s.step == 0:
                st.caption("In the seed prompt from the start.")
                continue
            if s.origin == "person":
                st.caption("Written by the person in a hand edit of this step.")
            if s.gradient:
                st.markdown(f"**Gradient** {md_escape(s.gradient_id or '')}")
                plain(s.gradient, box=True)
            elif s.origin != "person":
                st.caption("No gradient is recorded for this candidate.")
            if s.failures:
                st.markdown("**Failures it came from**")
                st.dataframe(failures_frame(s), hide_index=True)


def blame_tab(s, after_test: set | frozenset = frozenset()) -> None:
    """Pick a version; each of its sentences with the step, gradient and failures that introduced it."""
    vs = s.versions
    names = [f"v{v.number} · step {v.step} · {v.origin}" + (f" · {AFTER_TEST}" if v.step in after_test else "")
             for v in vs]
    n = st.selectbox("Version", range(len(vs)), index=len(vs) - 1, format_func=names.__getitem__, key="blame_version")
    st.caption("Open a sentence to see where it came from: the failures behind the gradient, the gradient, the "
               "candidate that brought it in, and the gate's score change.")
    render_blame(blame(s, n))

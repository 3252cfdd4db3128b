"""The backward model's replies as it writes them (streamed), shown while a step job runs."""

from __future__ import annotations

import streamlit as st

from core.llm import TextSoFar, call_name
from core.progress import JobProgress

from .render import plain

WRITING = {"gradient": "Writing the gradient…", "loss": "Writing the feedback…", "edit": "Writing candidate…",
           "update": "Writing candidate…", "paraphrase": "Writing candidate…"}
WROTE = {"gradient": "The gradient", "loss": "The feedback", "edit": "Candidate", "update": "Candidate",
         "paraphrase": "Candidate"}


def heading(t: TextSoFar) -> str:
    """'Writing the gradient…' while streaming, 'The gradient (done)' after; fixed words, never model text."""
    what = call_name(t.tag)
    if t.done:
        return f"{WROTE.get(what, 'Reply')} (written)"
    return WRITING.get(what, "Writing…")


def draw(progress: JobProgress | None) -> None:
    """Each recent streamed call: a fixed heading and the text so far, shown literally (never HTML)."""
    texts = progress.live_texts() if progress is not None else []
    for t in texts:
        st.caption(heading(t))
        plain(t.text, box=True, height=160)

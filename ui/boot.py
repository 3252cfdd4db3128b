"""The app frame (page config, st.navigation, sidebar), and a guard so every page runs inside it.

Because the page files live in `pages/`, Streamlit's legacy multipage mode runs a page file by
itself on the first request of a server process that is not for "/" (and on every AppTest run).
`page_guard` notices, runs the frame right there (st.navigation then opens the same page, with the
same widget state), and stops the outer run.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import streamlit as st

_local = threading.local()


@contextlib.contextmanager
def _frame() -> Iterator[None]:
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def pages() -> list:
    return [
        st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/setup.py", title="Setup", icon=":material/tune:"),
        st.Page("pages/optimize.py", title="Optimize", icon=":material/auto_fix_high:"),
        st.Page("pages/history.py", title="History", icon=":material/timeline:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/science:"),
        st.Page("pages/studies.py", title="Studies", icon=":material/stacked_line_chart:"),
        st.Page("pages/settings.py", title="Settings", icon=":material/settings:"),
    ]


def main() -> None:
    """What app.py runs."""
    from . import sidebar

    st.set_page_config(layout="wide", page_title="Prompt Gradient Studio", page_icon="🧭")  # an emoji: no fetch
    with _frame():
        page = st.navigation(pages())
        sidebar.render(on_setup=getattr(page, "url_path", "") == "setup")
        page.run()


def page_guard() -> None:
    """Call first in every page: outside the frame, run the frame (which runs this page) and stop."""
    if getattr(_local, "depth", 0) > 0:
        return
    main()
    st.stop()

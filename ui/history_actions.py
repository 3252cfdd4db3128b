"""Callbacks of the History page (state changes happen here, not in the page script)."""

from __future__ import annotations

import streamlit as st


def pick_question(ids: list[str]) -> None:
    """A row clicked in the question grid (`ids`: the rows shown) becomes the question shown below it."""
    sel = st.session_state.get("grid_table") or {}
    rows = list(sel.get("selection", {}).get("rows", []) if hasattr(sel, "get") else [])
    if rows and 0 <= rows[0] < len(ids):
        st.session_state["grid_q"] = ids[rows[0]]

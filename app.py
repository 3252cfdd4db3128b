"""Prompt Gradient Studio: tune a prompt with textual gradients, a person approving every step."""

import streamlit as st

from ui import sidebar

st.set_page_config(layout="wide", page_title="Prompt Gradient Studio", page_icon=":material/auto_fix_high:")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/setup.py", title="Setup", icon=":material/tune:"),
    st.Page("pages/optimize.py", title="Optimize", icon=":material/auto_fix_high:"),
    st.Page("pages/history.py", title="History", icon=":material/timeline:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/science:"),
    st.Page("pages/settings.py", title="Settings", icon=":material/settings:"),
]

page = st.navigation(PAGES)
sidebar.render()
page.run()

"""Prompt Gradient Studio: tune a prompt with textual gradients, a person approving every step."""

import streamlit as st

from ui import sidebar

st.set_page_config(layout="wide", page_title="Prompt Gradient Studio", page_icon="🧭")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon="🧭", default=True),
    st.Page("pages/setup.py", title="Setup", icon="🛠️"),
    st.Page("pages/optimize.py", title="Optimize", icon="🎯"),
    st.Page("pages/history.py", title="History", icon="📈"),
    st.Page("pages/evaluate.py", title="Evaluate", icon="🧪"),
    st.Page("pages/settings.py", title="Settings", icon="⚙️"),
]

page = st.navigation(PAGES)
sidebar.render()
page.run()

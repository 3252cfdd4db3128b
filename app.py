"""Prompt Gradient Studio: tune a prompt with textual gradients, a person approving every step.

Run: streamlit run app.py — the pages are in pages/, shared UI helpers in ui/, the engine in core/.
"""

from ui import boot

boot.main()

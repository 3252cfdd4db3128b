"""Streamlit glue shared by the pages: session access, jobs, sidebar and rendering helpers.

`core/` never imports this package (nor streamlit); pages stay thin by calling these helpers.
"""

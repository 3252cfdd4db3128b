"""Where sessions and the response cache live, resolved at each call (tests and users set the variables late).

PGS_SESSIONS_DIR / PGS_CACHE_DIR first, then PGS_HOME/sessions and PGS_HOME/cache, then the same two folders in
the current working folder: `streamlit run app.py` in the repo keeps them at its top, and an installed `pgs`
writes beside the user, never into site-packages.
"""

from __future__ import annotations

import os
from pathlib import Path

SESSIONS_HELP = "sessions folder (default: PGS_SESSIONS_DIR, else $PGS_HOME/sessions, else ./sessions in the current folder)"
CACHE_HELP = "response cache folder (default: PGS_CACHE_DIR, else $PGS_HOME/cache, else ./cache in the current folder)"


def home() -> Path:
    """PGS_HOME, or the current working folder."""
    value = os.environ.get("PGS_HOME")
    return Path(value).expanduser() if value else Path.cwd()


def sessions_dir() -> Path:
    """PGS_SESSIONS_DIR, else <home>/sessions."""
    value = os.environ.get("PGS_SESSIONS_DIR")
    return Path(value).expanduser() if value else home() / "sessions"


def cache_dir() -> Path:
    """PGS_CACHE_DIR, else <home>/cache."""
    value = os.environ.get("PGS_CACHE_DIR")
    return Path(value).expanduser() if value else home() / "cache"

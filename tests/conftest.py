"""Shared test set-up: the scripted fake provider (`fake:<name>` specs) is registered for every test."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fake_model import register  # noqa: E402

register()
os.environ.setdefault("PGS_TEST", "1")

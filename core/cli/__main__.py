"""`python -m core.cli`: the `pgs` command."""

import sys

from core.cli import main

sys.exit(main())

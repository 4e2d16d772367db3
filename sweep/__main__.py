"""``python -m sweep``: the ``sweep`` command."""

import sys

from sweep._entry import run

sys.exit(run())

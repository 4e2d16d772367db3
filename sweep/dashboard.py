"""``python -m sweep.dashboard``: the same as ``sweep dashboard``."""

import sys

from sweep._entry import run

if __name__ == "__main__":
    sys.exit(run("dashboard"))

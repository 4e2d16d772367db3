"""``python -m sweep.report``: the same as ``sweep report``."""

import sys

from sweep._entry import run

if __name__ == "__main__":
    sys.exit(run("report"))

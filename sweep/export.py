"""``python -m sweep.export``: the same as ``sweep export``."""

import sys

from sweep._entry import run

if __name__ == "__main__":
    sys.exit(run("export"))

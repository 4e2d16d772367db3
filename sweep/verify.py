"""``python -m sweep.verify``: the same as ``sweep verify``."""

import sys

from sweep._entry import run

if __name__ == "__main__":
    sys.exit(run("verify"))

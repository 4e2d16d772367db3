"""``python -m sweep.worker``: the same as ``sweep worker``."""

import sys

from sweep._entry import run

if __name__ == "__main__":
    sys.exit(run("worker"))

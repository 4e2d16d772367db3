"""``python -m sweep.launch``: the same as ``sweep launch``."""

import sys

from sweep._entry import run

if __name__ == "__main__":
    sys.exit(run("launch"))

"""``python -m sweep.studies``: the same as ``sweep studies``.

(``sweep/studies/``, beside this module, holds the packaged study files: a folder without
``__init__.py``, so ``import sweep.studies`` finds this module, never that folder.)
"""

import sys

from sweep._entry import run

if __name__ == "__main__":
    sys.exit(run("studies"))

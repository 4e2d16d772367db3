"""``python -m benchmarks [--quick] [--only NAME ...]``: run the benchmarks, print one line
each (``NAME: ratio R (floor F) <details>``), and write them to ``benchmarks/results.json``.

Exits 0 when every benchmark ran, whether or not its ratio met its floor; 1 if one crashed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from benchmarks import backends, claims, memory, overhead, signals, suite

BENCHMARKS = {
    "overhead": overhead.overhead,
    "augment": suite.augment,
    "search": suite.search,
    "startup": suite.startup,
    "workers": suite.workers,
    "gpu_packing": suite.gpu_packing,
    "claims": claims.claims,
    "long_study": claims.long_study,
    "signals": signals.signals,
    "backends": backends.backends,
    "memory": memory.memory,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller runs, under 10 minutes in all")
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME", help="run these")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results.json",
        help="where to write the results (default: benchmarks/results.json)",
    )
    args = p.parse_args(argv)
    if {"augment", "search"} & set(args.only or BENCHMARKS):
        # These train in this process: quiet TensorFlow's start-up and Keras's dataset notes.
        import warnings

        from sweep.devices import import_tensorflow

        warnings.filterwarnings("ignore", category=UserWarning, module="keras")
        import_tensorflow()
    started = time.time()
    results, crashed = [], False
    for name in args.only or BENCHMARKS:
        t0 = time.perf_counter()
        try:
            result = BENCHMARKS[name](args.quick)
        except Exception:  # noqa: BLE001 - report it and go on with the others
            crashed = True
            print(f"{name}: error\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            continue
        result.data["seconds"] = round(time.perf_counter() - t0, 1)
        print(result.line(), flush=True)
        results.append({**asdict(result), "met": result.met})
        args.out.write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                    "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
                    "results": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())

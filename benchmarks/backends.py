"""One training epoch of the baseline family on each Keras backend installed, side by side.

``python -m benchmarks.backends BACKEND IMAGES`` is one side: in a process of its own (Keras
takes its backend once per process), it trains sweep's baseline network through sweep's input
pipeline for a first epoch (which compiles), then times 3 more and prints the fastest, wall
and CPU, as JSON.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks.suite import REPO, Result, Timing, _env, rotated

__all__ = ["backends"]


def _epoch(backend: str, images: int) -> Timing:
    from sweep import devices

    devices.configure(backend)
    import keras

    from sweep import data, models
    from sweep.config import Params

    x, y, _, _ = data.synthetic(images, 10, seed=0)
    keras.utils.set_random_seed(0)
    model = models.build(Params(family="baseline", batch_size=64))
    model.fit(data.train_dataset(x, y, batch_size=64, seed=0), epochs=1, verbose=0)
    best = Timing(float("inf"), float("inf"))
    for _ in range(3):
        feed = data.train_dataset(x, y, batch_size=64, seed=0)
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(feed, epochs=1, verbose=0)
        best = Timing(
            min(best.wall, time.perf_counter() - start), min(best.cpu, time.process_time() - cpu)
        )
    return best


def _side(backend: str, images: int) -> Timing:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.backends", backend, str(images)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{backend} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return Timing(**json.loads(done.stdout.splitlines()[-1]))


def backends(quick: bool) -> Result:
    """The fastest epoch of the baseline family (batch 64) on JAX and on PyTorch over the
    same epoch on TensorFlow, each backend that is installed, each in its own process after a
    first epoch that compiles; synthetic images (2,000 with --quick, else 10,000), the sides
    taken in a rotating order, 2 rounds. No floor: what a backend costs, for choosing one."""
    import importlib.util

    from sweep.config import BACKENDS

    images = 2000 if quick else 10000
    installed = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
    sides: dict[str, Callable[[], Timing]] = {
        b: functools.partial(_side, b, images) for b in installed
    }
    best = rotated(sides, rounds=2)
    tf = best["tensorflow"]
    others = [b for b in installed if b != "tensorflow"]
    shown = ", ".join(f"{b} {best[b].wall / tf.wall:.2f}" for b in others)
    return Result(
        "backends",
        best[others[0]].wall / tf.wall if others else None,
        None,
        details=f"{shown} vs tensorflow 1.0 (an epoch of {images} images, baseline family: "
        + ", ".join(f"{b} {best[b]}" for b in installed)
        + ")",
        data={b: {"wall_s": best[b].wall, "cpu_s": best[b].cpu} for b in installed},
    )


if __name__ == "__main__":
    timing = _epoch(sys.argv[1], int(sys.argv[2]))
    print(json.dumps({"wall": timing.wall, "cpu": timing.cpu}))

"""``python -m sweep.verify``: does the winner's lead survive a change of random seed?

Re-trains the baseline and the study's K best trials R times each, with fresh seeds (not the
trials' own), on the study's own data. Each repeat is recorded as a completed trial of the
companion study ``NAME.verify`` in the same storage, so the dashboard shows them and a run
that is stopped resumes where it left off: repeats already recorded are not trained again.

For each trial it prints the mean validation and test accuracy with a 95% confidence
interval (Student's t), the lead over the baseline, and whether that lead is significant:
Welch's t-test (unequal variances) on the validation accuracies, two-sided, at ``--alpha``.
The same table is attached to the study's note in the dashboard.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweep import cli
from sweep.errors import TrialFailure, UserError

if TYPE_CHECKING:
    import optuna

    from sweep.config import StudySpec
    from sweep.data import Splits

__all__ = ["Estimate", "compare", "estimate", "main", "parser", "repeat_seed"]

log = logging.getLogger("sweep")

SUFFIX = ".verify"  # the companion study that holds the repeats


def parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="python -m sweep.verify",
        description="Re-train the baseline and the K best trials R times with fresh seeds; "
        "print mean ± 95% CI and whether each lead over the baseline is significant "
        "(Welch's t-test).",
    )
    cli.add_existing_study_options(p)
    p.add_argument("--top", type=cli.positive, default=3, metavar="K", help="best trials (3)")
    p.add_argument(
        "--repeats", type=cli.positive, default=5, metavar="R", help="runs per trial (5; >= 2)"
    )
    p.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of the test (0.05)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=None,
        help="where CIFAR-10 is, as for sweep.launch",
    )
    return p


def repeat_seed(study_seed: int, number: int, repeat: int) -> int:
    """A fresh training seed for repeat ``repeat`` of trial ``number``: never the trial's own
    (``seed * 100003 + number``), and different for every (trial, repeat)."""
    import numpy as np

    return int(np.random.SeedSequence([study_seed, number, repeat, 1]).generate_state(1)[0])


@dataclass(frozen=True)
class Estimate:
    """Mean and 95% confidence half-width of n values (half-width NaN below 2)."""

    n: int
    mean: float
    half_width: float

    def show(self) -> str:
        if self.n == 0:
            return "no runs"
        ci = "" if math.isnan(self.half_width) else f" ± {100 * self.half_width:.2f}"
        return f"{100 * self.mean:.2f}{ci}%"


def estimate(values: list[float]) -> Estimate:
    """Mean ± t(0.975, n-1) · s / sqrt(n)."""
    import numpy as np
    from scipy import stats

    n = len(values)
    if n == 0:
        return Estimate(0, math.nan, math.nan)
    mean = float(np.mean(values))
    if n < 2:
        return Estimate(n, mean, math.nan)
    sem = float(np.std(values, ddof=1)) / math.sqrt(n)
    return Estimate(n, mean, float(stats.t.ppf(0.975, n - 1)) * sem)


def compare(values: list[float], baseline: list[float]) -> float:
    """Two-sided p-value of Welch's t-test of ``values`` against ``baseline``; NaN when it is
    undefined (fewer than 2 runs on a side, or both without any spread)."""
    from scipy import stats

    if len(values) < 2 or len(baseline) < 2:
        return math.nan
    if len(set(values)) == 1 and len(set(baseline)) == 1:
        return 0.0 if values[0] != baseline[0] else 1.0
    with warnings.catch_warnings():
        # Near-identical runs (float32 accuracies) make SciPy warn of precision loss.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(values, baseline, equal_var=False).pvalue)


# --------------------------------------------------------------------------- the runs


def _targets(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """The completed baseline, then the ``top`` best other completed trials."""
    from optuna.trial import TrialState

    from sweep.objective import baseline_trial

    base = baseline_trial(study)
    if base is None:
        raise UserError(
            f"study {study.study_name!r} has no completed baseline trial to compare with; "
            "let the study run its baseline first (python -m sweep.launch)"
        )
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    others = sorted(
        (t for t in done if not t.user_attrs.get("is_baseline") and t.value is not None),
        key=lambda t: (-(t.value or 0.0), t.number),
    )
    if not others:
        raise UserError(f"study {study.study_name!r} has no completed trial besides the baseline")
    return [base, *others[:top]]


def _companion(study: optuna.Study) -> optuna.Study:
    import optuna

    name = study.study_name + SUFFIX
    companion = optuna.create_study(
        study_name=name, storage=study._storage, direction="maximize", load_if_exists=True
    )
    companion.set_user_attr("verifies", study.study_name)
    return companion


def _run(
    companion: optuna.Study,
    target: optuna.trial.FrozenTrial,
    repeats: int,
    *,
    spec: StudySpec,
    splits: Splits,
) -> None:
    """Train what is missing of ``target``'s repeats, recording each as it ends."""
    import optuna

    from sweep.config import Params
    from sweep.objective import train

    have = {
        t.user_attrs.get("repeat")
        for t in companion.get_trials(deepcopy=False)
        if t.user_attrs.get("source_trial") == target.number
    }
    params = Params(**target.user_attrs["params"])
    for r in range(repeats):
        if r in have:
            continue
        seed = repeat_seed(spec.seed, target.number, r)
        attrs: dict[str, Any] = {
            "source_trial": target.number,
            "repeat": r,
            "seed": seed,
            "is_baseline": bool(target.user_attrs.get("is_baseline")),
            "params": asdict(params),
        }
        try:
            _, result = train(params, splits, spec=spec, seed=seed)
        except TrialFailure as exc:
            log.warning("trial %d, repeat %d: %s", target.number, r, exc)
            attrs["failure"] = str(exc)
            state, value = optuna.trial.TrialState.FAIL, None
        else:
            attrs |= {
                "val_accuracy": result.val_accuracy,
                "test_accuracy": result.test_accuracy,
                "test_loss": result.test_loss,
                "epochs_run": result.epochs_run,
            }
            state, value = optuna.trial.TrialState.COMPLETE, result.val_accuracy
            log.info(
                "trial %d, repeat %d/%d: val %.4f, test %.4f",
                target.number,
                r + 1,
                repeats,
                result.val_accuracy,
                result.test_accuracy,
            )
        # One insert, whole or not at all: a killed run leaves no half-recorded repeat.
        companion.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params=target.params,
                distributions=target.distributions,
                user_attrs=attrs,
            )
        )


def _results(
    companion: optuna.Study, targets: list[optuna.trial.FrozenTrial], repeats: int, alpha: float
) -> tuple[list[str], list[list[str]]]:
    """The verification table's header and cells."""
    from optuna.trial import TrialState

    runs: dict[int, list[optuna.trial.FrozenTrial]] = {t.number: [] for t in targets}
    for t in companion.get_trials(deepcopy=False):
        n, r = t.user_attrs.get("source_trial"), t.user_attrs.get("repeat", repeats)
        if n in runs and r < repeats:
            runs[n].append(t)

    def metric(number: int, key: str) -> list[float]:
        return [t.user_attrs[key] for t in runs[number] if t.state == TrialState.COMPLETE]

    base = targets[0].number
    header = ["trial", "runs", "val acc (95% CI)", "test acc (95% CI)", "Δval pp", "p (Welch)"]
    header += ["Δtest pp", "lead"]
    body = []
    for target in targets:
        val, test = metric(target.number, "val_accuracy"), metric(target.number, "test_accuracy")
        failed = len(runs[target.number]) - len(val)
        cells = [
            f"{target.number}{'*' if target.number == base else ''}",
            f"{len(val)}" + (f" (+{failed} diverged)" if failed else ""),
            estimate(val).show(),
            estimate(test).show(),
        ]
        if target.number == base:
            cells += ["", "", "", "baseline"]
        else:
            base_val, base_test = metric(base, "val_accuracy"), metric(base, "test_accuracy")
            p = compare(val, base_val)
            d_val = 100 * (estimate(val).mean - estimate(base_val).mean)
            d_test = 100 * (estimate(test).mean - estimate(base_test).mean)
            if math.isnan(p):
                lead = "too few runs"
            elif p < alpha:
                lead = "significant" if d_val > 0 else "significantly worse"
            else:
                lead = "not significant"
            shown_p = "" if math.isnan(p) else f"{p:.3g}"
            cells += [f"{d_val:+.2f}", shown_p, f"{d_test:+.2f}", lead]
        body.append(cells)
    return header, body


def _main(args: argparse.Namespace) -> int:
    from sweep import data, devices
    from sweep.artifacts import refresh_study
    from sweep.report import VERIFICATION_ATTR, render_markdown, render_plain
    from sweep.study import stored_spec

    if args.repeats < 2:
        raise UserError("--repeats must be at least 2: one run gives no confidence interval")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha {args.alpha} is not a probability; use e.g. 0.05")
    study, _ = cli.open_existing(args)
    spec = stored_spec(study)
    stored = study.user_attrs.get("fingerprint", {})
    spec = replace(
        spec,
        dataset=stored.get("dataset", spec.dataset),
        seed=stored.get("seed", spec.seed),
        validation_split=stored.get("validation_split", spec.validation_split),
    )
    targets = _targets(study, args.top)
    splits = data.load(
        spec.dataset,
        seed=spec.seed,
        validation_split=spec.validation_split,
        subset=stored.get("subset"),
        data_dir=args.data_dir,
    )
    devices.configure_tensorflow()
    companion = _companion(study)
    log.info(
        "verifying trials %s of %r, %d runs each, recorded in study %r",
        ", ".join(str(t.number) for t in targets),
        study.study_name,
        args.repeats,
        companion.study_name,
    )
    interrupted = False
    try:
        for target in targets:
            _run(companion, target, args.repeats, spec=spec, splits=splits)
    except KeyboardInterrupt:
        interrupted = True
    header, body = _results(companion, targets, args.repeats, args.alpha)
    print(render_plain(header, body))
    if interrupted:
        print("interrupted: the runs that finished are kept; run the same command to resume")
        return 130
    note = (
        f"## Verification: {args.repeats} runs each with fresh seeds\n\n"
        "Mean ± 95% confidence interval; p is Welch's t-test of the validation accuracies "
        f"against the baseline's (marked `*`), significant below {args.alpha:g}. The runs are "
        f"in study `{companion.study_name}`.\n\n" + render_markdown(header, body)
    )
    study.set_user_attr(VERIFICATION_ATTR, note)
    refresh_study(study)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(parser(), _main, argv)


if __name__ == "__main__":
    sys.exit(main())

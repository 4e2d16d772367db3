"""Does the winner's lead survive a change of random seed? (``sweep verify``,
:func:`sweep.verify`)

Re-trains the baseline and the study's K best trials R times each, with fresh seeds (not the
trials' own), on the study's own data. Each repeat is recorded as a completed trial of the
companion study ``NAME.verify`` in the same storage, so the dashboard shows them and a run
that is stopped resumes where it left off: repeats already recorded are not trained again.

For each trial it prints the mean validation and test accuracy with a 95% confidence
interval (Student's t), the lead over the baseline, and whether that lead is significant:
Welch's t-test (unequal variances) on the validation accuracies, two-sided. K trials tested
against one baseline are K chances of a false "significant" (about 23% at K = 5 and 0.05), so
the p-values are adjusted by Holm's step-down method, which keeps the chance of any false
"significant" among the K at ``--alpha``; both the raw and the adjusted p-values are shown.
The same table is attached to the study's note in the dashboard.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sweep import devices, models, records, study, tables
from sweep.artifacts import StudyRefresher
from sweep.errors import TrialFailure, UserError
from sweep.records import Scores, TrialRecord
from sweep.run import COMPANION_SUFFIX
from sweep.training import train

if TYPE_CHECKING:
    import optuna

    from sweep.data import Splits
    from sweep.run import RunOptions

__all__ = ["Estimate", "Verification", "compare", "estimate", "holm", "repeat_seed", "verify"]

log = logging.getLogger("sweep")


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


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the k-th smallest of m is
    multiplied by m - k + 1, and each kept at least as large as the one before (capped at 1).
    A trial's lead is significant at level alpha, with the family-wise error over all m kept
    at alpha, when its adjusted p-value is below alpha. NaN (too few runs) stays NaN and is
    not counted in m."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - k) * p))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------- the runs


def _targets(trials: list[TrialRecord], name: str, top: int) -> list[TrialRecord]:
    """The completed baseline, then the ``top`` best other completed trials."""
    base = records.baseline(trials)
    if base is None:
        raise UserError(
            f"study {name!r} has no completed baseline trial to compare with; "
            "let the study run its baseline first (sweep launch)"
        )
    others = sorted(
        (t for t in trials if t.complete and not t.is_baseline and t.params is not None),
        key=lambda t: (-(t.value or 0.0), t.number),
    )
    if not others:
        raise UserError(f"study {name!r} has no completed trial besides the baseline")
    return [base, *others[:top]]


def _companion(the_study: optuna.Study, storage: optuna.storages.BaseStorage) -> optuna.Study:
    import optuna

    companion = optuna.create_study(
        study_name=the_study.study_name + COMPANION_SUFFIX,
        storage=storage,
        direction="maximize",
        load_if_exists=True,
    )
    study.mark_companion(companion, the_study.study_name)
    return companion


def _run(
    companion: optuna.Study,
    source: optuna.trial.FrozenTrial,
    target: TrialRecord,
    repeats: int,
    *,
    the_run: RunOptions,
    splits: Splits,
    have: set[int],
) -> None:
    """Train what is missing of ``target``'s repeats, recording each as it ends."""
    import optuna

    assert target.params is not None
    for r in range(repeats):
        if r in have:
            continue
        seed = repeat_seed(the_run.spec.seed, target.number, r)
        scores: Scores | None = None
        failure = None
        try:
            _, scores = train(target.params, splits, spec=the_run.spec, seed=seed)
        except TrialFailure as exc:
            log.warning("trial %d, repeat %d: %s", target.number, r, exc)
            failure = str(exc)
        else:
            log.info(
                "trial %d, repeat %d/%d: val %.4f, test %.4f",
                target.number,
                r + 1,
                repeats,
                scores.val_accuracy,
                scores.test_accuracy,
            )
        # One insert, whole or not at all: a killed run leaves no half-recorded repeat.
        companion.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE if scores else optuna.trial.TrialState.FAIL,
                value=scores.score if scores else None,
                params=source.params,
                distributions=source.distributions,
                user_attrs=records.repeat_attrs(
                    target, repeat=r, seed=seed, scores=scores, failure=failure
                ),
            )
        )


def _results(
    repeats_done: list[TrialRecord], targets: list[TrialRecord], repeats: int, alpha: float
) -> tuple[list[str], list[list[str]]]:
    """The verification table's header and cells."""
    runs: dict[int, list[TrialRecord]] = {t.number: [] for t in targets}
    for t in repeats_done:
        if t.source_trial in runs and (t.repeat if t.repeat is not None else repeats) < repeats:
            runs[t.source_trial].append(t)

    def metric(number: int, key: str) -> list[float]:
        return [getattr(t, key) for t in runs[number] if t.complete]

    base = targets[0].number
    # "value" is the study's score: the last epoch's validation accuracy, or the best's.
    base_val, base_test = metric(base, "value"), metric(base, "test_accuracy")
    raw = {
        t.number: compare(metric(t.number, "value"), base_val) for t in targets if t.number != base
    }
    adjusted = dict(zip(raw, holm(list(raw.values())), strict=True))
    header = ["trial", "runs", "val acc (95% CI)", "test acc (95% CI)", "Δval pp", "p (Welch)"]
    header += ["p (Holm)", "Δtest pp", "lead"]
    body = []
    for target in targets:
        val, test = metric(target.number, "value"), metric(target.number, "test_accuracy")
        failed = len(runs[target.number]) - len(val)
        cells = [
            f"{target.number}{'*' if target.number == base else ''}",
            f"{len(val)}" + (f" (+{failed} diverged)" if failed else ""),
            estimate(val).show(),
            estimate(test).show(),
        ]
        if target.number == base:
            cells += ["", "", "", "", "baseline"]
            body.append(cells)
            continue
        p, p_holm = raw[target.number], adjusted[target.number]
        d_val = records.delta(estimate(val).mean, estimate(base_val).mean)
        d_test = records.delta(estimate(test).mean, estimate(base_test).mean)
        if math.isnan(p):
            lead = "too few runs"
        elif p_holm < alpha:
            lead = "significant" if (d_val or 0) > 0 else "significantly worse"
        elif p < alpha:
            lead = "not significant after correction"
        else:
            lead = "not significant"
        shown = ["" if math.isnan(x) else f"{x:.3g}" for x in (p, p_holm)]
        body.append([*cells, tables.pp(d_val), *shown, tables.pp(d_test), lead])
    return header, body


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found: the table's header and cells, and whether a stop cut it
    short (the runs that finished are kept; the same call resumes)."""

    header: list[str]
    body: list[list[str]]
    interrupted: bool

    def __str__(self) -> str:
        return tables.render_plain(self.header, self.body)


def check(*, repeats: int, alpha: float) -> None:
    """Refuse a verification that cannot test anything, before a study is opened."""
    if repeats < 2:
        raise UserError("--repeats must be at least 2: one run gives no confidence interval")
    if not 0 < alpha < 1:
        raise UserError(f"--alpha {alpha} is not a probability; use e.g. 0.05")


def verify(
    the_study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    the_run: RunOptions,
    *,
    top: int = 3,
    repeats: int = 5,
    alpha: float = 0.05,
) -> Verification:
    """Re-train the baseline and the ``top`` best trials ``repeats`` times with fresh seeds,
    recording each run in the companion study, and compare each with the baseline.

    Raises:
        UserError: ``repeats`` below 2, ``alpha`` not a probability, or a study with no
            completed baseline or no other completed trial.
    """
    check(repeats=repeats, alpha=alpha)
    frozen = the_study.get_trials(deepcopy=False)
    targets = _targets([records.read(t) for t in frozen], the_study.study_name, top)
    for family in the_run.spec.own_families:  # one this host cannot import: refused here
        models.family(family, search_path=the_run.code_dir)
    splits = the_run.load_data()
    devices.configure(the_run.keras_backend)
    companion = _companion(the_study, storage)
    log.info(
        "verifying trials %s of %r, %d runs each, recorded in study %r",
        ", ".join(str(t.number) for t in targets),
        the_study.study_name,
        repeats,
        companion.study_name,
    )
    interrupted = False
    try:
        for target in targets:
            have = {
                r.repeat
                for r in records.read_all(companion)
                if r.source_trial == target.number and r.repeat is not None
            }
            _run(
                companion,
                frozen[target.number],
                target,
                repeats,
                the_run=the_run,
                splits=splits,
                have=have,
            )
    except KeyboardInterrupt:
        interrupted = True
    header, body = _results(records.read_all(companion), targets, repeats, alpha)
    if not interrupted:
        note = (
            f"## Verification: {repeats} runs each with fresh seeds\n\n"
            "Mean ± 95% confidence interval; p is Welch's t-test of the validation accuracies "
            "against the baseline's (marked `*`), then adjusted for the number of trials tested "
            f"(Holm); a lead is significant when the adjusted p is below {alpha:g}. The runs "
            f"are in study `{companion.study_name}`.\n\n" + tables.render_markdown(header, body)
        )
        study.set_verification(the_study, note)
        StudyRefresher(storage)(the_study)
    return Verification(header, body, interrupted)

"""``python -m sweep.launch``: create or resume a study and run its trials.

Everything the user typed is checked before anything is written: the study file, the options,
the data and the storage URL. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sweep.config import DATASETS, StudySpec, load_study
from sweep.errors import UserError
from sweep.storage import check_url, default_url, redact

if TYPE_CHECKING:
    import optuna

    from sweep.data import Splits

__all__ = ["main", "parser"]

log = logging.getLogger("sweep")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, exit 2: the same contract as every other bad input.
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def parser() -> argparse.ArgumentParser:
    """The CLI; its ``--help`` is the README's CLI reference."""
    p = _Parser(
        prog="python -m sweep.launch",
        description="Create or resume an Optuna study of Keras CNNs and run its trials.",
    )
    p.add_argument(
        "--study",
        required=True,
        metavar="NAME",
        help="study name from studies/ (e.g. quickstart, exp3) or a path to a .toml file",
    )
    p.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="storage URL (default: $SWEEP_STORAGE, else sqlite:///sweep.db); "
        "sqlite:///FILE or postgresql+psycopg://USER@HOST:PORT/DB",
    )
    p.add_argument(
        "--study-name",
        default=None,
        metavar="NAME",
        help="name of the study in the storage (default: the study file's name)",
    )
    p.add_argument(
        "--n-trials",
        type=_positive,
        metavar="N",
        default=None,
        help="the study's total trial budget, not per process (default: the study file's)",
    )
    p.add_argument("--dataset", choices=DATASETS, default=None, help="override the dataset")
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        default=None,
        help="where cifar-10-python.tar.gz or cifar-10-batches-py/ is "
        "(default: $SWEEP_DATA_DIR, else ~/.keras/datasets, downloading if absent)",
    )
    p.add_argument(
        "--subset",
        type=_positive,
        metavar="N",
        default=None,
        help="use N training images and N/5 test images, for quick runs",
    )
    p.add_argument(
        "--max-epochs",
        type=_positive,
        default=None,
        metavar="E",
        help="cap every trial's epochs at E",
    )
    p.add_argument("--seed", type=int, default=None, metavar="S", help="override the study's seed")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, print the search space and each family's model.summary(); "
        "train nothing, write nothing",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# --------------------------------------------------------------------------- planning


def _budget(spec: StudySpec, requested: int | None, n_planned: int) -> int:
    if spec.sampler.name == "grid":
        size = n_planned  # every grid point once, and the baseline if it is not one of them
        if requested is not None and requested > size:
            log.warning("the grid has %d points; running %d trials, not %d", size, size, requested)
        return min(requested or spec.n_trials or size, size)
    if requested is not None:
        return requested
    if spec.n_trials is not None:
        return spec.n_trials
    if not spec.varying:
        return n_planned
    raise UserError(
        f"{spec.source}: n_trials is missing; a {spec.sampler.name} search needs a budget "
        "(add n_trials = N to the file or pass --n-trials N)"
    )


def _sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    import optuna

    seed = spec.seed
    name = spec.sampler.name
    if name == "tpe":
        # group: the dropout rates exist only for the dropout family (a conditional space).
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=spec.sampler.n_startup_trials,
            multivariate=True,
            group=True,
            warn_independent_sampling=False,
        )
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    # grid: every point is enqueued, the sampler is never asked; random: as it says.
    return optuna.samplers.RandomSampler(seed=seed)


def _max_epochs(spec: StudySpec, cap: int | None) -> int:
    d = spec.dimension("epochs")
    top = int(d.high) if d.kind == "range" else max(d.choices)
    top = max(top, spec.baseline.epochs)
    return min(top, cap) if cap else top


def _pruner(spec: StudySpec, max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=max_epochs,
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def _check_options(spec: StudySpec) -> None:
    if spec.sampler.name == "gp":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise UserError(
                f"{spec.source}: sampler.name: the gp sampler needs PyTorch; "
                "pip install torch, or use tpe"
            )


def _fingerprint(spec: StudySpec, args: argparse.Namespace) -> dict[str, Any]:
    """What must not change when a study is resumed: the data its trials are scored on."""
    return {
        "dataset": spec.dataset,
        "seed": spec.seed,
        "subset": args.subset,
        "validation_split": spec.validation_split,
    }


# --------------------------------------------------------------------------- dry run


def _dry_run(spec: StudySpec, budget: int) -> None:
    from sweep import models
    from sweep.space import planned

    print(f"study      {spec.name}: {spec.description}")
    print(f"file       {spec.source}")
    print(f"dataset    {spec.dataset} (seed {spec.seed}, validation {spec.validation_split:g})")
    print(f"budget     {budget} trials, {len(planned(spec))} planned (baseline and grid)")
    print(f"sampler    {spec.sampler.name}    pruner {spec.pruner.name}")
    print(f"baseline   {spec.baseline}")
    print("space")
    for d in spec.space:
        print(f"  {d.name:<14} {d.describe()}")
    families = dict.fromkeys([spec.baseline.family, *spec.families])
    fixed = {d.name: d.choices[0] for d in spec.space if d.kind == "fixed" and d.name != "family"}
    for family in families:
        params = replace(spec.baseline, **fixed, family=family)
        model = models.build(params, compile=False)
        model.summary()
        print(f"{family}: {model.count_params():,} parameters")


# --------------------------------------------------------------------------- run


def _open_study(spec: StudySpec, args: argparse.Namespace) -> optuna.Study:
    import optuna

    from sweep.storage import open_storage

    url = args.storage or default_url()
    storage = open_storage(url)
    name = args.study_name or spec.name
    fingerprint = _fingerprint(spec, args)
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        before = existing.user_attrs.get("fingerprint")
        if before is not None and before != fingerprint:
            raise UserError(
                f"study {name!r} in {redact(url)} was run with {before}, not {fingerprint}; "
                "pass --study-name NEW to start a separate study"
            )
    max_epochs = _max_epochs(spec, args.max_epochs)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=_sampler(spec),
        pruner=_pruner(spec, max_epochs),
        load_if_exists=True,
    )
    study.set_user_attr("fingerprint", fingerprint)
    study.set_user_attr("description", spec.description)
    return study


def _enqueue_plan(study: optuna.Study, spec: StudySpec) -> int:
    """Enqueue the baseline and grid points that the study does not hold yet."""
    from optuna.trial import TrialState

    from sweep.space import optuna_params, planned, point_key

    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    have = {t.user_attrs.get("point") for t in study.get_trials(deepcopy=False, states=live)}
    added = 0
    for params in planned(spec):
        key = point_key(params)
        if key in have:
            continue
        study.enqueue_trial(
            optuna_params(spec, params),
            user_attrs={"point": key, "is_baseline": params == spec.baseline},
        )
        added += 1
    return added


def _progress(study: optuna.Study, budget: int, quiet: bool) -> Any:
    from tqdm import tqdm

    from sweep.worker import finished

    return tqdm(
        total=budget,
        initial=min(finished(study), budget),
        desc=study.study_name,
        unit="trial",
        disable=quiet,
        dynamic_ncols=True,
    )


def _best_value(study: optuna.Study) -> float | None:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max((t.value for t in done if t.value is not None), default=None)


def _run(spec: StudySpec, args: argparse.Namespace, budget: int, splits: Splits) -> int:
    from sweep.objective import Objective
    from sweep.report import format_table, rows
    from sweep.worker import run_trials

    study = _open_study(spec, args)
    added = _enqueue_plan(study, spec)
    if added:
        log.info("enqueued %d planned trials (baseline and grid points)", added)
    objective = Objective(spec, splits, max_epochs=args.max_epochs)
    bar = _progress(study, budget, args.quiet)

    def on_trial_end(trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        best = _best_value(study)
        if best is not None:
            bar.set_postfix(best_val=f"{best:.3f}", refresh=False)

    interrupted = False
    try:
        run_trials(study, objective, budget=budget, on_trial_end=on_trial_end)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    print(format_table(rows(study)))
    url = redact(args.storage or default_url())
    print(f"\nstudy {study.study_name!r} in {url}")
    if interrupted:
        print("interrupted: the running trial was requeued; run the same command to resume")
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    # Each trial builds a new model, so tf.function retraces by design; don't warn about it.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        spec = load_study(args.study)
        spec = replace(
            spec,
            dataset=args.dataset or spec.dataset,
            seed=spec.seed if args.seed is None else args.seed,
        )
        _check_options(spec)
        from sweep.space import planned

        budget = _budget(spec, args.n_trials, len(planned(spec)))
        if args.dry_run:
            _dry_run(spec, budget)
            return 0
        check_url(args.storage or default_url())
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from sweep import data

        splits = data.load(
            spec.dataset,
            seed=spec.seed,
            validation_split=spec.validation_split,
            subset=args.subset,
            data_dir=args.data_dir,
        )
        log.info("%s data: %s", spec.dataset, splits.sizes())
        return _run(spec, args, budget, splits)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

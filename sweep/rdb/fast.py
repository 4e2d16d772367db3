"""Storage calls on sweep's hot path, in plain SQL: reading trials, writing a trial's attrs,
counting the budget.

Optuna's cache calls the trial reads on every ``get_trials`` and every ``ask``, and reads all
unfinished trials again each time; a study with its grid points enqueued holds hundreds of
WAITING ones, and the claim reads them under the study lock. The ORM's loading costs several
times the CPU of these queries (``benchmarks/claims.py`` measures the claim path). Optuna's
storage tests run on this class (``tests/test_optuna_contract.py``).
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Container
from typing import Any

import optuna
import sqlalchemy
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session

__all__ = ["FastPath", "LeftOut"]

# Which trials the budget leaves out, given each trial's number with its system attrs of the
# keys asked for (the trials that have any), and the RUNNING trials that have no heartbeat.
LeftOut = Callable[[list[tuple[int, dict[str, Any]]], set[int]], set[int]]


class FastPath(optuna.storages.RDBStorage):
    """RDBStorage with the hot path's calls in plain SQL."""

    def set_trial_user_attrs(self, trial_id: int, attrs: dict[str, Any]) -> None:
        """Set several user attrs of a trial in one transaction, not one each."""
        with _create_scoped_session(self.scoped_session, True) as session:
            for key, value in attrs.items():
                self._set_trial_attr_without_commit(
                    session, models.TrialUserAttributeModel, trial_id, key, value
                )

    def _get_trials(
        self,
        study_id: int,
        states: Container[optuna.trial.TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[optuna.trial.FrozenTrial]:
        """RDBStorage's read of trials (what ``get_all_trials`` and Optuna's cache call)."""
        trial = models.TrialModel
        where = [trial.study_id == study_id]
        if states is not None:
            where.append(trial.state.in_(list(states)))  # type: ignore[call-overload]
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        wanted = list(where)
        if included and trial_id_greater_than > -1:
            wanted.append(
                sqlalchemy.or_(trial.trial_id.in_(included), trial.trial_id > trial_id_greater_than)
            )
        elif trial_id_greater_than > -1:
            wanted.append(trial.trial_id > trial_id_greater_than)
        with self.engine.connect() as conn:
            studies = models.StudyModel
            found = conn.execute(
                sqlalchemy.select(studies.study_id).where(studies.study_id == study_id)
            ).first()
            if found is None:
                raise KeyError(models.NOT_FOUND_MSG)
            try:
                return self._read_trials(conn, wanted)
            except sqlalchemy.exc.OperationalError:
                # Too many ids for one IN on this database (SQLite's variable limit): as Optuna
                # falls back, read the study's trials and keep those asked for.
                conn.rollback()
                return [
                    t
                    for t in self._read_trials(conn, where)
                    if t._trial_id in included or t._trial_id > trial_id_greater_than
                ]

    def get_trial(self, trial_id: int) -> optuna.trial.FrozenTrial:
        """RDBStorage's; Optuna's cache calls it for every unfinished trial it is asked about,
        3 times per trial run."""
        with self.engine.connect() as conn:
            found = self._read_trials(conn, [models.TrialModel.trial_id == trial_id])
        if not found:
            raise KeyError(models.NOT_FOUND_MSG)
        return found[0]

    def _read_trials(self, conn: Any, where: list[Any]) -> list[optuna.trial.FrozenTrial]:
        """The trials matching ``where``: one query for the trials, one per table of their
        params, values, attrs and intermediate values. The rows go through RDBStorage's own
        ``_build_frozen_trial_from_trial_model``, so the trials built are Optuna's."""
        trial = models.TrialModel
        rows = conn.execute(
            sqlalchemy.select(
                trial.trial_id,
                trial.number,
                trial.state,
                trial._datetime_start_utc.label("_datetime_start_utc"),
                trial._datetime_complete_utc.label("_datetime_complete_utc"),
            )
            .where(*where)
            .order_by(trial.trial_id)
        ).all()
        if not rows:
            return []
        ids = sqlalchemy.select(trial.trial_id).where(*where).scalar_subquery()
        start, complete = vars(trial)["datetime_start"], vars(trial)["datetime_complete"]
        children: dict[str, dict[int, list[Any]]] = {}
        for field, model in (
            ("params", models.TrialParamModel),
            ("values", models.TrialValueModel),
            ("user_attributes", models.TrialUserAttributeModel),
            ("system_attributes", models.TrialSystemAttributeModel),
            ("intermediate_values", models.TrialIntermediateValueModel),
        ):
            by_trial = children[field] = {}
            query = sqlalchemy.select(*model.__table__.c).where(model.trial_id.in_(ids))
            for row in conn.execute(query):
                by_trial.setdefault(row.trial_id, []).append(row)
        return [
            self._build_frozen_trial_from_trial_model(
                types.SimpleNamespace(  # type: ignore[arg-type]  # what it reads of a TrialModel
                    trial_id=row.trial_id,
                    number=row.number,
                    state=row.state,
                    # Optuna's conversion of the stored UTC times.
                    datetime_start=start.fget(row),
                    datetime_complete=complete.fget(row),
                    **{f: rows.get(row.trial_id, []) for f, rows in children.items()},
                )
            )
            for row in rows
        ]

    def count_states(
        self, study_id: int, keys: tuple[str, ...], left_out: LeftOut
    ) -> dict[optuna.trial.TrialState, int]:
        """How many of the study's trials are in each state, leaving out those ``left_out``
        names (see :data:`LeftOut`): the budget's count (:func:`sweep.budget.count`).

        Optuna has no call that counts trials by state: ``get_trials`` through its cache
        reads every unfinished trial again, params and attrs, each time. The server counts
        here, and only the running trials and those with the ``keys`` come back, whatever the
        study's length.
        """
        trial, attr = models.TrialModel, models.TrialSystemAttributeModel
        beat = models.TrialHeartbeatModel
        with self.engine.connect() as conn:
            attrs = conn.execute(
                sqlalchemy.select(trial.number, attr.key, attr.value_json)
                .join(trial, attr.trial_id == trial.trial_id)
                .where(trial.study_id == study_id, attr.key.in_(keys))
            ).all()
            totals = conn.execute(
                sqlalchemy.select(trial.state, sqlalchemy.func.count())
                .where(trial.study_id == study_id)
                .group_by(trial.state)
            ).all()
            running = conn.execute(
                sqlalchemy.select(trial.number, beat.trial_heartbeat_id)
                .outerjoin(beat, beat.trial_id == trial.trial_id)
                .where(trial.study_id == study_id, trial.state == optuna.trial.TrialState.RUNNING)
            ).all()
            found: dict[int, dict[str, Any]] = {}
            for number, key, value in attrs:
                found.setdefault(number, {})[key] = json.loads(value)
            unbeaten = {number for number, b in running if b is None}
            out = left_out(sorted(found.items()), unbeaten)
            states = (
                conn.execute(
                    sqlalchemy.select(trial.state).where(
                        trial.study_id == study_id, trial.number.in_(sorted(out))
                    )
                ).scalars().all()
                if out
                else []
            )  # fmt: skip
        counted = dict(totals)
        for s in states:
            counted[s] -= 1
        return counted

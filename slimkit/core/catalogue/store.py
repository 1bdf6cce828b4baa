"""The catalogue: record models, steps, evaluations and runs; resolve references.

Every write is one short transaction, so two processes can record into one SQLite file at once
(WAL mode, busy timeout). Rows are inserted only for things that exist: a model's row is written
after its folder is complete, and a run killed half-way leaves only its ``running`` run row,
which the next open marks ``failed``.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path
from datetime import datetime, timezone
from typing import Any, Mapping

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from slimkit.core.catalogue.artifacts import is_remote_url
from slimkit.core.catalogue.entities import EvaluationEntry, ModelEntry, RunEntry, StepEntry
from slimkit.core.catalogue.exports import ExportsMixin, delete_exports
from slimkit.core.catalogue.migrate import (
    CatalogueError,
    default_url,
    ensure_current,
    make_engine,
    open_error,
    to_url,
)
from slimkit.core.catalogue.schema import (
    EvaluationRow, ExportRow, ModelRow, RunRow, StepParentRow, StepRow, StepUseRow,
)
from slimkit.core.present.format import short_id


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything slimkit writes is UTC.
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Catalogue(ExportsMixin):
    """A lineage catalogue at a SQLAlchemy URL (default: ``SLIMKIT_CATALOGUE`` or the user's
    data folder). Opening a SQLite file migrates it (after a backup) or refuses it; a server
    database is migrated only with ``upgrade=True`` (``slimkit db upgrade``) or
    ``SLIMKIT_DB_AUTO_UPGRADE=1`` (see :mod:`slimkit.core.catalogue.server`).

    ``url`` may hold a password: show it only through
    :func:`~slimkit.core.catalogue.migrate.shown`, which masks it."""

    def __init__(self, url: "str | os.PathLike[str] | None" = None, *, upgrade: bool | None = None) -> None:
        self.url = to_url(url) if url else default_url()
        self.engine = make_engine(self.url)
        try:
            self.previous_revision, self.revision, self.backup = ensure_current(self.engine, self.url, upgrade)
            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
            self.failed_runs = self._fail_dead_runs()
        except SQLAlchemyError as error:  # e.g. a read-only file: migrated fine, but not writable
            self.engine.dispose()
            raise open_error(self.url, error) from None
        except BaseException:
            self.engine.dispose()
            raise

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Catalogue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(self) -> Session:
        return self._sessions()

    # -- runs ------------------------------------------------------------------------------
    def _fail_dead_runs(self) -> list[str]:
        """Mark ``running`` runs of dead processes on this host ``failed`` (killed mid-way)."""
        host = socket.gethostname()
        with self.session() as session, session.begin():
            rows = session.scalars(select(RunRow).where(RunRow.status == "running", RunRow.host == host)).all()
            dead = [row for row in rows if row.pid is None or not _pid_alive(row.pid)]
            for row in dead:
                row.status = "failed"
                row.error = "the process ended before the run finished (killed or crashed)"
                row.ended = utcnow()
            return [row.id for row in dead]

    def start_run(self, kind: str, recipe_name: str | None = None, recipe_text: str | None = None) -> str:
        run_id = uuid.uuid4().hex
        with self.session() as session, session.begin():
            session.add(RunRow(id=run_id, kind=kind, recipe_name=recipe_name, recipe_text=recipe_text,
                               status="running", host=socket.gethostname(), pid=os.getpid(), started=utcnow()))
        return run_id

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        with self.session() as session, session.begin():
            row = session.get(RunRow, run_id)
            if row is None:
                raise CatalogueError(f"no run {run_id}")
            row.status, row.error, row.ended = status, error, utcnow()

    def absorb_run(self, interrupted: str, into: str) -> bool:
        """Make the work of ``interrupted`` (a run killed mid-way) part of the run ``into`` that
        resumed it: the interrupted run's row goes, so the catalogue holds the work as one run.
        Only a failed run (a killed one is marked failed when the catalogue is next opened) that
        recorded nothing is absorbed; returns whether it was."""
        with self.session() as session, session.begin():
            row = session.get(RunRow, interrupted)
            if row is None or row.status != "failed" or interrupted == into:
                return False
            for table in (StepRow, EvaluationRow, ExportRow):
                if session.scalar(select(table.run_id).where(table.run_id == interrupted).limit(1)) is not None:
                    return False
            session.delete(row)
            return True

    def runs(self, status: str | None = None) -> list[RunEntry]:
        with self.session() as session:
            query = select(RunRow).order_by(RunRow.started)
            if status:
                query = query.where(RunRow.status == status)
            return [_run(row) for row in session.scalars(query)]

    # -- recording -------------------------------------------------------------------------
    def record_model(
        self,
        model_id: str,
        architecture: str,
        *,
        params: int | None = None,
        size_bytes: int | None = None,
        location: str | None = None,
        source: str | None = None,
        name: str | None = None,
        session: Session | None = None,
    ) -> None:
        """Insert a model, or fill in what an existing row lacks (location, size, name).

        The location is replaced only when the recorded folder no longer exists.
        An existing name is never replaced: a run that reproduces a known model's weights does not
        rename it (the caller can compare :meth:`model`'s name with the one it asked for).
        """
        if session is None:
            with self.session() as own, own.begin():
                return self.record_model(model_id, architecture, params=params, size_bytes=size_bytes,
                                         location=location, source=source, name=name, session=own)
        row = session.get(ModelRow, model_id)
        if name is not None and row is not None and row.name is not None:
            name = None  # keep the name the model already has
        if name is not None:
            holder = session.scalar(select(ModelRow).where(ModelRow.name == name))
            if holder is not None and holder.id != model_id:
                if location is None or holder.location != location:
                    raise CatalogueError(f"the name {name!r} is already used by model {short_id(holder.id)}")
                # This model replaces the holder's folder (--overwrite): the folder's name goes with it.
                holder.name = None
                session.flush()
        if row is None:
            try:
                with session.begin_nested():  # another writer may insert the same model first
                    session.add(ModelRow(id=model_id, architecture=architecture, params=params,
                                         size_bytes=size_bytes, location=location, source=source, name=name,
                                         created=utcnow()))
                if location is not None:
                    self._forget_location(location, model_id, session)
                return None
            except IntegrityError:
                row = session.get(ModelRow, model_id)
                if row is None:
                    raise
        # A model keeps the folder it was first recorded at while that folder exists: a later copy
        # (the same weights saved elsewhere) must not orphan the managed artifact gc looks after. A
        # model in a remote artifact store is there for every machine (a local copy never replaces it).
        if location is not None and (row.location is None or not (is_remote_url(row.location)
                                                                   or Path(row.location).exists())):
            row.location = location
        if location is not None and row.location == location:
            self._forget_location(location, model_id, session)
        if size_bytes is not None:
            row.size_bytes = size_bytes
        if params is not None and row.params is None:
            row.params = params
        if name is not None:
            row.name = name
        return None

    @staticmethod
    def _forget_location(location: str, holder: str, session: Session) -> None:
        """A folder holds one model: other models recorded there (replaced with ``--overwrite``)
        lose their location, so the catalogue never points at weights that are not theirs."""
        for other in session.scalars(select(ModelRow).where(ModelRow.location == location, ModelRow.id != holder)):
            other.location = None

    def record_step(self, step: StepEntry, run_id: str | None, session: Session) -> None:
        """Insert a step unless known."""
        if session.get(StepRow, step.id) is not None:
            return
        try:
            with session.begin_nested():  # another writer may record the same step first
                self._insert_step(step, run_id, session)
        except IntegrityError:
            if session.get(StepRow, step.id) is None:
                raise

    def _insert_step(self, step: StepEntry, run_id: str | None, session: Session) -> None:
        session.add(StepRow(
            id=step.id, child_id=step.child_id, run_id=run_id, method=step.method,
            method_version=step.method_version, family=step.family,
            config_json=json.dumps(step.config, sort_keys=True), plugin=step.plugin,
            plugin_version=step.plugin_version, versions_json=json.dumps(step.versions),
            calibration_json=json.dumps(step.calibration) if step.calibration else None,
            calibration_fingerprint=step.calibration_fingerprint, seed=step.seed,
            wall_time_s=step.wall_time_s, peak_rss_bytes=step.peak_rss_bytes,
            status=step.status, summary=step.summary,
            details_json=json.dumps(step.details, default=str), created=utcnow(),
        ))
        session.flush()  # the step row first: step_parents refers to it (no ORM relationship orders them)
        for position, (model_id, role) in enumerate(step.parents):
            session.add(StepParentRow(step_id=step.id, position=position, model_id=model_id, role=role))
        for position, use in enumerate(step.uses):
            config = use["config"]
            session.add(StepUseRow(step_id=step.id, position=position, family=use["family"],
                                   method=config["type"], method_version=int(config["version"]),
                                   plugin=use["plugin"], plugin_version=use.get("plugin_version"),
                                   config_json=json.dumps(config, sort_keys=True)))
        session.flush()

    def record_evaluations(
        self,
        model_id: str,
        evaluator: str,
        evaluator_version: int,
        metrics: Mapping[str, float],
        *,
        config: Mapping[str, Any] | None = None,
        dataset_fingerprint: str | None = None,
        run_id: str | None = None,
        created: datetime | None = None,
        session: Session | None = None,
    ) -> None:
        """Record metrics. With ``created`` (an evaluation read back from a ``slimkit.json``), an
        evaluation already recorded at that time is not recorded twice."""
        if session is None:
            with self.session() as own, own.begin():
                return self.record_evaluations(model_id, evaluator, evaluator_version, metrics, config=config,
                                               dataset_fingerprint=dataset_fingerprint, run_id=run_id,
                                               created=created, session=own)
        if created is not None and session.scalar(select(EvaluationRow.id).where(
            EvaluationRow.model_id == model_id, EvaluationRow.evaluator == evaluator,
            EvaluationRow.created == created,
        ).limit(1)) is not None:
            return None
        now = created or utcnow()
        for metric, value in metrics.items():
            session.add(EvaluationRow(model_id=model_id, run_id=run_id, evaluator=evaluator,
                                      evaluator_version=evaluator_version, metric=metric, value=float(value),
                                      config_json=json.dumps(dict(config or {}), sort_keys=True, default=str),
                                      dataset_fingerprint=dataset_fingerprint, created=now))
        return None

    def record_provenance(
        self,
        document: Mapping[str, Any],
        *,
        location: str | None,
        size_bytes: int | None = None,
        params: int | None = None,
        run_id: str | None = None,
        name: str | None = None,
        session: Session | None = None,
    ) -> ModelEntry:
        """Record a derived model and its whole chain (a ``slimkit.json`` document), atomically
        (in ``session``'s transaction when given, else in one of its own)."""
        if session is None:
            with self.session() as own, own.begin():
                self.record_provenance(document, location=location, size_bytes=size_bytes, params=params,
                                       run_id=run_id, name=name, session=own)
            return self.model(document["content_id"])
        base = document["base"]
        architecture = document.get("architecture", base.get("architecture", "unknown"))
        self.record_model(base["content_id"], base.get("architecture", architecture),
                          source=base.get("source"), session=session)
        for data in document.get("steps", []):
            step = StepEntry.from_json(data)
            self.record_model(data["child_id"], architecture, session=session)
            self.record_step(step, run_id, session)
        self.record_model(document["content_id"], architecture, params=params, size_bytes=size_bytes,
                          location=location, name=name, session=session)
        for evaluation in document.get("evaluations", []):
            self.record_evaluations(
                document["content_id"], evaluation["evaluator"], int(evaluation.get("version", 1)),
                evaluation["metrics"], config=evaluation.get("config"),
                dataset_fingerprint=evaluation.get("dataset_fingerprint"), run_id=run_id,
                created=_parse_time(evaluation.get("time")), session=session,
            )
        row = session.get(ModelRow, document["content_id"])
        assert row is not None  # recorded just above
        return _model(row)

    # -- reading ---------------------------------------------------------------------------
    def model(self, model_id: str) -> ModelEntry:
        with self.session() as session:
            row = session.get(ModelRow, model_id)
            if row is None:
                raise CatalogueError(f"no model {model_id} in the catalogue")
            return _model(row)

    def resolve(self, reference: str) -> ModelEntry:
        """A model by name, full id, or unique id prefix (with or without ``sha256:``)."""
        text = reference.strip()
        digits = text.split(":", 1)[1] if text.startswith("sha256:") else text
        with self.session() as session:
            named = session.scalar(select(ModelRow).where(ModelRow.name == text))
            if named is not None:
                return _model(named)
            if len(digits) < 4 or any(c not in "0123456789abcdef" for c in digits.lower()):
                raise CatalogueError(f"no model named {reference!r} (ids are hex, at least 4 digits)")
            rows = session.scalars(select(ModelRow).where(ModelRow.id.like(f"sha256:{digits.lower()}%")).limit(11)).all()
        if not rows:
            raise CatalogueError(f"no model with id or name {reference!r} in the catalogue")
        if len(rows) > 1:
            listed = ", ".join(short_id(row.id) + (f" ({row.name})" if row.name else "") for row in rows[:10])
            raise CatalogueError(f"{reference!r} is ambiguous: it matches {listed}{' ...' if len(rows) > 10 else ''}")
        return _model(rows[0])

    def models(self, *, method: str | None = None, architecture: str | None = None) -> list[ModelEntry]:
        with self.session() as session:
            query = select(ModelRow).order_by(ModelRow.created)
            if architecture:
                query = query.where(ModelRow.architecture == architecture)
            if method:
                query = query.where(ModelRow.id.in_(select(StepRow.child_id).where(StepRow.method == method)))
            return [_model(row) for row in session.scalars(query)]

    def step(self, step_id: str) -> StepEntry | None:
        with self.session() as session:
            row = session.get(StepRow, step_id)
            return _step(session, row) if row is not None else None

    def steps_into(self, model_id: str) -> list[StepEntry]:
        """Steps that produced ``model_id`` (oldest first)."""
        with self.session() as session:
            rows = session.scalars(select(StepRow).where(StepRow.child_id == model_id).order_by(StepRow.created))
            return [_step(session, row) for row in rows]

    def steps_from(self, model_id: str) -> list[StepEntry]:
        """Steps that used ``model_id`` as a parent (oldest first)."""
        with self.session() as session:
            ids = select(StepParentRow.step_id).where(StepParentRow.model_id == model_id)
            rows = session.scalars(select(StepRow).where(StepRow.id.in_(ids)).order_by(StepRow.created))
            return [_step(session, row) for row in rows]

    def evaluations(self, model_id: str) -> list[EvaluationEntry]:
        with self.session() as session:
            rows = session.scalars(
                select(EvaluationRow).where(EvaluationRow.model_id == model_id).order_by(EvaluationRow.id)
            )
            return [_evaluation(row) for row in rows]

    def metrics(self, model_id: str) -> dict[str, float]:
        """Latest value of every ``evaluator.metric`` recorded for the model."""
        return {entry.key: entry.value for entry in self.evaluations(model_id)}

    def paired_metrics(self, a: str, b: str) -> dict[str, tuple[float, float, bool]]:
        """For every metric both models have: ``(value a, value b, comparable)``.

        Comparable values come from the newest pair of evaluations with the same evaluator
        version, config and dataset fingerprint; without such a pair, the latest values are given
        with ``comparable`` false (a perplexity over 50 windows is not one over 200).
        """
        def settings(entry: EvaluationEntry) -> str:
            return json.dumps([entry.evaluator_version, entry.config, entry.dataset_fingerprint], sort_keys=True)

        by_key_b: dict[str, dict[str, float]] = {}
        for entry in self.evaluations(b):
            by_key_b.setdefault(entry.key, {})[settings(entry)] = entry.value
        paired: dict[str, tuple[float, float, bool]] = {}
        latest_b = self.metrics(b)
        for entry in self.evaluations(a):  # oldest first, so newer matches overwrite older ones
            matches = by_key_b.get(entry.key, {})
            if settings(entry) in matches:
                paired[entry.key] = (entry.value, matches[settings(entry)], True)
            elif entry.key in latest_b and not paired.get(entry.key, (0, 0, False))[2]:
                paired[entry.key] = (entry.value, latest_b[entry.key], False)
        return paired

    # -- deleting --------------------------------------------------------------------------
    def delete(self, reference: str, *, cascade: bool = False) -> list[str]:
        """Delete a model (and, with ``cascade``, everything derived from it); returns the ids.

        Refused when the model has descendants and ``cascade`` is false. Model folders and
        exported files on disk are left alone; ``slimkit gc`` removes unreferenced managed artifacts.
        """
        root = self.resolve(reference)
        doomed = [root.id]
        frontier = [root.id]
        while frontier:
            children = {s.child_id for m in frontier for s in self.steps_from(m) if s.child_id}
            children -= set(doomed)
            doomed.extend(sorted(children))
            frontier = sorted(children)
        if len(doomed) > 1 and not cascade:
            raise CatalogueError(
                f"model {root.label} has {len(doomed) - 1} derived model(s); use --cascade to delete them too"
            )
        with self.session() as session, session.begin():
            steps = set(session.scalars(select(StepRow.id).where(or_(
                StepRow.child_id.in_(doomed),
                StepRow.id.in_(select(StepParentRow.step_id).where(StepParentRow.model_id.in_(doomed))),
            ))))
            for step_id in steps:
                session.delete(session.get(StepRow, step_id))
            session.flush()
            for row in session.scalars(select(EvaluationRow).where(EvaluationRow.model_id.in_(doomed))):
                session.delete(row)
            delete_exports(session, doomed)
            for model_id in doomed:
                session.delete(session.get(ModelRow, model_id))
        return doomed

    def locations(self) -> set[str]:
        with self.session() as session:
            return {loc for loc in session.scalars(select(ModelRow.location)) if loc}


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        return None


def _model(row: ModelRow) -> ModelEntry:
    return ModelEntry(id=row.id, architecture=row.architecture, created=_aware(row.created) or utcnow(),
                      name=row.name, params=row.params, size_bytes=row.size_bytes, location=row.location,
                      source=row.source)


def _step(session: Session, row: StepRow) -> StepEntry:
    parents = session.execute(
        select(StepParentRow.model_id, StepParentRow.role).where(StepParentRow.step_id == row.id)
        .order_by(StepParentRow.position)
    ).all()
    uses = session.scalars(select(StepUseRow).where(StepUseRow.step_id == row.id).order_by(StepUseRow.position))
    return StepEntry(
        id=row.id, child_id=row.child_id, parents=tuple((m, r) for m, r in parents), method=row.method,
        family=row.family, config=json.loads(row.config_json),
        plugin=row.plugin, plugin_version=row.plugin_version, versions=json.loads(row.versions_json),
        seed=row.seed, status=row.status, created=_aware(row.created) or utcnow(),
        calibration=json.loads(row.calibration_json) if row.calibration_json else None,
        calibration_fingerprint=row.calibration_fingerprint, wall_time_s=row.wall_time_s,
        peak_rss_bytes=row.peak_rss_bytes, summary=row.summary,
        details=json.loads(row.details_json) if row.details_json else {}, run_id=row.run_id,
        uses=tuple({"family": use.family, "plugin": use.plugin, "plugin_version": use.plugin_version,
                    "config": json.loads(use.config_json)} for use in uses),
    )


def _evaluation(row: EvaluationRow) -> EvaluationEntry:
    return EvaluationEntry(model_id=row.model_id, evaluator=row.evaluator, evaluator_version=row.evaluator_version,
                           metric=row.metric, value=row.value, config=json.loads(row.config_json),
                           created=_aware(row.created) or utcnow(), dataset_fingerprint=row.dataset_fingerprint,
                           run_id=row.run_id)


def _run(row: RunRow) -> RunEntry:
    return RunEntry(id=row.id, kind=row.kind, status=row.status, host=row.host, started=_aware(row.started) or utcnow(),
                    pid=row.pid, recipe_name=row.recipe_name, recipe_text=row.recipe_text, error=row.error,
                    ended=_aware(row.ended))



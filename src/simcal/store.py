"""Finished simulations on disk while a sweep runs, and the one Parquet file they become.

While running: ``<output>.partial/`` holds one Parquet part per finished batch, named by the simulations it holds
(param_id, replicate, seed), written atomically and fsynced, plus ``_manifest.json`` describing the plan. A rerun
keeps every finished simulation that belongs to its own plan (same model and model source file, same parameters,
replicate and seed) and leaves the others out, so editing the parameter table or the settings never lets stale rows
in. At the end the planned rows are streamed, under one schema, into the single file ``<output>`` and the parts are
removed: a finished sweep rerun with another plan (Snakemake removes the output first) runs every simulation again.

Resume state is local: ``<output>.partial`` lives next to the output on the machine that runs the job. On
Kubernetes with a remote default storage provider that is the pod's disk, so a restarted pod starts the sweep
over; on SLURM and on a workstation the job's working directory keeps it across reruns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simcal.contract import ContractError
from simcal.part_schemas import (  # noqa: F401 - importable from here as before
    ARROW_ERRORS,
    columns_in_order,
    conform,
    extreme,
    unify_schemas,
    whole_numbers_as_text,
)
from simcal.part_timeouts import timed_out_sooner, with_timeout
from simcal.tables import atomic_write
from simcal.tasks import SimTask, simulation_key
from simcal.worker import EXACT_IN_FLOAT, FAILED_STATUSES, KEY_COLUMNS, STATUS_COLUMNS

log = logging.getLogger(__name__)

Key = tuple[str, int, int]
KEY_FIELDS = ["param_id", "replicate", "seed"]
# What the finished table's Parquet metadata records of the model that wrote it (the manifest's model and
# model_code): the dry run's check of calibration.sweep.columns (simcal.config_checks) reads it.
MODEL_RECORD = {"model": b"simcal.model", "model_code": b"simcal.model_code"}
# ...and of the sweep's plan (the manifest's sweep_plan: simcal.settings.sweep_plan_record), which that check
# compares with the plan the config makes now.
SWEEP_PLAN_RECORD = {"sweep_plan": b"simcal.sweep_plan"}


def recorded_model(metadata: Mapping[bytes, bytes] | None) -> dict[str, str | None]:
    """``{"model": ..., "model_code": ...}`` a finished table's Parquet metadata records (None: not recorded)."""
    return {name: (metadata or {}).get(key, b"").decode() or None for name, key in MODEL_RECORD.items()}


class PartsLost(RuntimeError):
    """Parts that held finished simulations of the plan are gone from ``<output>.partial`` when the sweep ends (the
    folder, or files in it, removed while it ran): publishing the rest would give an output that silently lacks
    their rows."""


class PartStore:
    """The parts in ``<output>.partial`` and their final home, the file ``<output>``.

    ``manifest`` describes the plan (at least ``model``). Parts made by another model, or by another version of
    its source file or of its package's files (``CODE_RECORDS``, when both records hold one), are discarded;
    parts of another plan of the same model are kept, and only their simulations that belong to this run's plan
    (the tasks given to ``expect``) are counted and written out.
    """

    def __init__(
        self,
        output: str | Path,
        manifest: Mapping[str, Any],
        rerun_failed: bool = False,
        check: Callable[[], None] | None = None,
        timeout_s: float | None = None,
    ):
        """``check`` (e.g. a cancel check that raises) is called before each part is read back; ``timeout_s``
        is this run's limit, recorded in the parts it writes (see ``simcal.part_timeouts``)."""
        self.output = Path(output)
        if self.output.is_dir() and not all(
            p.is_file() and p.suffix == ".parquet" for p in self.output.iterdir()
        ):  # finalize replaces only the directory of parts older versions wrote: anything else is not ours
            raise ContractError(
                f"{self.output}: the output is a directory holding other files than the Parquet parts older "
                "versions wrote there; the output is one Parquet file: give another path, or move the directory"
            )
        self.partial = self.output.with_name(self.output.name + ".partial")
        self.manifest = dict(manifest)
        self.timeout_s = timeout_s
        self.planned: dict[Key, SimTask] = {}
        self._owner: dict[Key, str] = {}  # simulation -> the part holding its rows (the first one found)
        self._failed: dict[Key, str] = {}  # failed simulation -> its error text
        self._sims_in: dict[str, int] = {}  # part -> how many simulations it holds
        manifest_path = self.partial / "_manifest.json"
        if self.partial.exists():
            previous = _read_json(manifest_path)
            if previous is None or previous.get("model") != self.manifest.get("model"):
                log.warning(
                    "discarding %s: it was made by model %s, this run uses %s",
                    self.partial, (previous or {}).get("model", "unknown"), self.manifest.get("model"),
                )  # fmt: skip
                shutil.rmtree(self.partial)
            elif changed := _code_changed(previous, self.manifest):
                log.warning(
                    "discarding %s: %s of model %s changed since its parts were written (its digest was %s, is %s); "
                    "every simulation runs again with the new code",
                    self.partial, CODE_RECORDS[changed], self.manifest.get("model"), previous[changed],
                    self.manifest[changed],
                )  # fmt: skip
                shutil.rmtree(self.partial)
            elif previous != self.manifest:
                log.info("%s", plan_change(self.partial, previous, self.manifest))
        self.partial.mkdir(parents=True, exist_ok=True)
        self._write_manifest()
        for lost in self.partial.glob(
            "lost-*.parquet"
        ):  # written by older versions for dead workers' batches
            lost.unlink()
        self._scan(rerun_failed, check)

    def _write_manifest(self) -> None:
        manifest = json.dumps(self.manifest, sort_keys=True)
        atomic_write(self.partial / "_manifest.json", lambda handle: handle.write(manifest.encode()))

    def _scan(self, rerun_failed: bool, check: Callable[[], None] | None = None) -> None:
        sooner = 0  # simulations that timed out under a smaller timeout_s than this run's: they run again
        for part in self.parts():
            if check is not None:
                check()
            try:
                arrow = pq.read_table(part, columns=[*KEY_FIELDS, "status", "error"])
            except (OSError, *ARROW_ERRORS) as error:  # truncated by a crash, or not ours: redo its work
                log.warning("discarding the unreadable part %s (%s); its simulations run again", part, error)
                part.unlink(missing_ok=True)
                continue
            table = arrow.to_pandas()
            drop = timed_out_sooner(table, arrow.schema.metadata, self.timeout_s)
            sooner += len(dict.fromkeys(_keys(table[drop])))
            if rerun_failed:
                drop = drop | table["status"].isin(FAILED_STATUSES).to_numpy()
            if drop.any():
                self._rewrite(part, ~drop)
                table = table[~drop]
            self._record(part.name, table)
        if sooner:
            log.info(
                "%d simulations that timed out under a smaller timeout_s than this run's (%s) run again",
                sooner, "none" if self.timeout_s is None else f"{self.timeout_s:g} s",
            )  # fmt: skip

    def _rewrite(self, part: Path, keep) -> None:
        if not keep.any():
            part.unlink()
            return
        table = pq.read_table(part).filter(pa.array(keep))  # keeps the part's metadata: its timeout_s
        atomic_write(part, lambda handle: pq.write_table(table, handle))

    def _record(self, part_name: str, table: pd.DataFrame) -> None:
        # A simulation's first row tells its status; plain Python over the key tuples, as pandas' duplicate
        # search costs more than the cheapest simulations themselves.
        keys = list(_keys(table))
        simulations = dict.fromkeys(keys)
        self._sims_in[part_name] = len(simulations)
        owner = self._owner
        if owner.keys().isdisjoint(simulations):  # the usual case: new simulations, one dict update
            owner.update(dict.fromkeys(simulations, part_name))
        else:
            for key in simulations:
                owner.setdefault(key, part_name)
        failed = (table["status"] != "ok").to_numpy()
        if failed.any():
            errors = table["error"].to_numpy(dtype=object, na_value=None)
            first_row: dict[Key, int] = {}
            for index, key in enumerate(keys):
                first_row.setdefault(key, index)
            for index in failed.nonzero()[0].tolist():
                key = keys[index]
                if first_row[key] == index and owner[key] == part_name:
                    self._failed[key] = "unknown error" if errors[index] is None else str(errors[index])

    def parts(self) -> list[Path]:
        return sorted(p for p in self.partial.glob("*.parquet") if not p.name.startswith("."))

    def expect(self, tasks: Iterable[SimTask]) -> None:
        """Add simulations to this run's plan (a sweep adds all at once, a calibration round by round)."""
        self.planned.update(zip(map(simulation_key, tasks), tasks, strict=True))

    def is_done(self, task: SimTask) -> bool:
        return task.key in self._owner

    def not_done(self, tasks: Sequence[SimTask]) -> list[SimTask]:
        """The simulations of ``tasks`` that no part holds yet, in order."""
        owner = self._owner
        return (
            [t for t, key in zip(tasks, map(simulation_key, tasks), strict=True) if key not in owner]
            if owner
            else list(tasks)
        )

    def done(self) -> set[Key]:
        """(param_id, replicate, seed) of every finished simulation in the parts, planned or not."""
        return set(self._owner)

    def write(self, frame: pd.DataFrame, tasks: Sequence[SimTask], prefix: str = "part") -> Path:
        """Write the rows of these finished simulations as one part, named by the simulations it holds."""
        pids, replicates, seeds, _ = zip(*tasks, strict=True) if tasks else ((), (), (), ())
        digest = hashlib.blake2b("|".join(pids).encode(), digest_size=8)
        digest.update(np.array(replicates, dtype=np.int64).tobytes())
        digest.update(np.array(seeds, dtype=np.int64).tobytes())
        path = atomic_write(
            self.partial / f"{prefix}-{digest.hexdigest()}.parquet",
            lambda handle: write_frame(frame, handle, self.timeout_s),
        )
        self._record(path.name, frame[[*KEY_FIELDS, "status", "error"]])
        return path

    def failed_among(self, tasks: Iterable[SimTask]) -> int:
        """How many of these finished simulations failed, timed out or crashed."""
        failed = self._failed
        return sum(1 for t in tasks if t.key in failed) if failed else 0

    def error_of(self, task: SimTask) -> str | None:
        """The error of a finished simulation that failed, timed out or crashed; None otherwise."""
        return self._failed.get(task.key)

    def status_counts(self) -> tuple[int, Counter]:
        """(number of finished planned simulations, Counter of the error texts of the failed ones)."""
        total = sum(1 for key in self.planned if key in self._owner)
        return total, Counter(self._failed[key] for key in self.planned if key in self._failed)

    def failures(self, limit: int = 3) -> list[tuple[SimTask, str]]:
        """The first failed planned simulations (in plan order) with their errors."""
        found = []
        for key, task in self.planned.items():
            if key in self._failed:
                found.append((task, self._failed[key]))
                if len(found) == limit:
                    break
        return found

    def read(self, tasks: Iterable[SimTask]) -> list[pd.DataFrame]:
        """The rows of these finished simulations, read back from the parts."""
        wanted = {t.key for t in tasks if t.key in self._owner}
        by_part: dict[str, set[Key]] = {}
        for key in wanted:
            by_part.setdefault(self._owner[key], set()).add(key)
        frames = []
        for name, keys in by_part.items():
            frame = pd.read_parquet(self.partial / name)
            keep = [k in keys for k in _keys(frame)]
            frames.append(frame[keep])
        return frames

    def finalize(self, drop_parts: bool = True) -> Path:
        """Stream the planned rows of every part, under one unified schema, into a single Parquet file at the
        output (atomically), then drop the parts (``drop_parts``; else the caller drops them with
        :meth:`drop_parts` once nothing can fail the job any more, as a runner does after its Dask cluster closed).

        One file rather than a directory of parts: remote storage plugins (Azure Blob among them) move files,
        and report ``directory()`` outputs as missing.
        """
        wanted: Counter = Counter(self._owner[key] for key in self.planned if key in self._owner)
        self._check_parts_left(wanted)
        parts = [p for p in self.parts() if wanted[p.name]]
        schemas = [pq.read_schema(p).remove_metadata() for p in parts]
        unified = whole_numbers_as_text(unify_schemas(schemas), parts, schemas) if parts else pa.schema([])
        unified = columns_in_order(unified)  # the output's own order, not whichever part came first
        records = {**MODEL_RECORD, **SWEEP_PLAN_RECORD}
        record = {key: str(self.manifest.get(name) or "") for name, key in records.items()}
        unified = unified.with_metadata({key: value for key, value in record.items() if value})

        def write_single_file(handle: BinaryIO) -> None:
            with pq.ParquetWriter(handle, unified) as writer:
                for part, schema in zip(parts, schemas, strict=True):
                    table = pq.read_table(part).replace_schema_metadata(None)
                    if wanted[part.name] != self._sims_in.get(part.name):  # holds rows of another plan
                        keys = zip(*(table[f].to_pylist() for f in KEY_FIELDS), strict=True)
                        keep = [k in self.planned and self._owner.get(k) == part.name for k in keys]
                        table = table.filter(pa.array(keep))
                    if schema != unified:
                        table = conform(table, unified)
                    writer.write_table(table)

        if self.output.is_dir():  # a directory left by an older version of this code
            shutil.rmtree(self.output)
        atomic_write(self.output, write_single_file)
        if drop_parts:
            self.drop_parts()
        return self.output

    def _check_parts_left(self, wanted: Counter) -> None:
        """Raise :class:`PartsLost` when a part holding ``wanted`` simulations is gone, after writing the manifest
        again (removed with its folder, the rerun would count the parts written since as another model's)."""
        lost = sorted(name for name in wanted if not (self.partial / name).is_file())
        if not lost:
            return
        self._write_manifest()
        raise PartsLost(
            f"{self.partial}: {len(lost)} of the parts of this sweep's finished simulations are gone (removed while "
            f"it ran?), holding {sum(wanted[name] for name in lost)} of its {len(self.planned)} simulations "
            f"({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''}); the output is not written, as it would "
            "lack their rows. Run again: the simulations of the parts left are kept, the others run again"
        )

    def drop_parts(self) -> None:
        """Remove ``<output>.partial``, its manifest last: a stop on the way (SIGTERM while thousands of parts go)
        fails the job, Snakemake deletes the output, and the rerun must still find the manifest that keeps the
        parts left (without it, they count as another model's and the whole sweep runs again)."""
        manifest = self.partial / "_manifest.json"
        for entry in self.partial.iterdir():
            if entry == manifest:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        manifest.unlink(missing_ok=True)
        self.partial.rmdir()


def _keys(frame: pd.DataFrame):
    return zip(frame["param_id"].tolist(), frame["replicate"].tolist(), frame["seed"].tolist(), strict=True)


# The digests of the model's code a resume record holds (simcal.model_code), and what each is of
CODE_RECORDS = {"model_code": "the source file", "model_package": "a file of the package"}


def _code_changed(previous: Mapping[str, Any], manifest: Mapping[str, Any]) -> str | None:
    """The first of ``CODE_RECORDS`` both records hold and that differs, or None; a record without one (no source
    file or package, or written by an earlier version) cannot tell, and its parts are kept."""
    for record in CODE_RECORDS:
        before, now = previous.get(record), manifest.get(record)
        if before is not None and now is not None and before != now:
            return record
    return None


def plan_change(partial: Path, previous: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """What the log says of parts kept under another resume record than this run's: the records that differ, or,
    where the earlier record differs only by lacking records this version adds (written by an earlier version of
    simcal, before an upgrade), that the plan is the same and every part is kept, rather than a plan change."""
    differ = sorted(key for key in previous if previous[key] != manifest.get(key))
    if not differ:
        added = ", ".join(sorted(set(manifest) - set(previous)))
        return (
            f"{partial} was written by an earlier version of simcal, whose resume record did not hold {added}; "
            "the plan is the same: every simulation of its parts is kept"
        )
    return (
        f"the plan changed since {partial} was written (its {', '.join(differ)} differ): its simulations that "
        "belong to the new plan are kept, the others are left out"
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_frame(frame: pd.DataFrame, path: Path | BinaryIO, timeout_s: float | None = None) -> None:
    """Write a part (see ``part_table``) of simulations that ran under ``timeout_s``."""
    table, as_text = part_table(frame)
    if as_text:
        log.warning("output columns %s hold values of different types; stored as text", as_text)
    pq.write_table(with_timeout(table, timeout_s), path)


def part_table(frame: pd.DataFrame) -> tuple[pa.Table, list[str]]:
    """The Arrow table a part stores, and the columns stored as text: output columns whose values Arrow cannot
    store as one type (a model returning a number for some simulations and text for others) become text rather
    than losing the batch. Raises what pandas or Arrow raise for a frame no part can hold."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False), []
    except ARROW_ERRORS:
        pass
    mixed = []
    for column in [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c])]:
        try:
            pa.array(frame[column], from_pandas=True)
        except ARROW_ERRORS:
            mixed.append(column)
    frame = frame.assign(**{c: frame[c].map(lambda v: None if _missing(v) else str(v)) for c in mixed})
    return pa.Table.from_pandas(frame, preserve_index=False), mixed


def storage_problem(frame: pd.DataFrame) -> str | None:
    """Why ``write_frame`` could not store these rows (``"<error type>: <message>"``), or None when it can.

    Columns of numbers, booleans, times and text with unique names are storable as they are; otherwise it
    converts to Arrow and writes the schema alone (no rows) to memory, which finds what Parquet refuses (a struct
    with no field, e.g. from an empty dict) for a small part of the cost of writing the rows."""
    names = [name if type(name) is str else str(name) for name in frame.columns]
    if len(set(names)) < len(names):  # Arrow would make two fields of one name (1 and "1" both become "1")
        repeated = sorted({name for name in names if names.count(name) > 1})
        return f"ValueError: duplicate column names {repeated}"
    if all(map(_plainly_storable, frame.dtypes)):
        return None
    try:
        table, _ = part_table(frame)
        pq.write_table(table.schema.empty_table(), pa.BufferOutputStream())
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever pandas or Arrow refuse is a reason to give
        return f"{type(error).__name__}: {error}"
    return None


def _plainly_storable(dtype: Any) -> bool:
    return isinstance(dtype, pd.StringDtype) or (isinstance(dtype, np.dtype) and dtype.kind in "biufmM")


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def read_results(path: str | Path) -> pd.DataFrame:
    """The simulation dataset written by ``simulate`` (one Parquet file) as a DataFrame (see ``results_frame``).

    Rows come sorted by (param_id, replicate), keeping each simulation's own row order, so the result does not
    depend on which batch finished first.
    """
    table = pq.read_table(path)
    missing = [name for name in ("param_id", "replicate") if name not in table.column_names]
    if missing:  # a KeyError naming only the column before (e.g. for a calibration's trials table)
        shown = ", ".join(table.column_names[:8]) + (", ..." if table.num_columns > 8 else "")
        raise ContractError(
            f"{path}: not a simulation dataset written by simulate (no {' or '.join(missing)} column; it has "
            f"{shown or 'no columns'})"
        )
    frame = results_frame(table)
    return frame.sort_values(["param_id", "replicate"], kind="stable").reset_index(drop=True)


def results_frame(table: pa.Table) -> pd.DataFrame:
    """Rows of simulations as a DataFrame, typed as ``read_results`` and ``simcal.api.gather`` both give them: text
    as pandas' default ``str`` dtype with NaN where missing, the status columns last."""
    frame = table.to_pandas()
    for name in table.column_names:
        # pandas reads an integer column with gaps as float64, rounding whole numbers beyond 2**53: those keep
        # every digit as a nullable integer column instead (the others stay float64, as pandas reads them)
        column = table[name]
        if pa.types.is_integer(column.type) and column.null_count and extreme(column) > EXACT_IN_FLOAT:
            kind = "UInt64" if pa.types.is_unsigned_integer(column.type) else "Int64"
            frame[name] = pd.array(column.to_pylist(), dtype=kind)
    # The parts' unified schema lists first the columns of whichever part came first (a failed simulation's
    # part has no outputs): key columns first and status columns last whatever the order of the parts.
    first = [c for c in KEY_COLUMNS if c in frame.columns]
    last = [c for c in STATUS_COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first and c not in last] + last]


def gathered_frame(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The rows of simulations run without a sweep (``simcal.api.gather``), in order, converted as a sweep's parts
    are and typed as ``read_results`` gives them: a column whose values change type between simulations becomes
    text, whole numbers beyond 2**53 keep every digit (beside fractions: as text), with the same warnings."""
    tables, run = [], []
    for frame in [*frames, None]:  # consecutive frames with the same columns and dtypes are converted at once
        if run and (frame is None or not _same_columns(frame, run[0])):
            table, as_text = part_table(pd.concat(run, ignore_index=True) if len(run) > 1 else run[0])
            if as_text:
                log.warning("output columns %s hold values of different types; given as text", as_text)
            tables.append(table.replace_schema_metadata(None))
            run = []
        if frame is not None:
            run.append(frame)
    schemas = [t.schema for t in tables]
    unified = whole_numbers_as_text(unify_schemas(schemas), tables, schemas)
    return results_frame(
        pa.concat_tables([t if t.schema == unified else conform(t, unified) for t in tables])
    )


def _same_columns(frame: pd.DataFrame, other: pd.DataFrame) -> bool:
    return frame.columns.equals(other.columns) and frame.dtypes.equals(other.dtypes)

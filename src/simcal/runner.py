"""Run many simulations on Dask in batches, writing a resumable Parquet dataset.

Layout while running: ``<output>.partial/part-*.parquet`` (one file per finished batch, each written atomically)
plus ``_manifest.json``. A rerun reads the parts there and skips every (param_id, replicate) already done. At the
end the parts get one schema and the directory is renamed to ``<output>`` in one step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simcal.backends import dashboard, dask_client
from simcal.contract import (
    ContractError,
    canonical_params,
    normalise_output,
    param_id,
    reject_unknown_keys,
    replicate_seed,
    resolve_callable,
)
from simcal.tables import atomic_write, parameter_sets, read_parameter_table

log = logging.getLogger(__name__)

KEY_COLUMNS = ["param_id", "replicate", "seed"]
STATUS_COLUMNS = ["status", "error", "duration_s"]


class SimTask(NamedTuple):
    param_id: str
    replicate: int
    seed: int
    params: dict[str, Any]


class TooManyFailures(RuntimeError):
    """More simulations failed than the configured threshold allows."""


@dataclass
class SimulationSettings:
    replicates: int = 1
    batch_size: int | None = None  # None: chosen from a timing probe
    target_task_seconds: float = 0.3  # aim of the automatic batch size (tasks of roughly 0.1-1 s)
    probe_seconds: float = 0.05
    max_batch_size: int = 100_000
    max_failed_fraction: float = 0.0
    retries: int = 2
    progress_seconds: float = 5.0

    @classmethod
    def from_config(cls, options: Mapping[str, Any] | None) -> SimulationSettings:
        options = dict(options or {})
        reject_unknown_keys(options, cls.__dataclass_fields__, "simulation settings")
        if options.get("batch_size") in ("auto", 0):
            options["batch_size"] = None
        settings = cls(**options)
        if settings.replicates < 1:
            raise ContractError(f"simulation settings: replicates must be >= 1, got {settings.replicates}")
        if not 0 <= settings.max_failed_fraction <= 1:
            raise ContractError(
                f"simulation settings: max_failed_fraction must be in [0, 1], got {settings.max_failed_fraction}"
            )
        return settings


def plan_tasks(param_sets: Iterable[Mapping[str, Any]], replicates: int) -> list[SimTask]:
    """Every parameter set × replicate, with its stable id and seed (duplicate parameter sets are merged)."""
    tasks, seen = [], set()
    for params in param_sets:
        plain = canonical_params(params)
        pid = param_id(plain, already_canonical=True)
        if pid in seen:
            continue
        seen.add(pid)
        tasks.extend(SimTask(pid, rep, replicate_seed(pid, rep), plain) for rep in range(replicates))
    return tasks


class Batch:
    """Simulations shipped as one opaque task argument.

    Dask walks lists, tuples and dicts in task arguments looking for keys; on thousands of small tuples that
    walk costs more than the simulations. An object of this class is passed through untouched.
    """

    __slots__ = ("tasks",)

    def __init__(self, tasks: Sequence[SimTask]):
        self.tasks = list(tasks)

    def __len__(self) -> int:
        return len(self.tasks)


_MODELS: dict[str, Any] = {}


def _model(reference: str):
    if reference not in _MODELS:
        _MODELS[reference] = resolve_callable(reference)
    return _MODELS[reference]


def run_batch(
    model_ref: str, tasks: Sequence[SimTask] | Batch, time_budget_s: float | None = None
) -> pd.DataFrame:
    """Run simulations one after another (on a worker); an exception becomes a failed row, never a lost batch.

    With ``time_budget_s`` it stops once that much time has passed (the timing probe), having run at least one.
    """
    model = _model(model_ref)
    if isinstance(tasks, Batch):
        tasks = tasks.tasks
    records: list[dict[str, Any]] = []  # simulations that returned scalars only: one row each, built at once
    frames: list[pd.DataFrame] = []
    frame_keys: list[dict[str, Any]] = []
    start = time.perf_counter()
    for task in tasks:
        began = time.perf_counter()
        status, error, output = "ok", None, None
        try:
            output = model(dict(task.params), task.seed)
            if isinstance(output, Mapping) and not any(
                isinstance(v, pd.DataFrame | pd.Series) for v in output.values()
            ):
                output = {str(k): (v.item() if hasattr(v, "item") else v) for k, v in output.items()}
            else:
                output = normalise_output(output, model_ref)
        except Exception as exc:  # noqa: BLE001 - any model error is a result row
            status, error, output = "failed", f"{type(exc).__name__}: {exc}", {}
        keys = {"param_id": task.param_id, "replicate": task.replicate, "seed": task.seed, **task.params}
        status_values = {"status": status, "error": error, "duration_s": time.perf_counter() - began}
        if isinstance(output, pd.DataFrame) and len(output):
            frames.append(output)
            frame_keys.append({**keys, **status_values})
        else:
            records.append({**keys, **(output or {}), **status_values})
        if time_budget_s is not None and time.perf_counter() - start >= time_budget_s:
            break
    parts = []
    if frames:
        lengths = [len(f) for f in frames]
        stacked = pd.concat(frames, ignore_index=True)
        key_table = (
            pd.DataFrame.from_records(frame_keys)
            .loc[[i for i, n in enumerate(lengths) for _ in range(n)]]
            .reset_index(drop=True)
        )
        overlap = [c for c in stacked.columns if c in key_table.columns]
        if overlap:
            stacked = stacked.rename(columns={c: f"output_{c}" for c in overlap})
        parts.append(pd.concat([key_table, stacked], axis=1))
    if records:
        parts.append(pd.DataFrame.from_records(records))
    result = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    ordered = (
        KEY_COLUMNS + [c for c in result.columns if c not in KEY_COLUMNS + STATUS_COLUMNS] + STATUS_COLUMNS
    )
    result = result[ordered]
    result["error"] = result["error"].astype("string")
    result["status"] = result["status"].astype("string")
    return result


class PartStore:
    """The in-progress parts in the directory ``<output>.partial`` and their final home, the file ``<output>``."""

    def __init__(self, output: str | Path, manifest: Mapping[str, Any]):
        self.output = Path(output)
        self.partial = self.output.with_name(self.output.name + ".partial")
        self.manifest = dict(manifest)
        manifest_path = self.partial / "_manifest.json"
        if self.partial.exists():
            previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
            if previous != self.manifest:
                log.warning(
                    "discarding %s: it was made by another model or settings (%s)", self.partial, previous
                )
                shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        if not manifest_path.exists():
            atomic_write(manifest_path, lambda tmp: tmp.write_text(json.dumps(self.manifest, sort_keys=True)))
        for lost in self.partial.glob("lost-*.parquet"):
            lost.unlink()  # batches lost to dead workers are redone on a rerun
        self._total, self._errors = 0, Counter()
        self.done()

    def parts(self) -> list[Path]:
        return sorted(p for p in self.partial.glob("*.parquet") if not p.name.startswith("."))

    def done(self) -> set[tuple[str, int]]:
        """Simulations already in the parts; also recounts them and their failures (see ``status_counts``)."""
        done: set[tuple[str, int]] = set()
        self._total, self._errors = 0, Counter()
        for part in self.parts():
            table = pq.read_table(part, columns=["param_id", "replicate", "status", "error"]).to_pandas()
            self._count(table)
            done.update(zip(table["param_id"], table["replicate"], strict=True))
        return done

    def _count(self, frame: pd.DataFrame) -> None:
        sims = frame[["param_id", "replicate", "status", "error"]].drop_duplicates(["param_id", "replicate"])
        self._total += len(sims)
        failed = sims[sims["status"] != "ok"]
        self._errors.update(failed["error"].fillna("unknown error").tolist())

    def write(self, frame: pd.DataFrame, tasks: Sequence[SimTask], prefix: str = "part") -> Path:
        self._count(frame)
        digest = hashlib.blake2b(
            "|".join(f"{t.param_id}:{t.replicate}" for t in tasks).encode(), digest_size=8
        ).hexdigest()
        return atomic_write(
            self.partial / f"{prefix}-{digest}.parquet", lambda tmp: frame.to_parquet(tmp, index=False)
        )

    def status_counts(self) -> tuple[int, Counter]:
        """(number of simulations, Counter of error texts of failed ones), kept up to date by done() and write()."""
        return self._total, Counter(self._errors)

    def finalize(self) -> Path:
        """Stream every part, under one unified schema, into a single Parquet file at the output (atomically),
        then drop the parts.

        One file rather than a directory of parts: remote storage plugins (Azure Blob among them) move files,
        and report ``directory()`` outputs as missing.
        """
        parts = self.parts()
        schemas = [pq.read_schema(p) for p in parts]
        unified = (
            pa.unify_schemas(schemas, promote_options="permissive").remove_metadata()
            if parts
            else pa.schema([])
        )

        def write_single_file(tmp: Path) -> None:
            with pq.ParquetWriter(tmp, unified) as writer:
                for part, schema in zip(parts, schemas, strict=True):
                    table = pq.read_table(part)
                    if schema.remove_metadata() != unified:
                        columns = [
                            table[f.name].cast(f.type)
                            if f.name in table.column_names
                            else pa.nulls(len(table), f.type)
                            for f in unified
                        ]
                        table = pa.Table.from_arrays(columns, schema=unified)
                    writer.write_table(table.replace_schema_metadata(None))

        if self.output.is_dir():  # a directory left by an older version of this code
            shutil.rmtree(self.output)
        atomic_write(self.output, write_single_file)
        shutil.rmtree(self.partial)
        return self.output


class Progress:
    def __init__(self, total: int, done: int, every_s: float, dashboard_link: str):
        self.total, self.done, self.every_s, self.dashboard = total, done, every_s, dashboard_link
        self.start_done, self.start = done, time.perf_counter()
        self.last = -math.inf

    def advance(self, count: int, force: bool = False) -> None:
        self.done += count
        now = time.perf_counter()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        log.info(
            "simulations %d/%d (%.1f%%), %.1f/s, ETA %s, dashboard %s",
            self.done, self.total, 100 * self.done / max(self.total, 1), rate,
            f"{eta:.0f}s" if math.isfinite(eta) else "unknown", self.dashboard,
        )  # fmt: skip


@dataclass
class RunSummary:
    total: int = 0
    executed: int = 0
    skipped: int = 0
    batch_size: int = 0
    batches: int = 0
    frames: list[pd.DataFrame] = field(default_factory=list)


class Simulator:
    """One model on one Dask backend; the client starts on first need and lives until the ``with`` block ends."""

    def __init__(
        self,
        model_ref: str,
        settings: SimulationSettings | None = None,
        backend: str = "local",
        backend_options: Mapping[str, Any] | None = None,
        threads: int = 1,
        client: Any = None,
    ):
        resolve_callable(model_ref)  # a bad reference fails here, before any cluster starts
        self.model_ref = model_ref
        self.settings = settings or SimulationSettings()
        self.backend, self.backend_options, self.threads = backend, dict(backend_options or {}), threads
        self._client = client
        self._stack = contextlib.ExitStack()
        self.batch_size = self.settings.batch_size

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    @property
    def client(self):
        if self._client is None:
            self._client = self._stack.enter_context(
                dask_client(self.backend, self.backend_options, self.threads)
            )
        return self._client

    def _choose_batch_size(self, probe: pd.DataFrame, elapsed: float, remaining: int) -> int:
        sims = max(1, probe.drop_duplicates(["param_id", "replicate"]).shape[0])
        per_sim = max(elapsed / sims, 1e-7)
        by_time = max(1, round(self.settings.target_task_seconds / per_sim))
        workers = max(1, self._worker_threads())
        # Keep at least two tasks per worker thread so none idles while one straggles.
        by_spread = max(1, math.ceil(remaining / (2 * workers)))
        size = min(by_time, by_spread, self.settings.max_batch_size)
        log.info("timing probe: %.2g s per simulation; batch size %d", per_sim, size)
        return size

    def _worker_threads(self) -> int:
        if self._client is None:
            return int(self.backend_options.get("workers") or self.threads)
        return sum(self._client.nthreads().values()) or 1

    def run(self, tasks: Sequence[SimTask], store: PartStore, collect: bool = False) -> RunSummary:
        done = store.done()
        remaining = [t for t in tasks if (t.param_id, t.replicate) not in done]
        summary = RunSummary(total=len(tasks), skipped=len(tasks) - len(remaining))
        if summary.skipped:
            log.info(
                "resuming: %d of %d simulations already done in %s",
                summary.skipped,
                len(tasks),
                store.partial,
            )
        if collect and summary.skipped:
            summary.frames.extend(_read_parts_for(store, {(t.param_id, t.replicate) for t in tasks}))
        if not remaining:
            return summary
        if self.batch_size is None:
            # Probe in this process for the local backend (same machine, and a sweep that fits in the probe
            # needs no cluster at all); on remote backends probe on a worker.
            probe_tasks = remaining[: min(len(remaining), 1000)]
            began = time.perf_counter()
            if self.backend == "local" and self._client is None:
                probe = run_batch(self.model_ref, probe_tasks, self.settings.probe_seconds)
            else:
                probe = self.client.submit(
                    run_batch, self.model_ref, Batch(probe_tasks), self.settings.probe_seconds, pure=False
                ).result()
            elapsed = time.perf_counter() - began
            probed = probe.drop_duplicates(["param_id", "replicate"]).shape[0]
            store.write(probe, remaining[:probed])
            summary.executed += probed
            summary.batches += 1
            if collect:
                summary.frames.append(probe)
            remaining = remaining[probed:]
            if not remaining:  # the probe did all the work; the next run probes again
                summary.batch_size = probed
                return summary
            self.batch_size = self._choose_batch_size(probe, elapsed, len(remaining))
        summary.batch_size = self.batch_size
        self._run_batches(remaining, store, summary, collect, len(tasks) - len(remaining))
        return summary

    def _run_batches(self, remaining, store, summary, collect, already_done) -> None:
        from distributed import as_completed

        client = self.client
        progress = Progress(summary.total, already_done, self.settings.progress_seconds, dashboard(client))
        size = self.batch_size
        batches = [remaining[i : i + size] for i in range(0, len(remaining), size)]
        futures = {
            client.submit(
                run_batch, self.model_ref, Batch(batch), retries=self.settings.retries, pure=False
            ): batch
            for batch in batches
        }
        for future in as_completed(futures):
            batch = futures.pop(future)
            try:
                frame = future.result()
                store.write(frame, batch)
            except Exception as exc:  # a worker died more often than retries allow: the batch is lost
                log.error(
                    "batch of %d simulations lost after %d retries: %r",
                    len(batch),
                    self.settings.retries,
                    exc,
                )
                frame = pd.DataFrame(
                    {
                        "param_id": [t.param_id for t in batch],
                        "replicate": [t.replicate for t in batch],
                        "seed": [t.seed for t in batch],
                        "status": "lost",
                        "error": f"batch lost after {self.settings.retries} retries: {type(exc).__name__}: {exc}",
                        "duration_s": float("nan"),
                    }
                )
                frame["error"] = frame["error"].astype("string")
                store.write(frame, batch, prefix="lost")
            summary.executed += len(batch)
            summary.batches += 1
            if collect:
                summary.frames.append(frame)
            progress.advance(len(batch))
            future.release()
        progress.advance(0, force=True)


def _read_parts_for(store: PartStore, wanted: set[tuple[str, int]]) -> list[pd.DataFrame]:
    frames = []
    for part in store.parts():
        frame = pd.read_parquet(part)
        keep = [(p, r) in wanted for p, r in zip(frame["param_id"], frame["replicate"], strict=True)]
        if any(keep):
            frames.append(frame[keep])
    return frames


def check_failures(store: PartStore, max_failed_fraction: float) -> tuple[int, int]:
    """Raise TooManyFailures naming the count and the most common errors when the threshold is exceeded."""
    total, errors = store.status_counts()
    failed = sum(errors.values())
    if total and failed / total > max_failed_fraction:
        common = "; ".join(f"{count}x {text}" for text, count in errors.most_common(3))
        raise TooManyFailures(
            f"{failed} of {total} simulations failed ({failed / total:.1%} > max_failed_fraction "
            f"{max_failed_fraction:.1%}). Most common errors: {common}. Finished parts are kept in {store.partial}."
        )
    if failed:
        log.warning(
            "%d of %d simulations failed (within max_failed_fraction %.1f%%)",
            failed,
            total,
            100 * max_failed_fraction,
        )
    return total, failed


def simulate(
    model_ref: str,
    parameters: str | Path | pd.DataFrame,
    output: str | Path,
    settings: SimulationSettings | Mapping[str, Any] | None = None,
    backend: str = "local",
    backend_options: Mapping[str, Any] | None = None,
    threads: int = 1,
    fixed_params: Mapping[str, Any] | None = None,
    client: Any = None,
) -> RunSummary:
    """Run every parameter set × replicate and write one Parquet dataset at ``output`` (a directory)."""
    if not isinstance(settings, SimulationSettings):
        settings = SimulationSettings.from_config(settings)
    resolve_callable(model_ref)
    table = parameters if isinstance(parameters, pd.DataFrame) else read_parameter_table(parameters)
    sets = [{**(fixed_params or {}), **row} for row in parameter_sets(table)]
    tasks = plan_tasks(sets, settings.replicates)
    store = PartStore(output, {"model": model_ref, "replicates": settings.replicates})
    began = time.perf_counter()
    with Simulator(model_ref, settings, backend, backend_options, threads, client) as simulator:
        summary = simulator.run(tasks, store)
    check_failures(store, settings.max_failed_fraction)
    store.finalize()
    log.info(
        "wrote %s: %d simulations (%d run now, %d resumed) in %.2f s, batch size %d",
        output, summary.total, summary.executed, summary.skipped, time.perf_counter() - began, summary.batch_size,
    )  # fmt: skip
    return summary


def read_results(path: str | Path) -> pd.DataFrame:
    """The simulation dataset written by ``simulate`` (one Parquet file) as a DataFrame.

    Rows come sorted by (param_id, replicate), keeping each simulation's own row order, so the result does not
    depend on which batch finished first.
    """
    frame = pd.read_parquet(path)
    return frame.sort_values(["param_id", "replicate"], kind="stable").reset_index(drop=True)

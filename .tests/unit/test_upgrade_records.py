"""Files an earlier version of the catalog left in a working directory, read by this one (docs/upgrading.md).

``upgrade_records/`` holds resume records (``<output>.partial/_manifest.json``) exactly as 54c2a39 wrote them, for
a sweep and a calibration of a user's own model interrupted halfway (labmodels.slow:simulate, SIGTERM).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from simcal.settings import SimulationSettings, sweep_plan_record
from simcal.store import PartStore
from simcal.sweep_plan import plan_manifest
from simcal.tasks import plan_tasks

RECORDS = Path(__file__).parent / "upgrade_records"
MODEL = "simcal.models.sir:simulate"


def old_record(name: str) -> dict:
    return json.loads((RECORDS / name).read_text())


def ok_rows(tasks) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"param_id": t.param_id, "replicate": t.replicate, "seed": t.seed, **t.params, "incidence": 1.0,
             "status": "ok", "error": None, "duration_s": 0.1}
            for t in tasks
        ]
    )  # fmt: skip


def interrupted_sweep_of_an_earlier_version(output: Path, tasks, manifest: dict, kept: set[str]) -> None:
    """``<output>.partial`` as the earlier version left it: its record holds only the keys that version wrote (the
    fixture's), with this plan's values, and one part of half the simulations."""
    partial = output.with_name(output.name + ".partial")
    partial.mkdir(parents=True)
    (partial / "_manifest.json").write_text(json.dumps({key: manifest[key] for key in sorted(kept)}))
    ok_rows(tasks[: len(tasks) // 2]).to_parquet(partial / "part-0.parquet")


def test_a_sweep_interrupted_under_an_earlier_version_resumes_and_the_log_says_the_plan_is_the_same(
    tmp_path, caplog
):
    """Upgrading a working directory with an interrupted sweep: the earlier version's record lacks the records
    this one added (model_package, sweep_plan). Its parts were kept, but the log said "the plan changed since ...
    the others are left out", which sent users looking for a change they had not made. Now it says the record is
    an earlier version's and the plan the same, and every part is still kept."""
    caplog.set_level(logging.INFO, logger="simcal")
    earlier = old_record("sweep_manifest_54c2a39.json")
    settings = SimulationSettings(replicates=2)
    tasks = plan_tasks([{"beta": 0.1 + i / 100, "gamma": 0.1} for i in range(8)], settings.replicates)
    fixed = {"population": 1000, "initial_infected": 5, "days": 10}
    manifest = plan_manifest(MODEL, tasks, settings, sweep_plan=sweep_plan_record(fixed, settings))
    assert set(earlier) < set(manifest), "the fixture is a record of fewer keys than this version writes"
    output = tmp_path / "simulations.parquet"
    interrupted_sweep_of_an_earlier_version(output, tasks, manifest, set(earlier))

    store = PartStore(output, manifest)
    store.expect(tasks)

    assert len(store.not_done(tasks)) == len(tasks) - len(tasks) // 2  # the earlier version's work is kept
    said = [r.getMessage() for r in caplog.records if r.name == "simcal.store"]
    assert said == [
        f"{output}.partial was written by an earlier version of simcal, whose resume record did not hold "
        "model_package, sweep_plan; the plan is the same: every simulation of its parts is kept"
    ], said


def test_a_record_of_an_earlier_version_that_also_differs_in_the_plan_says_what_differs(tmp_path, caplog):
    """An earlier version's record whose plan differs too (here its replicates) is a plan change, named."""
    caplog.set_level(logging.INFO, logger="simcal")
    earlier = old_record("sweep_manifest_54c2a39.json")
    settings = SimulationSettings(replicates=2)
    tasks = plan_tasks([{"beta": 0.1 + i / 100, "gamma": 0.1} for i in range(8)], settings.replicates)
    manifest = plan_manifest(MODEL, tasks, settings, sweep_plan=sweep_plan_record({}, settings))
    output = tmp_path / "simulations.parquet"
    interrupted_sweep_of_an_earlier_version(output, tasks, {**manifest, "replicates": 1}, set(earlier))

    store = PartStore(output, manifest)
    store.expect(tasks)

    said = [r.getMessage() for r in caplog.records if r.name == "simcal.store"]
    assert said == [
        f"the plan changed since {output}.partial was written (its replicates differ): its simulations that "
        "belong to the new plan are kept, the others are left out"
    ], said
    assert len(store.not_done(tasks)) == len(tasks) - len(tasks) // 2


@pytest.mark.parametrize("name", ["sweep_manifest_54c2a39.json", "calibration_manifest_54c2a39.json"])
def test_the_fixtures_are_records_of_a_user_model_as_the_earlier_version_wrote_them(name):
    """What the two fixtures are: 54c2a39's records, before model_package and sweep_plan were recorded."""
    record = old_record(name)
    assert record["model"] == "labmodels.slow:simulate"
    assert {"model_code", "replicates", "seed", "common_random_numbers"} <= set(record)
    assert not {"model_package", "sweep_plan"} & set(record)

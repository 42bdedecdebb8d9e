"""What a resumed sweep or calibration keeps of the parts an earlier run left: timeouts under a smaller timeout_s
run again, failed rows too with rerun_failed, and nothing of another version of the model's source file."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pathlib
import shutil
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest
from simcal_calibration_models import BOUNDS, POISSON
from testkit import dask_client

from simcal import runner
from simcal.backends import Terminated, close_on_signals
from simcal.calibrate import calibrate
from simcal.model_code import model_code_digest, source_file
from simcal.models import sir
from simcal.models.sir import observe
from simcal.part_timeouts import TIMEOUT_KEY
from simcal.progress import progress_path, read_progress
from simcal.runner import PartStore, TooManyFailures, plan_tasks, read_results, simulate
from simcal.store import PartsLost
from simcal.worker import failure_rows


@pytest.fixture(scope="module")
def client():
    with dask_client(2) as connected:
        yield connected


def ok_rows(tasks) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"param_id": t.param_id, "replicate": t.replicate, "seed": t.seed, **t.params, "y": 1.0,
             "status": "ok", "error": None, "duration_s": 0.1}
            for t in tasks
        ]
    )  # fmt: skip


def mixed_part(tasks) -> pd.DataFrame:
    """One ok simulation, one that failed, one that crashed and one that timed out (in that order)."""
    return pd.concat(
        [
            ok_rows(tasks[:1]),
            failure_rows(tasks[1:2], "failed", "ValueError: boom"),
            failure_rows(tasks[2:3], "crashed", "SimulationCrashed: its worker died"),
            failure_rows(tasks[3:4], "timeout", "SimulationTimeout: ran longer than timeout_s = 1 s"),
        ],
        ignore_index=True,
    )


def test_a_resume_runs_again_the_simulations_that_timed_out_under_a_smaller_timeout_s_and_keeps_the_others(
    tmp_path, caplog
):
    """A part records the timeout_s it ran under; a resume with a larger one (or none) runs its timeouts again,
    and keeps its failed and crashed rows (rerun_failed decides those) and the timeouts under a limit as large."""
    caplog.set_level(logging.INFO, logger="simcal")
    tasks = plan_tasks([{"a": float(i)} for i in range(4)], 1)
    manifest = {"model": "m:f"}
    PartStore(tmp_path / "out", manifest, timeout_s=1.0).write(mixed_part(tasks), tasks)
    part = next((tmp_path / "out.partial").glob("part-*.parquet"))
    assert pq.read_schema(part).metadata[TIMEOUT_KEY] == b"1.0"
    same = PartStore(tmp_path / "out", manifest, timeout_s=1.0)
    assert same.not_done(tasks) == [] and same.error_of(tasks[3]).startswith("SimulationTimeout")
    assert PartStore(tmp_path / "out", manifest, timeout_s=0.5).not_done(tasks) == []  # a smaller one: kept
    larger = PartStore(tmp_path / "out", manifest, timeout_s=2.0)
    assert larger.not_done(tasks) == tasks[3:]
    assert larger.error_of(tasks[1]) == "ValueError: boom"
    assert larger.error_of(tasks[2]).startswith("SimulationCrashed")
    said = "1 simulations that timed out under a smaller timeout_s than this run's (2 s) run again"
    assert said in caplog.text
    # The part left holds the three kept rows and still says what they ran under.
    assert pq.read_table(part).num_rows == 3 and pq.read_schema(part).metadata[TIMEOUT_KEY] == b"1.0"


def test_no_timeout_s_runs_again_every_timeout_of_a_limit_and_a_part_of_an_older_version_is_judged_by_its_error(
    tmp_path,
):
    tasks = plan_tasks([{"a": float(i)} for i in range(4)], 1)
    PartStore(tmp_path / "out", {"model": "m:f"}, timeout_s=1.0).write(mixed_part(tasks), tasks)
    assert PartStore(tmp_path / "out", {"model": "m:f"}, timeout_s=None).not_done(tasks) == tasks[3:]
    # A part written before parts recorded their timeout_s: the limit its timeout rows name.
    older = tmp_path / "older"
    more = plan_tasks([{"a": float(i)} for i in range(5)], 1)
    PartStore(older, {"model": "m:f"})  # makes older.partial
    start_up = failure_rows(more[4:], "timeout", "SimulationTimeout: had not imported m:f after 60 s")
    rows = pd.concat([mixed_part(more), start_up])
    rows.to_parquet(tmp_path / "older.partial" / "part-old.parquet", index=False)
    assert TIMEOUT_KEY not in (pq.read_schema(tmp_path / "older.partial" / "part-old.parquet").metadata or {})
    assert PartStore(older, {"model": "m:f"}, timeout_s=1.0).not_done(more) == []
    # 1 s named in its error is less than 3 s: run again; the start-up timeout names no limit: kept
    assert PartStore(older, {"model": "m:f"}, timeout_s=3.0).not_done(more) == more[3:4]


def test_a_sweep_resumed_with_a_larger_timeout_s_runs_again_what_timed_out_before(tmp_path, client):
    """Before, a timeout was a result like any failure: kept on resume unless rerun_failed, so raising timeout_s
    after a sweep stopped on its timeouts changed nothing (the same rows, the same TooManyFailures)."""
    count = tmp_path / "count"
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_COUNT", str(count)))
    params = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "sleep_s": [0.0, 0.0, 1.5, 0.0]})
    model, out = "simcal_models:sleeps_in_steps", tmp_path / "out"
    with pytest.raises(TooManyFailures):
        simulate(model, params, out, {"batch_size": 4, "timeout_s": 0.3, "max_failed_fraction": 0.0},
                 client=client)  # fmt: skip
    assert sorted(count.read_text().split()) == ["0.0", "1.0", "3.0"]  # a=2 timed out; the parts stay
    again = simulate(model, params, out, {"batch_size": 4, "timeout_s": 30, "max_failed_fraction": 0.0},
                     client=client)  # fmt: skip
    assert (again.skipped, again.executed) == (3, 1)
    assert sorted(count.read_text().split()) == ["0.0", "1.0", "2.0", "3.0"]
    assert (read_results(out)["status"] == "ok").all()


def test_a_calibration_resumed_with_rerun_failed_runs_its_failed_simulations_again(tmp_path, client):
    """Before, calibrate built its PartStore without rerun_failed: a calibration stopped by its failures and
    resumed after the cause was fixed (outside the model's source file) kept the failed rows and stopped again.
    Now it reruns them, and as each run's proposer is told the losses of this run's rows only, the resumed
    calibration's trials are those of a calibration that never failed."""
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 30}, 7, process="mean_field")
    bounds, targets = BOUNDS, POISSON
    settings = {
        "initial_points": 8,
        "rounds": 1,
        "proposals_per_round": 4,
        "refine": {"top_k": 2, "replicates": 2},
    }
    strict = {"replicates": 1, "max_failed_fraction": 0.1, "batch_size": 4}

    def run(out: Path, simulation) -> pd.DataFrame:
        return calibrate(
            "simcal_calibration_models:mean_field_failing_above_until_fixed", observed, bounds, targets,
            out / "s.parquet", out / "t.parquet", settings, simulation, fixed_params={"days": 30}, client=client,
        )  # fmt: skip

    first, fresh = tmp_path / "first", tmp_path / "fresh"
    with pytest.raises(TooManyFailures):  # beta > 0.45 fails; the parts stay
        run(first, strict)
    failed = pd.read_parquet(first / "t.failed.parquet")["replicates_failed"].fillna(0)
    assert failed.sum() > 0
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_FIXED", "1"))  # the cause is fixed
    try:
        with pytest.raises(TooManyFailures):  # without rerun_failed the failed rows are results: kept
            run(first, strict)
        resumed = run(first, {**strict, "rerun_failed": True})
        never_failed = run(fresh, strict)
    finally:
        client.run(lambda: os.environ.pop("SIMCAL_TEST_FIXED", None))
    assert (read_results(first / "s.parquet")["status"] == "ok").all()
    assert resumed.attrs["resumed_simulations"] > 0  # the simulations that succeeded were not run again
    assert (resumed["replicates_failed"].fillna(0) == 0).all()
    pd.testing.assert_frame_equal(resumed, never_failed)


# -- a change to the model's code sets the parts of the old code aside -------------------------------------------
MODEL_CODE = """
def model(params, seed):
    if params["a"] == 3.0:
        raise ValueError("a bug for a = 3")
    return {"y": params["a"] * VERSION}


VERSION = 1.0
"""


def test_a_sweep_resumed_after_its_models_source_file_changed_runs_every_simulation_again(
    tmp_path, client, caplog
):
    """Before, the resume record held the model's name only: after fixing the model under the same name, the
    rerun kept the old code's rows (docs said: delete <output>.partial/). Now it holds a digest of the model's
    source file, and the parts of other code are discarded with one log line saying why."""
    caplog.set_level(logging.INFO, logger="simcal")
    code = tmp_path / "code"
    code.mkdir()
    (code / "sim5_changing_model.py").write_text(MODEL_CODE)
    client.run(lambda: sys.path.insert(0, str(code)))  # sys.path.insert itself would pickle a copy
    sys.path.insert(0, str(code))
    try:
        model, out = "sim5_changing_model:model", tmp_path / "out"
        params = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
        with pytest.raises(TooManyFailures):  # the bug: the finished simulations stay in the parts
            simulate(model, params, out, {"batch_size": 1, "max_failed_fraction": 0.0}, client=client)
        (code / "sim5_changing_model.py").write_text(MODEL_CODE.replace("VERSION = 1.0", "VERSION = 2.0"))
        caplog.clear()
        changed = simulate(model, params, out, {"batch_size": 1, "max_failed_fraction": 1.0}, client=client)
    finally:
        sys.path.remove(str(code))
        client.run(lambda: sys.path.remove(str(code)))
    assert (changed.skipped, changed.executed) == (0, 4)
    # a = 3: the bug is there still
    assert sorted(read_results(out)["status"]) == ["failed", "ok", "ok", "ok"]
    said = [r.getMessage() for r in caplog.records if "source file of model" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"discarding {out}.partial: the source file of model {model} changed")


PACKAGED_MODEL = """
from sim8_package.helper import scale


def model(params, seed):
    if params["a"] == 3.0:
        raise ValueError("a bug for a = 3")
    return {"y": scale(params["a"])}
"""


def write_package(root: Path, factor: float) -> None:
    """A model in a package of the researcher's, whose helper module holds what a fix changes."""
    (root / "sim8_package").mkdir(parents=True, exist_ok=True)
    (root / "sim8_package" / "__init__.py").write_text("")
    (root / "sim8_package" / "model.py").write_text(PACKAGED_MODEL)
    (root / "sim8_package" / "helper.py").write_text(f"def scale(a):\n    return a * {factor}\n")


def test_a_sweep_resumed_after_a_helper_of_its_models_package_changed_runs_every_simulation_again(
    tmp_path, client, caplog
):
    """The resume record held the digest of the model's own file only: after fixing a helper the model imports
    from its package, the rerun kept the old code's rows. It now holds a digest of the package's files too."""
    caplog.set_level(logging.INFO, logger="simcal")
    code = tmp_path / "code"
    write_package(code, 1.0)
    client.run(lambda: sys.path.insert(0, str(code)))
    sys.path.insert(0, str(code))
    try:
        model, out = "sim8_package.model:model", tmp_path / "out"
        params = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
        with pytest.raises(TooManyFailures):  # the bug: the finished simulations stay in the parts
            simulate(model, params, out, {"batch_size": 1, "max_failed_fraction": 0.0}, client=client)
        first = model_code_digest(model)
        write_package(code, 2.0)
        assert model_code_digest(model) == first  # the model's own file did not change
        caplog.clear()
        changed = simulate(model, params, out, {"batch_size": 1, "max_failed_fraction": 1.0}, client=client)
    finally:
        sys.path.remove(str(code))
        client.run(lambda: sys.path.remove(str(code)))
        for name in [name for name in sys.modules if name.startswith("sim8_package")]:
            del sys.modules[name]
    assert (changed.skipped, changed.executed) == (0, 4)  # (4, 0) before: the old helper's rows were all kept
    said = [
        r.getMessage() for r in caplog.records if "of model" in r.getMessage() and "changed" in r.getMessage()
    ]
    assert len(said) == 1 and said[0].startswith(
        f"discarding {out}.partial: a file of the package of model {model} changed"
    ), said


def test_the_package_digest_covers_every_file_of_the_models_own_package_and_only_that(tmp_path):
    """None for a model of a top-level module (its file alone is digested) and for one of an installed package
    (under site-packages); for the researcher's own package, every .py file of it, a new one included."""
    from simcal.model_code import model_package_digest

    own, installed = tmp_path / "own", tmp_path / "lib" / "site-packages"
    write_package(own, 1.0)
    (tmp_path / "sim8_top_level.py").write_text(MODEL_CODE)
    (installed / "sim8_installed").mkdir(parents=True)
    (installed / "sim8_installed" / "__init__.py").write_text(MODEL_CODE)
    sys.path[:0] = [str(own), str(tmp_path), str(installed)]
    try:
        first = model_package_digest("sim8_package.model:model")
        assert first is not None and model_package_digest("sim8_package.model:model") == first
        (own / "sim8_package" / "unused.py").write_text("")
        assert model_package_digest("sim8_package.model:model") not in (None, first)
        assert model_package_digest("sim8_top_level:model") is None
        assert model_package_digest("sim8_installed:model") is None
    finally:
        del sys.path[:3]
        for name in [name for name in sys.modules if name.startswith("sim8_")]:
            del sys.modules[name]


def test_the_digest_is_that_of_the_file_defining_the_models_function_and_none_without_one(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="simcal")
    (tmp_path / "sim5_digest_model.py").write_text(MODEL_CODE)
    sys.path.insert(0, str(tmp_path))
    try:
        first = model_code_digest("sim5_digest_model:model")
        assert model_code_digest("sim5_digest_model:model") == first and len(first) == 32
        (tmp_path / "sim5_digest_model.py").write_text(MODEL_CODE + "# a comment\n")
        assert model_code_digest("sim5_digest_model:model") not in (None, first)
    finally:
        sys.path.remove(str(tmp_path))
    # A decorated function (SPACE.declare), a partial and a callable object: the file of the defining module.
    assert source_file(sir.simulate) == Path(sir.__file__)
    assert source_file(functools.partial(sir.observe, noise="poisson")) == Path(sir.__file__)
    assert source_file(Path(sir.__file__)) == Path(pathlib.__file__)
    assert source_file(len) is None  # a builtin: no file
    interactive: dict = {}
    exec(compile("def model(params, seed):\n    return {}\n", "<stdin>", "exec"), interactive)
    sys.modules["sim5_interactive"] = SimpleNamespace(model=interactive["model"])
    try:
        assert model_code_digest("sim5_interactive:model") is None
    finally:
        del sys.modules["sim5_interactive"]
    assert "model sim5_interactive:model has no source file" in caplog.text


def test_a_sigterm_while_the_cluster_closes_after_the_output_is_written_keeps_the_parts_for_the_rerun(
    tmp_path, client, monkeypatch
):
    """Closing a LocalCluster takes seconds, after the output is written. A SIGTERM then (Snakemake's, a walltime)
    fails the job and Snakemake deletes the output; the parts had already gone with it, so the rerun ran every
    simulation again, though the job's last line said it resumes from the simulations it finished."""

    @contextlib.contextmanager
    def cluster_stopped_while_closing(*args, **kwargs):
        yield client
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the cluster closes

    params, out = pd.DataFrame({"beta": [0.2, 0.3, 0.4], "gamma": [0.1, 0.1, 0.1]}), tmp_path / "sims.parquet"
    fixed = {"population": 500, "initial_infected": 5, "days": 20}
    with monkeypatch.context() as patched:
        patched.setattr(runner, "dask_client", cluster_stopped_while_closing)
        with pytest.raises(Terminated), close_on_signals(cluster=False):  # as the simulate wrapper runs it
            simulate("simcal.models.sir:simulate", params, out, {"replicates": 2}, fixed_params=fixed)
    out.unlink()  # Snakemake removes the output of the failed job
    again = simulate("simcal.models.sir:simulate", params, out, {"replicates": 2}, fixed_params=fixed,
                     client=client)  # fmt: skip
    assert (again.skipped, again.executed) == (6, 0)
    assert len(read_results(out)[["param_id", "replicate"]].drop_duplicates()) == 6
    assert not out.with_name(out.name + ".partial").exists()


def test_a_calibration_stopped_while_its_cluster_closes_resumes_every_simulation_to_the_same_trials(
    tmp_path, client, monkeypatch
):
    """The calibration's counterpart: its simulations file and trials were written, then the SIGTERM while the
    cluster closed failed the job with the parts already gone, and the rerun ran every round's simulations again."""

    @contextlib.contextmanager
    def cluster_stopped_while_closing(*args, **kwargs):
        yield client
        os.kill(os.getpid(), signal.SIGTERM)

    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 30}, 7, process="mean_field")
    settings = {
        "initial_points": 4,
        "rounds": 1,
        "proposals_per_round": 2,
        "refine": {"top_k": 1, "replicates": 2},
    }
    sims, trials = tmp_path / "s.parquet", tmp_path / "t.parquet"

    def run(**given) -> pd.DataFrame:
        return calibrate("simcal.models.sir:simulate", observed, BOUNDS, POISSON, sims, trials, settings,
                         {"replicates": 1}, fixed_params={"days": 30, "population": 1000}, **given)  # fmt: skip

    with monkeypatch.context() as patched:
        patched.setattr(runner, "dask_client", cluster_stopped_while_closing)
        with pytest.raises(Terminated), close_on_signals(cluster=False):
            run()
    first = pd.read_parquet(trials)
    done = len(read_results(sims)[["param_id", "replicate"]].drop_duplicates())
    sims.unlink()  # Snakemake removes the outputs of the failed job
    trials.unlink()
    again = run(client=client)
    assert again.attrs["resumed_simulations"] == done
    pd.testing.assert_frame_equal(again, first)


def test_a_sweep_is_closing_while_its_cluster_closes_and_its_parts_go_and_finished_only_after_them(
    tmp_path, client, monkeypatch
):
    """The progress file said finished before the cluster closed and the parts went: a SIGTERM then failed the job
    (the rerun resumes), yet `simcal status` showed the sweep finished until the rerun. Now it says closing until
    the parts are gone, then finished; stopped when a SIGTERM comes while the cluster closes."""
    params, out = pd.DataFrame({"beta": [0.2, 0.3], "gamma": [0.1, 0.1]}), tmp_path / "sims.parquet"
    fixed = {"population": 500, "initial_infected": 5, "days": 20}
    seen: list[str] = []

    @contextlib.contextmanager
    def cluster_stopped_while_closing(*args, **kwargs):
        yield client
        seen.append(read_progress(progress_path(out))["state"])
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the cluster closes

    with monkeypatch.context() as patched:
        patched.setattr(runner, "dask_client", cluster_stopped_while_closing)
        with pytest.raises(Terminated), close_on_signals(cluster=False):
            simulate("simcal.models.sir:simulate", params, out, {"replicates": 2}, fixed_params=fixed)
    record = read_progress(progress_path(out))
    assert seen == ["closing"]
    assert record["state"] == "stopped" and record["message"].startswith("stopped by SIGTERM")

    out.unlink()  # Snakemake removes the output of the failed job
    dropping = PartStore.drop_parts

    def drop_parts(store: PartStore) -> None:
        seen.append(read_progress(progress_path(out))["state"])
        dropping(store)

    monkeypatch.setattr(PartStore, "drop_parts", drop_parts)
    simulate("simcal.models.sir:simulate", params, out, {"replicates": 2}, fixed_params=fixed, client=client)
    assert seen == ["closing", "closing"]  # while the parts went
    assert read_progress(progress_path(out))["state"] == "finished"
    assert not out.with_name(out.name + ".partial").exists()


def test_a_calibration_that_fails_while_its_parts_go_is_recorded_failed_not_finished(
    tmp_path, client, monkeypatch
):
    """The calibration's counterpart: a step after its cluster has closed that fails (here the removal of the
    parts) fails the job, and its progress file says so rather than finished."""
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 30}, 7, process="mean_field")
    settings = {"initial_points": 2, "rounds": 0, "refine": {"top_k": 0}}
    sims, trials = tmp_path / "s.parquet", tmp_path / "t.parquet"

    def drop_parts(store: PartStore) -> None:
        raise OSError(5, "Input/output error", str(store.partial))

    monkeypatch.setattr(PartStore, "drop_parts", drop_parts)
    with pytest.raises(OSError, match="Input/output error"):
        calibrate("simcal.models.sir:simulate", observed, BOUNDS, POISSON, sims, trials, settings,
                  {"replicates": 1}, fixed_params={"days": 30, "population": 1000}, client=client)  # fmt: skip
    record = read_progress(progress_path(sims))
    assert record["state"] == "failed" and "Input/output error" in record["message"]


def test_a_calibration_stopped_after_its_trials_are_written_keeps_them_as_a_failed_jobs_and_says_so(
    tmp_path, client, monkeypatch
):
    """The trials table is written before the simulations are merged, the cluster closes and the parts go. A SIGTERM
    then fails the job and Snakemake deletes the table with its outputs, yet `<trials>.failed.parquet`, which a stop
    in a round keeps, was not written: the trials of every round were gone, and neither the log line nor the
    progress file said where they were."""

    @contextlib.contextmanager
    def cluster_stopped_while_closing(*args, **kwargs):
        yield client
        os.kill(os.getpid(), signal.SIGTERM)

    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 30}, 7, process="mean_field")
    settings = {"initial_points": 3, "rounds": 0, "refine": {"top_k": 0}}
    sims, trials = tmp_path / "s.parquet", tmp_path / "t.parquet"
    kept = tmp_path / "t.failed.parquet"
    with monkeypatch.context() as patched:
        patched.setattr(runner, "dask_client", cluster_stopped_while_closing)
        with pytest.raises(Terminated) as stopped, close_on_signals(cluster=False):
            calibrate("simcal.models.sir:simulate", observed, BOUNDS, POISSON, sims, trials, settings,
                      {"replicates": 1}, fixed_params={"days": 30, "population": 1000})  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_parquet(kept), pd.read_parquet(trials))
    assert len(pd.read_parquet(kept)) == 3
    assert any(str(kept) in note for note in stopped.value.__notes__)
    record = read_progress(progress_path(sims))
    assert record["state"] == "stopped" and str(kept) in record["message"]


def test_a_sweep_whose_parts_were_removed_while_it_ran_publishes_nothing_and_its_rerun_keeps_the_parts_left(
    tmp_path,
):
    """The parts folder removed while a sweep ran (a clean-up of the results folder): the parts written after
    were published alone, an output lacking the removed parts' simulations without a word (and the status said
    all were done). Now the sweep fails naming the lost parts, and the manifest is written again so that the rerun
    keeps the parts left (without it they counted as another model's) and runs only the lost simulations."""
    tasks = plan_tasks([{"a": float(i)} for i in range(4)], 1)
    out, manifest = tmp_path / "out.parquet", {"model": "m:f"}
    store = PartStore(out, manifest)
    store.expect(tasks)
    store.write(ok_rows(tasks[:2]), tasks[:2])
    shutil.rmtree(store.partial)
    store.write(ok_rows(tasks[2:]), tasks[2:])
    with pytest.raises(
        PartsLost, match=r"out\.parquet\.partial: 1 of the parts .* holding 2 of its 4 simulations"
    ):
        store.finalize()
    assert not out.exists()
    rerun = PartStore(out, manifest)
    assert rerun.not_done(tasks) == tasks[:2]

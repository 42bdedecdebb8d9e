"""simcal.logs: what a wrapper sets up: records to snakemake.log, a failure logged with its traceback, re-raised; a
user's mistake (a ContractError) one logged line and exit status 1, without a traceback."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
from testkit import signalled_mid_write

from simcal.backends import Terminated, close_on_signals
from simcal.contract import ContractError
from simcal.logs import configure, configure_wrapper, failure_logged
from wrapper_rules import InputRefused, Interrupted, MachineRefused, RuleRefused

CAUSES = {
    signal.SIGTERM: "a walltime, scancel or pod deletion",
    signal.SIGHUP: "its terminal or ssh session closed",
}


def test_records_and_a_failure_go_to_the_log_file(tmp_path, restore_logging):
    log = tmp_path / "logs" / "job.log"
    configure(log)
    logging.getLogger("simcal.runner").info("12/24 done")
    logging.getLogger("distributed.scheduler").info("chatter below warnings")
    with pytest.raises(MachineRefused), failure_logged("simulate"):
        raise MemoryError  # a job out of memory is logged too (one line, wrapper_rules.memory), and still stops
    text = log.read_text()
    assert "INFO simcal.runner: 12/24 done" in text and "chatter" not in text
    assert "ERROR simcal: simulate failed: MemoryError: the process could not get the memory" in text
    assert "Traceback" not in text


def test_a_contract_error_is_one_line_in_the_log_and_on_stderr_and_ends_with_status_1(
    tmp_path, capsys, restore_logging
):
    log = tmp_path / "job.log"
    configure(log)
    message = "design parameters.beta: need low < high (and low > 0 when log: true), got 0.6, 0.1"
    with pytest.raises(InputRefused) as ended, failure_logged("sample_design"):
        raise ContractError(message)
    assert ended.value.code == 1 and type(ended.value.error) is ContractError
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f" ERROR simcal: sample_design failed: {message}"), lines
    assert capsys.readouterr().err == f"sample_design failed: {message}\n"


def test_a_bug_keeps_its_traceback_in_the_log_and_propagates_unchanged(tmp_path, restore_logging):
    log = tmp_path / "job.log"
    configure(log)
    with pytest.raises(KeyError, match="beta"), failure_logged("sample_design"):
        raise KeyError("beta")
    text = log.read_text()
    assert " ERROR simcal: sample_design failed\nTraceback (most recent call last):\n" in text
    assert text.endswith("KeyError: 'beta'\n")


@pytest.mark.parametrize(
    ("signum", "notes"),
    [(signal.SIGTERM, []), (signal.SIGHUP, ["The trials table ... is in t.failed.parquet."])],
)
def test_a_termination_signal_is_one_line_naming_that_signal_and_the_notes_and_propagates_unchanged(
    tmp_path, capsys, restore_logging, signum, notes
):
    """backends.close_on_signals turns SIGTERM and SIGHUP into Terminated (exit status 128 + the signal): the log
    names the signal it was and what usually sends it (SIGHUP was once said to come from a walltime), adds the notes (where a calibration's trials so far are kept), and has no
    traceback; stderr says nothing more (the log is the record)."""
    log = tmp_path / "job.log"
    configure(log)
    stop = Terminated(128 + signum)
    for note in notes:
        stop.add_note(note)
    with pytest.raises(Terminated) as ended, failure_logged("simulate"):
        raise stop
    assert ended.value is stop and stop.code == 128 + signum
    lines = log.read_text().splitlines()
    expected = (
        f" ERROR simcal: simulate stopped by {signum.name} ({CAUSES[signum]}): its Dask cluster "
        "was closed (worker jobs cancelled), and a rerun resumes from the simulations it finished."
        + "".join(f" {note}" for note in notes)
    )
    assert len(lines) == 1 and lines[0].endswith(expected), lines
    assert capsys.readouterr().err == ""


# A wrapper's job outside any Dask cluster (set-up, merging parts, writing the output): an atomic write under way
# when SIGTERM arrives (SLURM's walltime, scancel, a pod's deletion).
TERMINATED_JOB = """
import sys, time
from pathlib import Path
from simcal.logs import configure, failure_logged
from simcal.tables import atomic_write

folder = Path(sys.argv[1])
configure(folder / "job.log")

def slow_write(handle):
    handle.write(b"half a table")
    handle.flush()
    (folder / "writing").touch()
    time.sleep(60)

with failure_logged("simulate"):
    atomic_write(folder / "out" / "sim.parquet", slow_write)
"""


def test_sigterm_outside_a_dask_cluster_leaves_no_temporary_file_and_is_one_line_with_status_143(tmp_path):
    """Only backends.close_on_signals (while a Dask cluster is open) caught SIGTERM: elsewhere Python's default
    ended the process on the spot, the temporary file of a write under way stayed beside the output, and the log
    said nothing. Inside failure_logged the write cleans up, the log names the signal, and the exit status is the
    shell's for SIGTERM."""
    assert signalled_mid_write(TERMINATED_JOB, tmp_path, signal.SIGTERM) == 143
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no .sim.parquet.<hex>.tmp
    lines = (tmp_path / "job.log").read_text().splitlines()
    expected = (
        " ERROR simcal: simulate stopped by SIGTERM (a walltime, scancel or pod deletion) while no Dask cluster "
        "was open: what was written is whole, and a rerun resumes from the simulations it finished, if any."
    )
    assert len(lines) == 1 and lines[0].endswith(expected), lines


# The same job as a terminal's foreground process, where Ctrl-C reaches it: a process started in the background
# (the test run's own, in CI) would inherit SIGINT ignored, and Python then leaves it so.
INTERRUPTED_JOB = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" + TERMINATED_JOB


def test_ctrl_c_outside_a_dask_cluster_leaves_no_temporary_file_and_is_one_line_with_status_130(tmp_path):
    """Ctrl-C's SIGINT is Python's KeyboardInterrupt: the write cleaned up, but the log said "simulate failed" with
    a traceback, as for a bug, and Python ended the process by SIGINT. Now it is one line as for SIGTERM, and the
    exit status is the shell's for SIGINT."""
    assert signalled_mid_write(INTERRUPTED_JOB, tmp_path, signal.SIGINT) == 128 + signal.SIGINT
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no .sim.parquet.<hex>.tmp
    lines = (tmp_path / "job.log").read_text().splitlines()
    expected = (
        " ERROR simcal: simulate stopped by SIGINT (Ctrl-C) while no Dask cluster was open: what was written is "
        "whole, and a rerun resumes from the simulations it finished, if any."
    )
    assert len(lines) == 1 and lines[0].endswith(expected), lines


def test_a_ctrl_c_while_a_dask_cluster_is_open_says_it_was_closed_with_the_notes_and_status_130(
    tmp_path, capsys, restore_logging
):
    """A calibration adds where its trials so far are kept to a Ctrl-C as to a SIGTERM (calibrate.py); the
    cluster's close_on_signals marks that a cluster was open, which failure_logged's own does not undo."""
    log = tmp_path / "job.log"
    configure(log)
    note = "The trials table of the 2 round(s) that finished is in t.failed.parquet."
    # KeyboardInterrupt too: one that got through would end the test run, not fail this test
    with pytest.raises((Interrupted, KeyboardInterrupt)) as ended, failure_logged("calibrate"):
        with close_on_signals():
            interrupt = KeyboardInterrupt()
            interrupt.add_note(note)
            raise interrupt
    assert type(ended.value) is Interrupted and ended.value.code == 130 and ended.value.__cause__ is interrupt
    lines = log.read_text().splitlines()
    expected = (
        " ERROR simcal: calibrate stopped by SIGINT (Ctrl-C): its Dask cluster was closed (worker jobs cancelled), "
        f"and a rerun resumes from the simulations it finished. {note}"
    )
    assert len(lines) == 1 and lines[0].endswith(expected), lines
    assert capsys.readouterr().err == ""


def test_a_dask_clusters_signal_handler_answers_inside_failure_logged_and_each_is_given_back(
    tmp_path, restore_logging
):
    """failure_logged catches termination signals for the whole run; close_on_signals, around an open cluster,
    puts its own handler on top and gives failure_logged's back after, which gives the original back: a SIGTERM
    while the cluster is open says the cluster was closed."""
    log = tmp_path / "job.log"
    configure(log)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as ended, failure_logged("simulate"):
        outer = signal.getsignal(signal.SIGTERM)
        assert outer is not before
        with close_on_signals():
            assert signal.getsignal(signal.SIGTERM) is not outer
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # not reached: the handler raises at once
    assert ended.value.code == 143 and signal.getsignal(signal.SIGTERM) is before
    lines = log.read_text().splitlines()
    assert (
        len(lines) == 1
        and "stopped by SIGTERM (a walltime, scancel or pod deletion): its Dask cluster was " in (lines[0])
    ), lines
    with pytest.raises(Terminated) as ended, failure_logged("simulate"):
        with close_on_signals():
            pass  # the cluster is closed: failure_logged's handler answers again
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert ended.value.code == 143 and signal.getsignal(signal.SIGTERM) is before
    assert (
        "simulate stopped by SIGTERM (a walltime, scancel or pod deletion) while no Dask cluster was open"
        in (log.read_text().splitlines()[1])
    )


def test_a_wrapper_without_a_log_logs_to_stderr_and_warns_of_a_misspelt_param(capsys, restore_logging):
    # a rule without `log:` (snakemake.log is empty) and `params: replicate=4` for `replicates`
    takes = {"input": (0,), "params": ("model", "replicates", "settings")}
    rule = {"input": ["design.csv"], "params": {"model": "m:f", "replicate": 4}}
    configure_wrapper("simulate", [], rule, takes, {"params": ("replicates", "settings")})
    logging.getLogger("simcal.runner").info("12/24 done")
    err = capsys.readouterr().err
    assert "INFO simcal.runner: 12/24 done" in err
    (warning,) = [line for line in err.splitlines() if " WARNING simcal: " in line]
    assert "params.replicate is not a param of the simulate wrapper" in warning
    assert "did you mean 'replicates'?" in warning and "takes params: model, replicates, settings" in warning


@pytest.mark.parametrize(
    ("takes", "refusal"),
    [((0,), "no input (it takes input: one item, with or without a name)"),
     (("observed", 0), "no input 'observed' (it takes input: observed (or else its first item, named or not))")],
)  # fmt: skip
def test_a_rule_without_a_needed_param_or_any_input_is_refused_before_anything_runs(
    takes, refusal, tmp_path, restore_logging
):
    # simulate without `model` died on "AttributeError: 'Params' object has no attribute 'model'", and without
    # its parameter table on a bare IndexError; a wrapper that reads its first item takes it under any name
    rule = {"input": [], "output": ["sims.parquet"], "params": {"settings": {}}}
    optional = {"params": ("settings",)}
    wrapper_takes = {"input": takes, "output": (0,), "params": ("model", "settings")}
    with pytest.raises(RuleRefused) as refused:
        configure_wrapper("simulate", [str(tmp_path / "job.log")], rule, wrapper_takes, optional)
    message = (
        f"simulate wrapper: the rule gives {refusal}, and no param 'model' (it takes params: model, settings; "
        "'settings' may be left out)"
    )
    assert str(refused.value) == message and refused.value.code == 2
    assert f" ERROR simcal: {message}\n" in (tmp_path / "job.log").read_text()
    rule |= {"input": {"design": "design.csv"}, "params": {"model": "m:f"}}
    configure_wrapper(
        "simulate", [str(tmp_path / "job.log")], rule, wrapper_takes, optional
    )  # any name will do

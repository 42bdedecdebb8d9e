"""kdgat.logs: what a wrapper sets up — records to snakemake.log, a failure logged with its traceback, re-raised; a
user's mistake (wrapper_rules.InputError) one logged line and exit status 1, without a traceback."""

from __future__ import annotations

import errno
import logging
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from testkit import REPO, signalled_mid_write, venv_bin

import simcal.logs as simcal_logs
from kdgat.logs import Terminated, configure, configure_wrapper, failure_logged
from wrapper_rules import (
    InputError,
    InputRefused,
    Interrupted,
    MachineRefused,
    RuleRefused,
    check_rule,
    missing_items,
    unknown_items,
)


def test_records_and_a_failure_go_to_the_log_file(tmp_path, restore_logging):
    log = tmp_path / "logs" / "job.log"
    configure(log)
    logging.getLogger("kdgat.training").info("epoch 1/3")
    with pytest.raises(ValueError, match="bad graphs"), failure_logged("GAT training"):
        raise ValueError("bad graphs")
    text = log.read_text()
    assert "INFO kdgat.training: epoch 1/3" in text
    assert "ERROR kdgat: GAT training failed" in text and "ValueError: bad graphs" in text


def test_a_user_mistake_is_one_line_in_the_log_and_on_stderr_and_ends_with_status_1(
    tmp_path, capsys, restore_logging
):
    from kdgat.can.writer import CanWriteError

    log = tmp_path / "job.log"
    configure(log)
    message = "resources/x.csv.gz: a synthetic CAN log is written as plain text: name it resources/x.csv"
    with pytest.raises(InputRefused) as ended, failure_logged("generate_can"):
        raise CanWriteError(message)
    assert ended.value.code == 1 and type(ended.value.error) is CanWriteError
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f" ERROR kdgat: generate_can failed: {message}"), lines
    assert capsys.readouterr().err == f"generate_can failed: {message}\n"


class Mistake(ValueError, InputError):
    """A library's error class for bad input."""


def test_a_refusal_raised_inside_the_block_is_not_logged_a_second_time_as_a_failure(
    tmp_path, restore_logging
):
    """A nested failure_logged (or check_rule) logged its refusal and raised InputRefused or RuleRefused, both
    SystemExit: the outer frame logged it again as "<what> failed" with a traceback, as if it were a bug."""
    log = tmp_path / "job.log"
    configure(log)
    with pytest.raises(InputRefused) as ended, failure_logged("outer step"):
        with failure_logged("inner step"):
            raise Mistake("params.x: expected a number, got 'a'")
    assert ended.value.code == 1
    with pytest.raises(RuleRefused) as refused, failure_logged("outer step"):
        check_rule("inner step", {"params": []}, {"params": ("x",)}, {}, logging.getLogger("kdgat"))
    assert refused.value.code == 2
    lines = log.read_text().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(" ERROR kdgat: inner step failed: params.x: expected a number, got 'a'")
    refusal = missing_items("inner step", {"params": []}, {"params": ("x",)}, {})
    assert lines[1].endswith(f" ERROR kdgat: {refusal}"), lines


@pytest.mark.parametrize("code", [0, None])
def test_a_successful_exit_inside_the_block_passes_through_unlogged(tmp_path, restore_logging, code):
    log = tmp_path / "job.log"
    configure(log)
    with pytest.raises(SystemExit) as ended, failure_logged("a step"):
        sys.exit(code)
    assert ended.value.code == code
    assert log.read_text() == ""


def test_an_exit_with_a_failure_status_inside_the_block_is_logged_with_its_traceback(
    tmp_path, restore_logging
):
    log = tmp_path / "job.log"
    configure(log)
    with pytest.raises(SystemExit) as ended, failure_logged("a step"):
        sys.exit(3)
    assert ended.value.code == 3
    text = log.read_text()
    assert " ERROR kdgat: a step failed\nTraceback (most recent call last):\n" in text
    assert text.endswith("SystemExit: 3\n")


def test_a_user_mistake_without_a_log_is_said_once_on_stderr(capsys, restore_logging):
    # a rule without `log:` logs to stderr already: the line is not printed a second time
    from kdgat.rule_items import RuleItemError

    configure(None)
    with pytest.raises(InputRefused), failure_logged("generate_can"):
        raise RuleItemError("params.file_index: expected an integer, got str 'one'")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        " ERROR kdgat: generate_can failed: params.file_index: expected an integer, got str 'one'"
    )


# A wrapper's body, in a process of its own: what the terminal shows and the exit status are Python's at exit.
FAILING_WRAPPER = """
import sys
from kdgat.logs import configure, failure_logged
from kdgat.rule_items import integer

configure(sys.argv[1])
with failure_logged("generate_can"):
    if sys.argv[2] == "mistake":
        integer("one", "params.file_index")
    raise KeyError("options")  # a bug
"""


@pytest.mark.parametrize("case", ["mistake", "bug"])
def test_a_wrapper_ends_on_a_user_mistake_without_a_traceback_and_on_a_bug_with_one(case, tmp_path):
    log = tmp_path / "job.log"
    job = subprocess.run(
        [sys.executable, "-c", FAILING_WRAPPER, str(log), case],
        env={"PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = log.read_text()
    assert job.returncode == 1 and job.stdout == ""
    if case == "mistake":
        line = "generate_can failed: params.file_index: expected an integer, got str 'one'"
        assert job.stderr == f"{line}\n"
        assert text.endswith(f" ERROR kdgat: {line}\n") and len(text.splitlines()) == 1, text
    else:
        assert job.stderr.startswith("Traceback (most recent call last):\n")
        assert job.stderr.endswith("KeyError: 'options'\n")
        assert " ERROR kdgat: generate_can failed\nTraceback (most recent call last):\n" in text
        assert text.endswith("KeyError: 'options'\n")


def test_the_libraries_errors_for_bad_input_are_input_errors_that_keep_their_own_base():
    # failure_logged tells a mistake from a bug by class; code that catches ValueError etc. still catches them
    from kdgat.can.messages import CanFormatError
    from kdgat.can.writer import CanWriteError
    from kdgat.cli.config import UsageError
    from kdgat.evaluation.metrics import EvaluationSettingsError
    from kdgat.files import FileContentError
    from kdgat.layout import LayoutError, PreprocessError
    from kdgat.rule_items import RuleItemError
    from kdgat.runtime import GPUUnusableError
    from kdgat.tracking.settings import TrackingError
    from kdgat.training.settings import SettingsError
    from output_locks import LockOfAnotherUser, OutputInUse
    from resource_history.benchmarks import BenchmarkFileError
    from resource_history.settings import SettingsError as LearnedResourcesError
    from simcal.contract import ContractError

    bases = {
        CanFormatError: ValueError, CanWriteError: ValueError, UsageError: ValueError, LayoutError: ValueError,
        RuleItemError: ValueError, TrackingError: ValueError, SettingsError: ValueError, ContractError: ValueError,
        BenchmarkFileError: ValueError, LearnedResourcesError: ValueError, OutputInUse: BlockingIOError,
        LockOfAnotherUser: PermissionError, PreprocessError: ValueError, FileContentError: ValueError,
        EvaluationSettingsError: ValueError, GPUUnusableError: RuntimeError,
    }  # fmt: skip
    assert [error for error, base in bases.items() if not issubclass(error, base)] == []
    assert [error for error in bases if not issubclass(error, InputError)] == []


def test_append_or_start_afresh(tmp_path, restore_logging):
    log = tmp_path / "job.log"
    log.write_text("attempt 1\n")
    configure(log)
    logging.getLogger("kdgat").info("attempt 2")
    assert log.read_text().startswith("attempt 1\n")
    configure(log, append=False)
    logging.getLogger("kdgat").info("attempt 3")
    assert "attempt 1" not in log.read_text() and "attempt 3" in log.read_text()


# A wrapper's job: an atomic write under way when SIGTERM arrives (SLURM's walltime, scancel, a pod's deletion).
TERMINATED_JOB = """
import sys, time
from pathlib import Path
from kdgat.files import atomic_write
from kdgat.logs import configure, configure_wrapper, failure_logged

folder = Path(sys.argv[1])
configure(folder / "job.log")

def slow_write(handle):
    handle.write(b"half a checkpoint")
    handle.flush()
    (folder / "writing").touch()
    time.sleep(60)

with failure_logged("GAT training", checkpoint=folder / "out" / "last.pt"):
    atomic_write(folder / "out" / "last.pt", slow_write)
"""


def test_sigterm_during_a_write_leaves_no_temporary_file_and_says_why_the_job_ended(tmp_path):
    """Python's default for SIGTERM ends the process on the spot: the temporary file of a write under way stayed
    beside the output for good, and the log said nothing. Inside failure_logged the write cleans up, the log names
    the signal, and the exit status is the shell's for SIGTERM."""
    assert signalled_mid_write(TERMINATED_JOB, tmp_path, signal.SIGTERM) == 143
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no .last.pt.<hex>.tmp, no last.pt
    text = (tmp_path / "job.log").read_text()
    assert "GAT training stopped by SIGTERM" in text and "resumes from the last checkpoint" in text
    assert "Traceback" not in text


def test_sighup_during_a_write_leaves_no_temporary_file_and_says_why_the_job_ended(tmp_path):
    """A closed terminal or ssh session sends SIGHUP to the Snakemake run in it and to its jobs. Only SIGTERM was
    caught: Python's default for SIGHUP ended the process on the spot, the temporary file of a write under way
    stayed beside the output and the log gave no reason. Now it is handled as SIGTERM is (as simcal's wrappers
    do), with the shell's status for SIGHUP."""
    assert signalled_mid_write(TERMINATED_JOB, tmp_path, signal.SIGHUP) == 128 + signal.SIGHUP
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no .last.pt.<hex>.tmp, no last.pt
    text = (tmp_path / "job.log").read_text()
    assert "GAT training stopped by SIGHUP (its terminal or ssh session closed)" in text
    assert "Traceback" not in text


# The same job as a terminal's foreground process, where Ctrl-C reaches it: a process started in the background
# (the test run's own, in CI) would inherit SIGINT ignored, and Python then leaves it so.
INTERRUPTED_JOB = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" + TERMINATED_JOB


def test_ctrl_c_during_a_write_leaves_no_temporary_file_and_is_one_line_with_status_130(tmp_path):
    """Ctrl-C's SIGINT is Python's KeyboardInterrupt: the write cleaned up, but the log said "GAT training failed"
    with a traceback, as for a bug, and Python ended the process by SIGINT. Now it is one line as for SIGTERM, and
    the exit status is the shell's for SIGINT."""
    assert signalled_mid_write(INTERRUPTED_JOB, tmp_path, signal.SIGINT) == 128 + signal.SIGINT
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no .last.pt.<hex>.tmp, no last.pt
    lines = (tmp_path / "job.log").read_text().splitlines()
    expected = (
        " ERROR kdgat: GAT training stopped by SIGINT (Ctrl-C): what was written is whole, and a rerun resumes "
        f"from the last checkpoint, {tmp_path / 'out' / 'last.pt'} (from the start if none was written)"
    )
    assert len(lines) == 1 and lines[0].endswith(expected), lines


def test_a_ctrl_c_in_a_nested_block_is_logged_once_and_ends_with_status_130(
    tmp_path, capsys, restore_logging
):
    log = tmp_path / "job.log"
    configure(log)
    # KeyboardInterrupt too: one that got through would end the test run, not fail this test
    with pytest.raises((Interrupted, KeyboardInterrupt)) as ended, failure_logged("outer step"):
        with failure_logged("build_graphs"):
            raise KeyboardInterrupt
    assert type(ended.value) is Interrupted and ended.value.code == 130
    assert type(ended.value.__cause__) is KeyboardInterrupt
    lines = log.read_text().splitlines()
    expected = " ERROR kdgat: build_graphs stopped by SIGINT (Ctrl-C): what was written is whole, and a rerun starts it again"
    assert len(lines) == 1 and lines[0].endswith(expected), lines
    assert capsys.readouterr().err == ""


def test_a_sigterm_in_the_block_is_one_line_naming_it_and_propagates_with_status_143(
    tmp_path, capsys, restore_logging
):
    """termination_as_exit turns SIGTERM into Terminated: the log says the job was stopped by it and that what was
    written is whole, without a traceback (a signal is no bug); the process ends with the shell's status for it."""
    log = tmp_path / "job.log"
    configure(log)
    with (
        pytest.raises(Terminated) as ended,
        failure_logged("GAT training", logger="kdgat.training", checkpoint="ck/last.pt"),
    ):
        raise Terminated
    assert ended.value.code == 143
    lines = log.read_text().splitlines()
    expected = (
        " ERROR kdgat.training: GAT training stopped by SIGTERM (a walltime, scancel or pod deletion): what was "
        "written is whole, and a rerun resumes from the last checkpoint, ck/last.pt (from the start if none was "
        "written)"
    )
    assert len(lines) == 1 and lines[0].endswith(expected), lines
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_the_signal_handlers_are_given_back_after_the_block(signum, restore_logging):
    before = signal.getsignal(signum)
    with failure_logged("a step"):
        assert signal.getsignal(signum) is not before
    assert signal.getsignal(signum) is before


def test_outside_the_main_thread_the_sigterm_handler_is_left_alone_and_a_failure_still_logged(
    tmp_path, restore_logging
):
    # Only the main thread may set a signal handler (signal.signal raises ValueError elsewhere).
    log = tmp_path / "job.log"
    configure(log)
    before = signal.getsignal(signal.SIGTERM)
    seen = {}

    def work():
        try:
            with failure_logged("scoring in a worker"):
                seen["handler"] = signal.getsignal(signal.SIGTERM)
                raise RuntimeError("bad scores")
        except BaseException as error:  # what the block raised, as it left failure_logged
            seen["error"] = error

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert seen["handler"] is before
    assert type(seen["error"]) is RuntimeError and str(seen["error"]) == "bad scores"
    assert "ERROR kdgat: scoring in a worker failed" in log.read_text()
    assert signal.getsignal(signal.SIGTERM) is before


class Section(list):
    """Snakemake's input/output/params: a list whose named items are also keys, a named file list being several."""

    def __init__(self, positional=(), **named):
        items = [*positional]
        for value in named.values():
            items += value if isinstance(value, list) and not isinstance(value, str) else [value]
        super().__init__(items)
        self.named = named

    def keys(self):
        return self.named.keys()

    def get(self, name, default=None):
        return self.named.get(name, default)


def test_a_wrapper_without_a_log_logs_to_stderr_and_warns_of_each_param_it_does_not_take(
    capsys, restore_logging
):
    # `params: 1, setings={}` besides the params generate_can takes
    params = Section(["x"], options={}, setings={}, file_index=1)
    takes = {"output": (0,), "params": ("options", "file_index", "settings")}
    optional = {"params": ("file_index", "settings")}
    configure_wrapper("generate_can", [], {"output": Section(["a.csv"]), "params": params}, takes, optional)
    logging.getLogger("kdgat.synthetic").info("wrote one file")
    err = capsys.readouterr().err
    assert "INFO kdgat.synthetic: wrote one file" in err
    warnings = [line for line in err.splitlines() if " WARNING kdgat: " in line]
    assert len(warnings) == 2, err
    assert "params.setings is not a param of the generate_can wrapper, which ignores it" in warnings[0]
    assert (
        "did you mean 'settings'?" in warnings[0]
        and "takes params: options, file_index, settings" in warnings[0]
    )
    assert "params has 1 item(s) without a name" in warnings[1]


def test_a_misspelt_optional_input_and_unnamed_inputs_are_warned_of(capsys, restore_logging):
    # train_gat with `vage=` for its optional VGAE (the curriculum then runs without it), and build_graphs given
    # more CAN logs without names besides its named ones (it ignores them)
    takes = {"input": ("train", "val", "metadata", "vgae", "teacher"), "output": ("model",)}
    rule = {
        "input": Section(train="t.pt", val="v.pt", metadata="m.json", vage="vgae.pt"),
        "output": Section(model="model.pt"),
    }
    configure_wrapper("train_gat", [], rule, takes, {"input": ("vgae", "teacher")})
    rule = {"input": Section(["a.csv", "b.csv"], train="t.csv", test=["c.csv", "d.csv"])}
    configure_wrapper(
        "build_graphs",
        [],
        rule,
        {"input": ("train", "test", "held_out_fusion")},
        {"input": ("held_out_fusion",)},
    )
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if " WARNING kdgat: " in line]
    assert len(warnings) == 2 and " ERROR " not in err, err
    assert (
        "input.vage is not an input of the train_gat wrapper, which ignores it (did you mean 'vgae'?)"
        in (warnings[0])
    )
    assert (
        "input has 2 item(s) without a name, which the build_graphs wrapper ignores: it takes input by name "
        in (warnings[1])
    )


def test_a_wrapper_with_a_log_logs_there_and_stays_quiet_about_what_it_takes(
    tmp_path, capsys, restore_logging
):
    takes = {"input": ("trials", 0), "output": (0,), "params": ("options",)}
    rule = {"input": Section(["t.parquet"]), "output": Section(["o.csv"]), "params": Section(options={})}
    configure_wrapper("generate_can", [str(tmp_path / "job.log")], rule, takes, {})
    logging.getLogger("kdgat").info("started")
    assert (tmp_path / "job.log").read_text().endswith("INFO kdgat: started\n")
    assert capsys.readouterr().err == ""


def test_a_rule_with_several_logs_has_the_wrapper_log_to_the_first(tmp_path, capsys, restore_logging):
    """wrapper_rules.set_up: every record goes to the rule's first log; a rule may name more (say, a tool's own
    log after the wrapper's), which the wrapper leaves to whatever writes them."""
    takes = {"input": ("trials", 0), "output": (0,), "params": ("options",)}
    rule = {"input": Section(["t.parquet"]), "output": Section(["o.csv"]), "params": Section(options={})}
    first, second = tmp_path / "job.log", tmp_path / "tool.log"
    configure_wrapper("generate_can", [str(first), str(second)], rule, takes, {})
    logging.getLogger("kdgat").info("started")
    assert first.read_text().endswith("INFO kdgat: started\n")
    assert not second.exists() and capsys.readouterr().err == ""


# train_gat's names, as its wrapper.py writes them
GAT_TAKES = {
    "input": ("train", "val", "metadata", "vgae", "teacher"),
    "output": ("model", "metrics", "history"),
    "params": ("settings", "checkpoint", "tracking", "benchmark"),
}
GAT_OPTIONAL = {"input": ("vgae", "teacher"), "output": (), "params": ("checkpoint", "tracking", "benchmark")}
GAT_OUTPUTS = Section(model="model.pt", metrics="metrics.json", history="history.csv")


def test_a_rule_without_a_name_the_wrapper_needs_is_refused_naming_every_missing_one(
    tmp_path, capsys, restore_logging
):
    # train_gat without `val` died on "AttributeError: 'InputFiles' object has no attribute 'val'" after set-up
    rule = {
        "input": Section(train="t.pt", metadata="m.json"),
        "output": GAT_OUTPUTS,
        "params": Section(settings={}),
    }
    with pytest.raises(RuleRefused) as refused:
        configure_wrapper("train_gat", [str(tmp_path / "job.log")], rule, GAT_TAKES, GAT_OPTIONAL)
    assert refused.value.code == 2
    message = (
        "train_gat wrapper: the rule gives no input 'val' (it takes input: train, val, metadata, vgae, teacher; "
        "'vgae' and 'teacher' may be left out)"
    )
    assert str(refused.value) == message
    assert (tmp_path / "job.log").read_text().endswith(f" ERROR kdgat: {message}\n")
    assert capsys.readouterr().err == ""


def test_positional_inputs_and_a_misspelt_param_are_refused_in_one_message(capsys, restore_logging):
    # the files given without names (a warning said they were ignored) and `setings=`: every section that lacks
    # a name is in the one message, with the given name that looks like a missing one misspelt
    rule = {
        "input": Section(["t.pt", "v.pt"], metadata="m.json"),
        "output": GAT_OUTPUTS,
        "params": Section(setings={}),
    }
    with pytest.raises(RuleRefused) as refused:
        configure_wrapper("train_gat", [], rule, GAT_TAKES, GAT_OPTIONAL)
    assert str(refused.value) == (
        "train_gat wrapper: the rule gives no input 'train' or 'val' (it takes input: train, val, metadata, vgae, "
        "teacher; 'vgae' and 'teacher' may be left out; 2 input item(s) have no name: name them, e.g. "
        "`input: train=...`), and no param 'settings' (it takes params: settings, checkpoint, tracking, "
        "benchmark; 'checkpoint', 'tracking' and 'benchmark' may be left out; is param 'setings' a misspelt "
        "'settings'?)"
    )
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" kdgat: ")[0].split()[-1] for line in lines] == ["WARNING", "WARNING", "ERROR"], lines


def test_a_misspelt_required_input_is_named_with_the_name_it_needs():
    # train_dqn's VGAE is required (train_gat's is optional: only warned of)
    takes = {"input": ("fit", "stop", "metadata", "vgae", "gat")}
    rule = {"input": Section(fit="f.pt", metadata="m.json", vage="vgae.pt", gat="gat.pt")}
    assert missing_items("train_dqn", rule, takes, {"input": ("stop",)}) == (
        "train_dqn wrapper: the rule gives no input 'vgae' (it takes input: fit, stop, metadata, vgae, gat; 'stop' "
        "may be left out; is input 'vage' a misspelt 'vgae'?)"
    )
    rule["input"] = Section(fit="f.pt", metadata="m.json", vgae="vgae.pt", gat="gat.pt")
    assert missing_items("train_dqn", rule, takes, {"input": ("stop",)}) is None


def test_a_section_read_by_position_is_refused_naming_only_the_names_it_cannot_do_without():
    """A section read by name with its first item standing in (``takes`` holds 0): an empty one is refused naming
    the names it needs, not those ``optional`` lets it leave out, and with no name when every one may be left
    out."""
    takes = {"input": ("trials", "extra", 0)}
    empty = {"input": Section()}
    assert missing_items("generate_can", empty, takes, {"input": ("extra",)}) == (
        "generate_can wrapper: the rule gives no input 'trials' (it takes input: trials, extra (or else its first "
        "item, named or not))"
    )
    assert missing_items("generate_can", empty, takes, {"input": ("trials", "extra")}) == (
        "generate_can wrapper: the rule gives no input (it takes input: trials, extra (or else its first item, "
        "named or not))"
    )
    assert (
        missing_items("generate_can", {"input": Section(["t.parquet"])}, takes, {"input": ("extra",)}) is None
    )


def test_a_name_the_wrapper_takes_is_never_offered_as_a_misspelling_of_one_it_lacks():
    # `vgae_val` is close to the missing `vgae`, but it is a name of its own, given rightly
    rule = {"input": Section(vgae_val="v.pt")}
    assert missing_items("w", rule, {"input": ("vgae", "vgae_val")}, {}) == (
        "w wrapper: the rule gives no input 'vgae' (it takes input: vgae, vgae_val)"
    )


def test_only_a_param_the_wrapper_does_not_take_is_warned_of_with_the_note_that_it_may_stay_for_a_rerun():
    """A rule may set a param only so that changing it reruns the job; an input or output the wrapper does not take
    has no such use, and its warning does not suggest one."""
    section = Section(train="t.pt", vage="v.pt")
    assert unknown_items("train_gat", "input", section, ("train", "vgae")) == [
        "input.vage is not an input of the train_gat wrapper, which ignores it (did you mean 'vgae'?); train_gat "
        "takes input: train, vgae."
    ]
    assert unknown_items("train_gat", "params", Section(setings={}), ("settings",)) == [
        "params.setings is not a param of the train_gat wrapper, which ignores it (did you mean 'settings'?); "
        "train_gat takes params: settings. A param set only to make a change rerun the job may stay."
    ]


# A wrapper's body writing an output past its process's file size limit (RLIMIT_FSIZE, the kernel's EFBIG: what a
# full disk or a quota gives as ENOSPC/EDQUOT, without filling one).
WRITING_PAST_THE_LIMIT = """
import resource, signal, sys
from kdgat.files import write_text
from kdgat.logs import configure, failure_logged

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, not a signal
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
configure(sys.argv[1])
with failure_logged("generate_can"):
    write_text("x" * 4 * 65536, sys.argv[2])
"""


@pytest.mark.parametrize("log_full", [False, True], ids=["log-writable", "log-past-the-limit-too"])
def test_a_file_past_the_size_limit_is_one_line_naming_the_output_and_the_limit(tmp_path, log_full):
    """A full disk, a quota or a file past the size limit in a wrapper was logged as ``generate_can failed`` with
    a traceback, as if it were a bug: now one line, as a user's mistake is, naming the output, the condition and
    what to do, in the log and on stderr, and status 1. When the log cannot take the line either (it is on the same
    full disk), stderr still says it, without Python's ``--- Logging error ---`` traceback."""
    log, output = tmp_path / "job.log", tmp_path / "results" / "can.csv"
    if log_full:
        log.write_text("x" * 65536)
    job = subprocess.run(
        [sys.executable, "-c", WRITING_PAST_THE_LIMIT, str(log), str(output)],
        env={"PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = (
        f"generate_can failed: [Errno 27] File too large: '{output}': the job may not write a file past 65536 "
        "bytes (its file size limit, `ulimit -f`): raise it (`ulimit -f unlimited` in the shell or job script "
        "that starts snakemake), then rerun the job"
    )
    assert (job.returncode, job.stdout, job.stderr) == (1, "", f"{line}\n")
    text = log.read_text()
    if log_full:
        assert text == "x" * 65536
    else:
        assert text.endswith(f" ERROR kdgat: {line}\n") and len(text.splitlines()) == 1, text
    assert list(output.parent.iterdir()) == []


@pytest.mark.parametrize(
    "number, advice",
    [
        (errno.ENOSPC, "free space on the file system holding it (`df -h` shows it) or write the outputs to another one"),
        (errno.EDQUOT, "free space within your disk quota on the file system holding it (`quota -s` shows it) or ask "
         "for a larger quota"),
        (errno.ENFILE, "the system's table of open files is full: end programs that hold many files open, or have an "
         "administrator raise fs.file-max"),
        (errno.EROFS, "its file system is mounted read-only: write the outputs to a writable one"),
    ],
    ids=["ENOSPC", "EDQUOT", "ENFILE", "EROFS"],
)  # fmt: skip
def test_a_full_disk_or_quota_is_one_line_saying_what_to_do(
    tmp_path, capsys, restore_logging, number, advice
):
    log = tmp_path / "job.log"
    simcal_logs.configure(log)
    output = tmp_path / "results" / "sweep.parquet"
    with pytest.raises(MachineRefused) as ended, simcal_logs.failure_logged("simulate"):
        raise OSError(number, os.strerror(number), str(output))
    assert ended.value.code == 1 and ended.value.error.errno == number
    line = (
        f"simulate failed: [Errno {number}] {os.strerror(number)}: '{output}': {advice}, then rerun the job"
    )
    assert capsys.readouterr().err == f"{line}\n"
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f" ERROR simcal: {line}"), lines


def test_too_many_open_files_is_one_line_naming_the_limit_and_ulimit_n(tmp_path, capsys, restore_logging):
    """EMFILE from a real open under a low RLIMIT_NOFILE (in this process, given back after): the line names the
    file, the soft and hard limits and the ``ulimit -n`` to raise it."""
    configure(tmp_path / "job.log")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opened = []
    low = len(os.listdir("/proc/self/fd")) + 4
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        with pytest.raises(MachineRefused), failure_logged("build_graphs"):
            for index in range(64):
                opened.append(open(tmp_path / f"part-{index}", "w"))  # noqa: SIM115
    finally:
        for file in opened:
            file.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    failed = tmp_path / f"part-{len(opened)}"
    raise_to = "unlimited" if hard == resource.RLIM_INFINITY else hard
    line = (
        f"build_graphs failed: [Errno 24] Too many open files: '{failed}': the job has as many files open as its "
        f"limit allows ({low}, `ulimit -n`; the hard limit is {raise_to}): raise it with `ulimit -n {raise_to}` in "
        "the shell or job script that starts snakemake, or run fewer workers or threads, then rerun the job"
    )
    assert 0 < len(opened) < 64
    assert capsys.readouterr().err == f"{line}\n"


READ_ONLY_FOLDER_WORKFLOW = """
rule generate_can:
    output:
        "resources/normal.csv",
    log:
        "logs/generate_can.log",
    params:
        options={"seed": 1, "format": "hcrl_csv", "num_ids": 25,
                 "files": [{"split": "train_01_attack_free", "name": "normal", "duration_s": 1.0}]},
        file_index=0,
    wrapper:
        "file:%s"
"""


def test_a_read_only_output_folder_is_one_line_naming_the_output_its_folder_and_the_user(tmp_path):
    """The generate_can wrapper run by Snakemake, as a user who may not write the output's folder (mode 0555, as a
    chmod during the run leaves it; Snakemake only makes the folder, which is there): the job ended with a
    traceback naming ``resources/.normal.csv.<hex>.tmp``, a hidden temporary the user never asked for. Now one line,
    on the terminal and in the rule's log, naming the output, the folder's owner and mode and the job's user."""
    (tmp_path / "Snakefile").write_text(READ_ONLY_FOLDER_WORKFLOW % (REPO / "wrappers" / "generate_can"))
    folder = tmp_path / "resources"
    folder.mkdir()
    # another job's output: Snakemake removes an output folder left empty by a failed job
    (folder / "attack.csv").write_text("an output of another job\n")
    argv = [venv_bin("snakemake"), "--cores", "1"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to test permissions as root"
        argv = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]
    folder.chmod(0o555)
    try:
        job = subprocess.run(
            argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )  # fmt: skip
    finally:
        folder.chmod(0o755)
    user = pwd.getpwuid(os.geteuid()).pw_name
    line = (
        "generate_can failed: [Errno 13] Permission denied: 'resources/normal.csv': the job runs as "
        f"{user}, its folder resources is {user}'s, mode 0555: let {user} read and write there (`chmod`, by the "
        "owner), or write the outputs to another folder, then rerun the job"
    )
    assert job.returncode == 1, job.stdout
    assert "Traceback" not in job.stdout and job.stdout.splitlines().count(line) == 1, job.stdout
    log = (tmp_path / "logs" / "generate_can.log").read_text()
    assert log.endswith(f" ERROR kdgat: {line}\n") and len(log.splitlines()) == 1, log
    assert [path.name for path in folder.iterdir()] == ["attack.csv"]  # no temporary or lock file left


# A wrapper's body asking for more memory than its address-space limit (RLIMIT_AS, `ulimit -v`) leaves it: a real
# MemoryError, raised by the allocation itself. The limit is set after the imports, 256 MiB above what the process
# holds then.
ALLOCATING_PAST_THE_LIMIT = """
import resource, sys
from kdgat.logs import configure, failure_logged

configure(sys.argv[1])
held = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
limit = held + 256 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
print(limit // (1024 * 1024), flush=True)
with failure_logged("build_graphs"):
    graphs = bytearray(1024 * 1024 * 1024)
"""


def test_a_memory_error_is_one_line_naming_the_memory_the_process_had_and_mem_mb(tmp_path):
    """A MemoryError in a wrapper (a real one: an allocation past the process's ``ulimit -v``) ended with a long
    traceback, as a bug does. Now one line, in the log and on stderr, status 1: the error, the memory the process
    had (its peak, its address-space limit, the machine's) and what to do (the rule's mem_mb resource, ``ulimit
    -v``)."""
    log = tmp_path / "job.log"
    job = subprocess.run(
        [sys.executable, "-c", ALLOCATING_PAST_THE_LIMIT, str(log)],
        env={"PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    limit_mib = int(job.stdout)
    assert job.returncode == 1, job.stderr
    assert "Traceback" not in job.stderr and len(job.stderr.splitlines()) == 1, job.stderr
    line = job.stderr.rstrip("\n")
    assert line.startswith(
        "build_graphs failed: MemoryError: the process could not get the memory it asked for (it held at most "
    ), line
    assert f"; its address-space limit (`ulimit -v`) is {limit_mib} MiB;" in line, line
    machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
    assert f"; the machine has {machine} MiB)" in line, line
    assert line.endswith(
        ": give the job more memory (the rule's mem_mb resource, e.g. `--set-resources <rule>:mem_mb=<MB>`, which a "
        "cluster executor reserves and enforces; raise `ulimit -v` in the shell or job script that starts "
        "snakemake) or give it less to hold at once (smaller inputs, batches or fewer workers), then rerun the job"
    ), line
    text = log.read_text()
    assert text.endswith(f" ERROR kdgat: {line}\n") and len(text.splitlines()) == 1, text


def _generate_can_out_of_memory(tmp_path, monkeypatch, resources: dict) -> str:
    """The line with which the generate_can wrapper, run as Snakemake runs it with ``resources`` and its library
    call raising MemoryError, ends (status 1, no traceback): the same in its log and on stderr."""
    import runpy
    from types import SimpleNamespace

    from snakemake.iocontainers import Namedlist

    def out_of_memory(**kwargs):
        raise MemoryError

    monkeypatch.setattr("kdgat.synthetic.generate_file", out_of_memory)
    log = tmp_path / "generate_can.log"
    log.unlink(missing_ok=True)
    snakemake = SimpleNamespace(
        input=Namedlist(),
        output=Namedlist([str(tmp_path / "normal.csv")]),
        params=Namedlist(fromdict={"options": {}}),
        log=Namedlist([str(log)]),
        threads=1,
        resources=Namedlist(fromdict=resources),
        rule="preprocess_generate_can",
    )
    with pytest.raises(MachineRefused) as ended:
        runpy.run_path(str(REPO / "wrappers/generate_can/wrapper.py"), {"snakemake": snakemake}, "__main__")
    assert ended.value.code == 1
    text = log.read_text()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text.split(" ERROR kdgat: ", 1)[1].rstrip("\n")


def test_a_wrappers_memory_error_gives_the_rules_mem_mb_and_how_to_raise_it_for_that_rule(
    tmp_path, monkeypatch, restore_logging
):
    """The MemoryError line said "give the job more memory (the rule's mem_mb resource, e.g. `--set-resources
    <rule>:mem_mb=<MB>`": not how much the job had, nor for which rule, as the wrappers passed the library no
    resources. Now the wrapper passes snakemake.resources' mem_mb and snakemake.rule, and the line names both."""
    line = _generate_can_out_of_memory(tmp_path, monkeypatch, {"_cores": 1, "mem_mb": 4000, "runtime": 10})
    assert line.startswith(
        "generate_can failed: MemoryError: the process ran out of memory with mem_mb=4000 (the rule's resource; "
        "raise it with `--set-resources preprocess_generate_can:mem_mb=<MB>`, which a cluster executor reserves "
        "and enforces): it could not get the memory it asked for (it held at most "
    ), line
    assert "): raise mem_mb" in line and line.endswith(
        " or give it less to hold at once (smaller inputs, batches or fewer workers), then rerun the job"
    ), line
    # A job without mem_mb (no default resources) keeps the general advice, without a value it does not have.
    line = _generate_can_out_of_memory(tmp_path, monkeypatch, {"_cores": 1})
    assert "mem_mb=" not in line.replace("mem_mb=<MB>", ""), line
    assert (
        "give the job more memory (the rule's mem_mb resource, e.g. `--set-resources <rule>:mem_mb=<MB>`"
        in line
    )


# A wrapper's body writing an output where another user's file of that name is, in a folder with the sticky bit
# (a shared 1777 project or scratch folder): the kernel refuses the rename over it with EPERM.
REPLACING_ANOTHER_USERS_FILE = """
import os, sys
from kdgat.files import write_text
from kdgat.logs import configure, failure_logged

configure(sys.argv[1])
with failure_logged("generate_can"):
    if os.geteuid() == 0 or sys.argv[3] == "write":
        write_text("timestamp,id\\n", sys.argv[2])
    else:
        os.utime(sys.argv[2], (0, 0))  # another user's file: only its owner may set its times
"""


def test_an_output_only_its_owner_may_replace_is_one_line_naming_it_its_owner_mode_and_the_user(tmp_path):
    """EPERM on an output (another user's file of that name in a folder with the sticky bit, which only its owner
    may replace; root runs without CAP_FOWNER, as a user does) ended with a traceback ending in ``PermissionError:
    [Errno 1] Operation not permitted``. Now one line naming the file, its owner and mode, its folder's, and the
    job's user, in the log and on stderr, status 1."""
    log = tmp_path / "job.log"
    argv = [sys.executable, "-c", REPLACING_ANOTHER_USERS_FILE, str(log)]
    if os.geteuid() == 0:
        folder = tmp_path / "shared"
        folder.mkdir()
        target = folder / "normal.csv"
        target.write_text("another user's output\n")
        for path in (folder, target):
            os.chown(path, 65534, 65534)
        folder.chmod(0o1777)
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to test permissions as root"
        argv = [setpriv, "--bounding-set=-fowner", *argv, str(target), "write"]
    else:  # a file of root's: a user may not set its times
        target = Path("/etc/passwd")
        argv += [str(target), "utime"]
    job = subprocess.run(
        argv, env={"PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True, timeout=60
    )
    user = pwd.getpwuid(os.geteuid()).pw_name

    def described(path: Path) -> str:
        found = os.lstat(path)
        return f"{pwd.getpwuid(found.st_uid).pw_name}'s, mode {found.st_mode & 0o7777:04o}"

    owner = pwd.getpwuid(target.stat().st_uid).pw_name
    line = (
        f"generate_can failed: [Errno 1] Operation not permitted: '{target}': the job runs as {user}, it is "
        f"{described(target)}, its folder {target.parent} is {described(target.parent)}: only {owner} may replace "
        f"or remove it in a folder with the sticky bit (mode 1xxx), or change its mode or times: have {owner} "
        f"remove it or hand it to {user} (`chown`), or write the outputs to another folder, then rerun the job"
    )
    assert (job.returncode, job.stderr) == (1, f"{line}\n"), job.stderr
    text = log.read_text()
    assert text.endswith(f" ERROR kdgat: {line}\n") and len(text.splitlines()) == 1, text
    if os.geteuid() == 0:
        assert target.read_text() == "another user's output\n"
        assert sorted(path.name for path in target.parent.iterdir()) == ["normal.csv"]  # no temporary left


# 2026-11-01 05:30 and 06:30 UTC: 01:30 in New York both times, before and after its clocks went back an hour
DST_FALL_BACK_HOUR = (1793511000.0, 1793514600.0)


@pytest.fixture
def new_york_time():
    """The process's local time zone is New York's for the test (TZ, time.tzset), then as it was."""
    import time

    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.parametrize("library", ["kdgat", "simcal", "kdgat command"])
def test_log_lines_say_their_time_in_iso_8601_with_the_utc_offset_across_a_dst_change(
    library, tmp_path, restore_logging, new_york_time
):
    """Local time without an offset (logging's default) wrote both records of the hour New York's clocks repeat as
    '2026-11-01 01:30:00,000', and a job in UTC wrote the same moments as 05:30 and 06:30 with nothing to tell."""
    import datetime
    import io

    from kdgat.cli.progress import configure_logging

    log = tmp_path / "job.log"
    if library == "kdgat":
        configure(log)
    elif library == "simcal":
        simcal_logs.configure(log)
    else:
        configure_logging(str(log), bar=False, stream=io.StringIO())
    handler = logging.getLogger().handlers[-1]
    moments = iter(DST_FALL_BACK_HOUR)

    def at_the_next_moment(record: logging.LogRecord) -> bool:
        record.created, record.msecs = next(moments), 0.0
        return True

    handler.addFilter(at_the_next_moment)
    for _ in DST_FALL_BACK_HOUR:
        logging.getLogger(library.split()[0]).info("simulations 1/2")
    for handler in logging.getLogger().handlers:
        handler.flush()
    stamps = [line.split(" ", 1)[0] for line in log.read_text().splitlines()]
    assert stamps == ["2026-11-01T01:30:00.000-04:00", "2026-11-01T01:30:00.000-05:00"]
    assert [datetime.datetime.fromisoformat(stamp).timestamp() for stamp in stamps] == list(
        DST_FALL_BACK_HOUR
    )

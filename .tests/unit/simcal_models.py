"""Models used by the simcal tests (importable by Dask workers: spawned workers inherit sys.path).

Models that misbehave do so only for the parameter sets named in their docstrings, so one batch mixes them
with well-behaved simulations.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def noisy_line(params, seed):
    """Cheap: a dict of scalars depending on params and the seed only."""
    rng = np.random.default_rng(seed)
    return {"y": params["a"] * 2.0 + rng.normal(), "pid": os.getpid()}


_WARMED: set = set()


def slow_first_call(params, seed):
    """Cheap, but the first call of a run (``params["run"]``) in a process takes 0.3 s, as a numba model's first
    call compiles it."""
    if params["run"] not in _WARMED:
        _WARMED.add(params["run"])
        time.sleep(0.3)
    return {"y": params["a"] * 2.0}


def echo_id(params, seed):
    """The parameter 'id' as the model received it, as text (exact whatever its size)."""
    return {"seen_id": str(params["id"])}


def as_observed(params, seed, **options):
    """An observed-data generator without a declared space: one row per parameter, its value as the count."""
    return pd.DataFrame({"day": range(len(params)), "cases": list(params.values())})


def series(params, seed):
    """A small table per simulation."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"t": np.arange(3), "value": params["a"] + rng.normal(size=3)})


def fails_for_negative(params, seed):
    if params["a"] < 0:
        raise ValueError(f"a must be >= 0, got {params['a']}")
    return {"y": float(params["a"])}


def fails_for_negative_until_fixed(params, seed):
    """fails_for_negative until SIMCAL_TEST_FIXED is set in the worker's environment (the model "fixed")."""
    if params["a"] < 0 and not os.environ.get("SIMCAL_TEST_FIXED"):
        raise ValueError(f"a must be >= 0, got {params['a']}")
    return {"y": float(params["a"])}


def always_fails(params, seed):
    """Raises for every parameter set; counts its calls in the file named by SIMCAL_TEST_COUNT (if set)."""
    count_file = os.environ.get("SIMCAL_TEST_COUNT")
    if count_file:
        with open(count_file, "a") as handle:
            handle.write(f"{params['a']}\n")
    raise RuntimeError(f"always_fails: no result for a={params['a']}")


def fails_slowly(params, seed):
    """Sleeps (longer than the default probe_seconds), then raises; counts its calls like always_fails."""
    time.sleep(float(params.get("sleep_s", 0.1)))
    always_fails(params, seed)


def counted_sleep(params, seed):
    """Sleeps, and appends one line per call to the file named by SIMCAL_TEST_COUNT (to count executions)."""
    time.sleep(float(params.get("sleep_s", 0.05)))
    count_file = os.environ.get("SIMCAL_TEST_COUNT")
    if count_file:
        with open(count_file, "a") as handle:
            handle.write(f"{params['a']}\n")
    return {"y": float(params["a"])}


def sleeps_in_steps(params, seed):
    """Sleeps sleep_s in steps of 10 ms (Python code between them: an interrupt is heard), then appends a line to
    the file named by SIMCAL_TEST_COUNT."""
    end = time.monotonic() + float(params["sleep_s"])
    while time.monotonic() < end:
        time.sleep(0.01)
    count_file = os.environ.get("SIMCAL_TEST_COUNT")
    if count_file:
        with open(count_file, "a") as handle:
            handle.write(f"{params['a']}\n")
    return {"y": float(params["a"])}


def counted_then_sleeps(params, seed):
    """Appends a line to the file named by SIMCAL_TEST_COUNT as it starts (to count the simulations begun), then
    sleeps sleep_s in one native call (an interrupt sent meanwhile waits until it returns)."""
    with open(os.environ["SIMCAL_TEST_COUNT"], "a") as handle:
        handle.write(f"{params['a']}\n")
    time.sleep(float(params["sleep_s"]))
    return {"y": float(params["a"])}


def empty_for_odd(params, seed):
    """No events (an empty table) for odd a, one row per event otherwise."""
    count = 0 if int(params["a"]) % 2 else 2
    return pd.DataFrame({"event": np.arange(count), "size": np.full(count, params["a"])})


def crashes_for_three(params, seed):
    """Kills its worker process (like a segfault) when a == 3."""
    if params["a"] == 3:
        os._exit(11)
    return {"y": float(params["a"]), "pid": os.getpid()}


def crashes_late_for_three(params, seed):
    """Kills its worker process 0.3 s in when a == 3; the others take 1.5 s, so on a worker of several threads
    they are running beside it when it dies."""
    if params["a"] == 3:
        time.sleep(0.3)
        os._exit(11)
    time.sleep(1.5)
    return {"y": float(params["a"]), "pid": os.getpid()}


def exits_for_two(params, seed):
    """Calls sys.exit when a == 2: a raise (of SystemExit), not a crash."""
    if params["a"] == 2:
        sys.exit(3)
    return {"y": float(params["a"])}


def interrupts_for_two(params, seed):
    """Raises KeyboardInterrupt when a == 2 (a model's own, e.g. from a library's signal handling)."""
    if params["a"] == 2:
        raise KeyboardInterrupt("stopped by the model")
    return {"y": float(params["a"])}


def counted_crash(params, seed):
    """Kills its worker process every time, after appending a line to SIMCAL_TEST_COUNT (to count the deaths)."""
    with open(os.environ["SIMCAL_TEST_COUNT"], "a") as handle:
        handle.write(f"{params['a']}\n")
    os._exit(11)


def dies_once(params, seed):
    """Kills its worker process the first time it runs (a transient failure), then succeeds."""
    marker = Path(params["marker"])
    if not marker.exists():
        marker.write_text("died")
        os._exit(1)
    return {"y": float(params["a"])}


def spins_for_two(params, seed):
    """Loops forever in Python code when a == 2 (interruptible)."""
    while params["a"] == 2:
        pass
    return {"y": float(params["a"])}


def sleeps_for_two(params, seed):
    """Blocks in native code (a long sleep) when a == 2: only ending its process stops it."""
    if params["a"] == 2:
        time.sleep(600)
    return {"y": float(params["a"]), "pid": os.getpid()}


def hijacks_keys(params, seed):
    """Outputs named like the key columns, a parameter and a status column, as a dict."""
    return {"param_id": "hijack", "seed": -1, "a": "output a", "status": "mine", "y": 1.0}


def hijacks_keys_table(params, seed):
    """The same clashing names as hijacks_keys, as a one-row DataFrame."""
    return pd.DataFrame(hijacks_keys(params, seed), index=[0])


def names_status_columns(params, seed):
    """Outputs named like the status columns only (no key column, no parameter), as a dict or, when the parameter
    ``shape`` is "table", as a one-row DataFrame."""
    outputs = {"status": "mine", "error": "none of yours", "duration_s": -1.0, "y": 1.0}
    return pd.DataFrame(outputs, index=[0]) if params["shape"] == "table" else outputs


def clashes_with_its_own_prefixed_name(params, seed):
    """An output named like a key column next to the name its renaming would give."""
    return {"seed": 1.0, "output_seed": 2.0, "y": float(params["a"])}


def clashes_with_its_own_prefixed_name_table(params, seed):
    return pd.DataFrame(clashes_with_its_own_prefixed_name(params, seed), index=[0])


def nested_for_even(params, seed):
    """A nested dict (not a scalar) for even a, text for odd a: the same output changes shape."""
    return {"info": {"k": 1} if int(params["a"]) % 2 == 0 else "text", "y": float(params["a"])}


def array_in_dict(params, seed):
    return {"curve": np.arange(3.0), "peak": 2.0}


def type_changes(params, seed):
    """A number for even a, text for odd a: the same output column changes type between simulations."""
    return {"value": params["a"] if params["a"] % 2 == 0 else f"text {params['a']}"}


def worker_pid(params, seed):
    return {"pid": os.getpid()}


not_callable = 42


def output_of_kind(params, seed):
    """What the parameter ``kind`` names; ``fine`` and anything else: an ordinary table whose column ``z`` holds
    floats (so a batch mixing it with ``complex_column`` widens ``z`` to complex)."""
    a = float(params["a"])
    kind = params["kind"]
    if kind == "complex_scalar":
        return {"z": complex(a, 1.0), "y": a}
    if kind == "complex_column":
        return pd.DataFrame({"f": [0, 1], "z": np.fft.fft([1.0, a])})
    if kind == "duplicate_columns":
        return pd.DataFrame([[a, a + 1.0]], columns=["x", "x"])
    if kind == "int_and_str_names":
        return pd.DataFrame({1: [a], "1": [a + 1.0]})
    if kind == "empty_dict_cell":
        return pd.DataFrame({"info": [{}], "y": [a]})
    if kind == "sparse_column":
        return pd.DataFrame({"s": pd.arrays.SparseArray([0.0, a])})
    return pd.DataFrame({"f": [0, 1], "z": [a, a + 1.0]})


def day_indexed(params, seed):
    """A time series indexed by day, as ``set_index("day")`` gives."""
    days = pd.Index([10, 11, 12], name="day")
    return pd.DataFrame({"cases": [params["a"] * d for d in days]}, index=days)


def indexed_series_in_dict(params, seed):
    """A Series indexed by day next to a scalar, in a dict."""
    cases = pd.Series([params["a"], params["a"] + 1.0], index=pd.Index([1, 2], name="day"), name="cases")
    return {"cases": cases, "total": float(cases.sum())}


def default_index(params, seed):
    return pd.DataFrame({"cases": [params["a"], params["a"] + 1.0]})


def int_and_str_keys(params, seed):
    """A dict of scalars whose keys 1 and "1" are the same name once made text."""
    return {1: params["a"], "1": params["a"] + 1.0}


def running_alone() -> bool:
    """Whether this is the process simcal.isolate runs a single simulation in (``python -m simcal.isolate payload
    rows report-fd``), not a worker."""
    return Path(sys.argv[0]).parts[-2:] == ("simcal", "isolate.py")


def block_the_rows_file() -> None:
    """In the process running it alone: put a directory where that process writes its rows first (the rows path,
    its second argument, with the suffix .partial), so that its own write fails (IsADirectoryError), as it
    would on a full disk, although the model returns fine."""
    Path(sys.argv[2]).with_suffix(".partial").mkdir()


def blocks_its_rows_for_three(params, seed):
    """When a == 3: kills its worker process (like crashes_for_three), and when run alone, returns fine but blocks
    the file its rows are written to (block_the_rows_file), appending a line to ``count_file`` each time."""
    if params["a"] == 3:
        if not running_alone():
            os._exit(11)
        with open(params["count_file"], "a") as handle:
            handle.write("alone\n")
        block_the_rows_file()
    return {"y": float(params["a"])}


def misbehaves_alone(params, seed):
    """For the isolated runs: ``how`` chooses what it does ("rows", "segfault", "exit" with ``code``, "hang", "memory" with
    ``mib``, "external": waits for a program of its own, which holds ``mib`` and whose process id it writes to
    ``external_pid_file``, "shout": writes ``mib`` MiB of lines to stderr, then exits with code 11, "block_rows": returns
    rows but first blocks the file they are written to, see block_the_rows_file); it first writes
    its process id to ``pid_file`` when given."""
    if params.get("pid_file"):
        Path(params["pid_file"]).write_text(str(os.getpid()))
    how = params["how"]
    if how == "external":  # as a model that runs a simulator binary does
        import subprocess

        hold = f"import time; held = b'x' * ({int(params.get('mib', 0))} * 2**20); time.sleep(600)"  # touched
        program = subprocess.Popen([sys.executable, "-c", hold])
        Path(params["external_pid_file"]).write_text(str(program.pid))
        program.wait()
    if how == "segfault":
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if how == "shout":
        line = ("the model says a lot " * 49)[:1023] + "\n"  # 1 KiB
        for _ in range(int(params["mib"]) * 1024):
            sys.stderr.write(line)
        sys.stderr.write("its last words\n")
        sys.stderr.flush()
        os._exit(11)
    if how == "block_rows":
        block_the_rows_file()
    if how == "exit":
        os._exit(int(params.get("code", 11)))
    if how == "hang":
        time.sleep(600)
    if how == "memory":
        held = np.ones(int(params["mib"]) * 2**17)  # float64: 8 bytes each, touched so that they count
        time.sleep(600)
        return {"held": float(held.sum())}
    return pd.DataFrame({"t": [0, 1], "value": [seed % 7, params["a"]]})


def whole_beyond_2_53(params, seed):
    """An output 'n' that is a whole number beyond what a 64-bit float holds exactly (an ID, a hash), in a dict or
    a table, beside simulations whose 'n' is missing, fractional or that fail."""
    kind = params["kind"]
    if kind == "fails":
        raise RuntimeError("no n")
    if kind == "table":
        return pd.DataFrame({"n": [2**53 + 3, 2**53 + 5]})
    return {"n": {"dict": 2**53 + 1, "missing": None, "half": 1.5}[kind]}


def params_only(params):
    """A model written without the seed argument every simulation passes."""
    return {"y": 1.0}

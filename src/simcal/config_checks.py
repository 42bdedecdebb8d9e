"""The calibration workflow's config, checked while Snakemake parses the calibration module (its common.smk), so
that a mistake a job would only meet later stops the dry run instead.

Each check raises ``ContractError`` (a ValueError) in one line naming the dotted key, the value or file, and what
was expected; the module turns it into a WorkflowError. Only what is certainly wrong is refused: a reference whose
module does not import in the Snakemake process (it may import only in the jobs' environment) is left to the job,
which names the key as well (``contract.CONFIG_KEYS``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from simcal.contract import (
    REFERENCE,
    ContractError,
    check_model_signature,
    check_options,
    target_names_and_weights,
    target_options,
)
from simcal.observed import check_generation, check_observed_path

_MISSING = object()


def importable_function(reference: Any, key: str) -> Callable | None:
    """The function ``reference`` ("package.module:function", the part after the colon may be dotted) names, or
    None when its module does not import here (whatever its import raises), nor a name of it that is imported when
    asked for (a package's lazy submodule, through its module ``__getattr__``). Fails naming ``key`` when the
    reference has another form, or its module lacks a name of it (with the closest name the module has), or it
    names something that is not callable: the jobs' ``contract.resolve_callable`` would refuse all three."""
    if not isinstance(reference, str) or not REFERENCE.fullmatch(reference):
        raise ContractError(f"{key}: {reference!r} must look like 'package.module:function'")
    module_name, attribute = reference.split(":")
    try:
        with _stdout_to_stderr():
            target = importlib.import_module(module_name)
    except (Exception, SystemExit):
        return None
    where, walked = f"module {module_name}", []
    for part in attribute.split("."):
        try:
            with _stdout_to_stderr():
                found = getattr(target, part, _MISSING)
        except (Exception, SystemExit):  # imported when asked for (a lazy submodule): it does not import here
            return None
        if found is _MISSING:
            names = [name for name in dir(target) if not name.startswith("_")]
            closest = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {closest[0]!r}?)" if closest else ""
            raise ContractError(f"{key}: {reference!r}: {where} has no {part!r}{hint}")
        target = found
        walked.append(part)
        where = f"{module_name}:{'.'.join(walked)}"
    if not callable(target):
        raise ContractError(
            f"{key}: {reference!r} is a {type(target).__name__}, not a function; expected a callable"
        )
    return target


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """What a user's module prints while it is imported goes to stderr, from Python (print) and from native code
    (file descriptor 1): the Snakemake process's stdout carries ``--rulegraph``, ``--dag`` and ``--summary``, and
    one banner line there broke ``snakemake --rulegraph | dot``."""
    with contextlib.ExitStack() as stack:
        # No file descriptor 1 or 2 (a daemon), or no sys.stdout: Python's prints alone are sent to stderr
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stdout.flush()
            saved = os.dup(1)
            stack.callback(os.close, saved)
            os.dup2(2, 1)
            stack.callback(os.dup2, saved, 1)
            stack.callback(sys.stdout.flush)
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        yield


def check_model(model: Any, key: str = "calibration.model") -> None:
    """calibration.model: its form, and where its module imports here, the function it names and that it can be
    called as ``model(params, seed)``, by the check the sweep and the calibration make when they start
    (``contract.check_model_signature``): a model ``def f(params)`` passed the dry run and failed in every
    simulation."""
    function = importable_function(model, key)
    if function is not None:
        check_model_signature(function, model, key)


def check_parameters(
    model: Any, parameters: Mapping[str, Any], fixed: Mapping[str, Any], key: str = "calibration.model"
) -> None:
    """calibration.parameters with calibration.fixed, as the sweep's simulate job and the calibrate job check them:
    a name both calibrated and fixed (the config's own mistake, whatever the model), and where the model imports
    here, what ``calibrate.check_model_parameters`` refuses (a reserved name, a fixed name or value its declared
    space lacks). Both passed the dry run and the design job; the sweep's simulate job then failed naming the
    design file."""
    both = sorted(set(map(str, fixed)) & set(map(str, parameters)))
    if both:
        raise ContractError(
            f"calibration.fixed and calibration.parameters both name {both}: a parameter is either calibrated or "
            "fixed; give it in one of them"
        )
    if importable_function(model, key) is not None:
        # the jobs' own check; simcal.calibrate imports optuna and pandas, so only when it is needed
        from simcal.calibrate import check_model_parameters

        check_model_parameters(model, parameters, fixed)


def check_observed(observed: Mapping[str, Any], key: str = "calibration.observed") -> None:
    """calibration.observed as the jobs use it.

    With ``path``: a file the calibrate and visualize jobs can read (``observed.check_observed_path``); the
    generator and its settings are then unused and not judged. Without: the observed section's own settings as the
    generate_observed job checks them (``observed.check_generation``): the true parameters' values whatever the
    generator, and where its module imports here, the generator itself (``importable_function``), the true
    parameters' names and values against its declared space and the options against its signature. The
    calibration's fixed values are left to the job: they serve the sweep too, which never calls the generator."""
    path = observed.get("path")
    if path is not None:
        check_observed_path(path, f"{key}.path")
        return
    generator = observed.get("generator")
    function = importable_function(generator, f"{key}.generator")
    check_generation(
        generator, function, observed.get("true_params"), observed.get("options"), key=key, judge_fixed=False
    )


def check_targets(targets: Any, key: str = "calibration.targets") -> None:
    """calibration.targets: each target's function (its form, and where its module imports here, that the module
    has it) and the options the target gives it, checked against its signature as the calibrate job checks them
    (``contract.check_options``): a misspelt loss function or option passed the dry run and failed only after
    the design's sweep; so did every weight 0 and a name given twice. The schema has checked that ``targets`` is a list of mappings with a ``function``."""
    for index, spec in enumerate(targets):
        where = f"{key}[{index}]"
        function = importable_function(spec["function"], f"{where}.function")
        if function is not None:
            check_options(function, target_options(spec), where, spec["function"])
    target_names_and_weights(targets, key)


def check_sweep_columns(
    columns: Any,
    simulations: str | os.PathLike,
    design: str | os.PathLike,
    required: Sequence[str] = (),
    key: str = "calibration.sweep.columns",
    model: str | None = None,
    plan: str | None = None,
) -> None:
    """calibration.sweep.columns against the header of the sweep's simulations table (``simulations``, the file
    analyze_sweep reads) when an earlier run left one: a column it lacks is refused naming the column, the file, the
    columns it has and the closest of them. The analyze_sweep job met it only after the simulations (it checks the
    same, and still does). Left to that job when no list is given, or the table is not there (the simulate rule
    writes it) or cannot be read, or it will be written again before analyze_sweep reads it as far as this can
    see: the design (``design``) is newer, or the table lacks a column of ``required`` (the parameters the config
    now names: the sweep changed), or, with ``model`` (calibration.model), the table records another model or
    none (written by another model, which a changed calibration.model reruns simulate for, or by a simcal that
    recorded none: simcal.store.MODEL_RECORD), or, with ``plan`` (the plan the config makes now:
    simcal.settings.sweep_plan_record of calibration.fixed and the sweep's settings), the table records another
    plan or none (a changed fixed value or setting reruns simulate, whose model may then write other columns)."""
    if not columns:
        return
    # pyarrow only when there is a list to check: this module is imported while Snakemake parses the workflow
    import pyarrow as pa
    import pyarrow.parquet as pq

    from simcal.store import SWEEP_PLAN_RECORD, recorded_model

    try:
        schema = pq.read_schema(simulations)
        written = os.stat(simulations).st_mtime
    except (OSError, pa.ArrowException):
        return
    names = schema.names
    if model is not None and recorded_model(schema.metadata)["model"] != model:
        return
    recorded_plan = (schema.metadata or {}).get(SWEEP_PLAN_RECORD["sweep_plan"], b"").decode()
    if plan is not None and recorded_plan != plan:
        return
    with contextlib.suppress(OSError):
        if os.stat(design).st_mtime > written:
            return
    if any(name not in names for name in required):
        return
    for column in columns:
        if column not in names:
            closest = difflib.get_close_matches(str(column), names, n=1)
            hint = f" (did you mean {closest[0]!r}?)" if closest else ""
            raise ContractError(
                f"{key}: column {column!r} is not in {simulations}, the simulations of the sweep an earlier run "
                f"wrote, which analyze_sweep would read; it has {names}{hint}. Name a column it has (if the sweep "
                f"is to be simulated again by a model that writes {column!r}, delete {simulations} first)"
            )

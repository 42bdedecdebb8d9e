"""Observed data: generated at known parameters (synthetic studies) or read from a file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from simcal.contract import (
    ContractError,
    check_options,
    is_whole_number,
    mapping_of,
    output_table,
    resolve_callable,
)
from simcal.files import read_table, table_format, write_table
from simcal.space import check_fixed, check_parameter_sets, space_of
from simcal.tables import check_fixed_values, check_header, refuse_comment_lines

log = logging.getLogger(__name__)


def generate_observed(
    generator: str,
    true_params: Mapping[str, Any],
    output: str | Path,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Call ``generator({**fixed, **true_params}, seed, **options)`` (a ``"module:function"``) and write its table
    atomically (CSV, TSV or Parquet by the output's suffix). ``fixed``: the calibration's fixed parameters, checked
    and named as such (a typo there is not blamed on the true parameters).

    The table's index is kept as columns, as a model's is (``contract.output_table``): a generator that returns
    ``set_index("day")`` keeps its days."""
    function = resolve_callable(generator, what="observed-data generator")
    # int() would take 7.9 as 7 and '7' as 7; numpy refuses -1 naming nothing
    if not is_whole_number(seed, 0):
        raise ContractError(f"observed.seed must be a whole number >= 0, got {seed!r}")
    true_params, options = check_generation(generator, function, true_params, options, fixed)
    observed = function(true_params, int(seed), **options)
    if not isinstance(observed, pd.DataFrame) or observed.empty:
        raise ContractError(
            f"observed-data generator {generator!r} returned {type(observed).__name__}"
            f"{' (empty)' if isinstance(observed, pd.DataFrame) else ''}; expected a non-empty pandas DataFrame"
        )
    observed = output_table(observed)
    write_table(observed, output)
    log.info("wrote %d observed rows from %s (seed %d) to %s", len(observed), generator, seed, output)
    return observed


def check_generation(
    generator: str,
    function: Callable | None,
    true_params: Any,
    options: Any,
    fixed: Any = None,
    key: str = "observed",
    judge_fixed: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The generator's settings as ``generate_observed`` uses them, ``({**fixed, **true_params}, options)``, or
    fail naming the setting (``key``: the observed section's name).

    The workflow's parse-time check (simcal.config_checks) calls it with ``key="calibration.observed"``,
    ``function`` None where the generator's module does not import there (then only what needs no generator is
    judged) and ``judge_fixed=False``: it judges the observed section's own settings only, the true parameters'
    names and values against the generator's declared space without asking for every required one.
    calibration.fixed serves the sweep as well, which never calls the generator, so a fixed value the generator
    does not take, or a required parameter only a fixed value could give, is left to the generate_observed job."""
    # YAML gives None for 'true_params:' left empty, a list for '- beta: 0.3': name the setting, not dict().
    fixed = mapping_of(fixed, "calibration.fixed") if judge_fixed else {}
    if true_params is None:
        raise ContractError(
            f"{key}.true_params has no value (null); give the parameters the observed data are generated at"
        )
    true_params = mapping_of(true_params, f"{key}.true_params")
    options = mapping_of(options, f"{key}.options")
    # The values a parameter table refuses (NaN, inf, null, a list) made NaN observations without a word.
    check_fixed_values(fixed, "calibration.fixed")
    check_fixed_values(true_params, f"{key}.true_params")
    params = {**fixed, **true_params}
    if function is not None:
        if judge_fixed:
            check_fixed(generator, fixed, "calibration.fixed")
            (params,) = check_parameter_sets(
                generator, [params], f"{key}.true_params", ["the true parameters"]
            )
        else:
            space = space_of(generator)
            if space is not None:
                space.check_values(true_params, f"{key}.true_params, the true parameters", generator)
        check_options(function, options, f"{key}.options", generator)
    return dict(params), options


def check_observed_path(path: Any, key: str = "calibration.observed.path") -> None:
    """A file of observed data the calibrate and visualize jobs can read, or fail naming ``key``: a folder, or a
    name whose suffix is no table format (``simcal.files.FORMATS``). A file that does not exist is not refused
    here: a rule of the importing workflow may make it, or a storage provider hold it (Snakemake's own dry run
    names it as a missing input when nothing does)."""
    if not isinstance(path, str) or not path.strip():
        raise ContractError(
            f"{key}: {path!r} names no file; give a CSV, TSV or Parquet file of observed data, or null to "
            "generate them with calibration.observed.generator"
        )
    if Path(path).expanduser().is_dir():  # it would reach the calibrate job as its input table
        raise ContractError(f"{key}: {path} is a folder, not a file of observed data")
    try:
        table_format(path)
    except ContractError as error:
        raise ContractError(f"{key}: {error}") from None


def read_observed(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Observed data from CSV, TSV or Parquet; fails naming the file and any missing column, and a line of a CSV
    or TSV file that starts with '#' (an observation commented out), as a parameter table does: pandas reads it
    as data, which made the day column text and every loss NaN after the design had run. A CSV or TSV header is
    held to a parameter table's rules too (``check_header``): a column without a name (the index column that
    ``to_csv()`` writes without ``index=False``, read as 'Unnamed: 0'), a name given twice, more fields in a row
    than names in the header."""
    separator = table_format(path)
    if separator is not None:
        refuse_comment_lines(Path(path), separator, header=True)
    observed = read_table(path, "observed data")
    if separator is not None:  # 'Unnamed: 0' (to_csv() without index=False), 'count.1', shifted values
        check_header(Path(path), observed, separator, "variable")
    if observed.empty:
        raise ContractError(f"{path}: the observed data have no rows")
    missing = [c for c in columns or [] if c not in observed.columns]
    if missing:
        raise ContractError(
            f"{path}: observed data have no column(s) {missing}; they have {list(observed.columns)}"
        )
    return observed

"""Settings of a ``kdgat`` command: a config section from a YAML file, ``--set KEY=VALUE`` overrides, and the
command's own flags on top, in that order (a flag wins)."""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kdgat.tracking import BACKENDS, TrackingSettings
from wrapper_rules import InputError

# The top-level keys of the workflow's config.yaml (those of its schemas): a file holding any of them is the
# workflow's config, whose section a command reads (a section it leaves out takes the schemas' defaults).
WORKFLOW_SECTIONS = ("targets", "learned_resources", "datasets", "preprocess", "kd_gat", "evaluation",
                     "calibration")  # fmt: skip
# kd_gat.device and evaluation.device in the module schemas.
DEVICE_PATTERN = "^(auto|cpu|cuda(:(0|[1-9][0-9]?|1[01][0-9]|12[0-7]))?)$"


class UsageError(ValueError, InputError):
    """A command-line mistake (bad option value, unreadable settings file); the message says which."""


def read_section(path: str | os.PathLike | None, section: str) -> tuple[dict, dict]:
    """``(section, whole file)`` from a YAML file that is either the workflow's config (the section under its
    key, e.g. ``kd_gat:``; empty when the config leaves it out) or the section alone. No file: two empty
    mappings."""
    if path is None:
        return {}, {}
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"settings file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"settings file {path} cannot be read as text: {error}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"settings file {path} is not valid YAML: {error}") from None
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise UsageError(f"settings file {path}: expected a mapping, got {type(data).__name__}")
    if any(key in data for key in WORKFLOW_SECTIONS):
        others = [key for key in data if key not in WORKFLOW_SECTIONS and isinstance(key, str)]
        misspelt = difflib.get_close_matches(section, others, n=1, cutoff=0.8)
        if section not in data and misspelt:
            # The workflow refuses an unknown top-level key; read past, it gave every default of the section.
            raise UsageError(
                f"{path}: no {section!r} section, but a top-level key {misspelt[0]!r}: a misspelt {section!r}? "
                f"(the workflow's sections: {', '.join(WORKFLOW_SECTIONS)})"
            )
        value = data.get(section)
        if value is not None and not isinstance(value, Mapping):
            raise UsageError(f"{path}: config key {section!r} must be a mapping")
        return copy.deepcopy(dict(value or {})), dict(data)
    return copy.deepcopy(dict(data)), {}


def kd_gat_key(config: Mapping[str, Any], key: str, path) -> Any:
    """``kd_gat.<key>`` of a workflow config read by :func:`read_section` for another section (None when absent)."""
    kd_gat = config.get("kd_gat")
    if kd_gat is not None and not isinstance(kd_gat, Mapping):
        raise UsageError(f"{path}: config key 'kd_gat' must be a mapping")
    return (kd_gat or {}).get(key)


def first_seed(kd_gat: Any, where: str) -> int | None:
    """The first of ``kd_gat.seeds`` (a one-job command's default seed), None where the config names none."""
    seeds = kd_gat.get("seeds") if isinstance(kd_gat, Mapping) else None
    if seeds is None or (isinstance(seeds, list) and not seeds):
        return None
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UsageError(f"{where}.seeds must be a list of integer seeds, got {seeds!r}")
    return seeds[0]


def thread_count(flag: Any, configured: Any, key: str) -> int | None:
    """The job's CPU threads: ``--threads`` when given, else the config's ``key``; None, or an integer >= 1
    (a bad value fails naming where it came from)."""
    value, where = (flag, "--threads") if flag is not None else (configured, key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"{where} must be an integer >= 1, got {value!r}")
    return value


def check_device(value: Any, where: str) -> None:
    """A device the workflow's schemas accept (auto, cpu, cuda, cuda:N); None: not given (the default)."""
    if value is not None and not (isinstance(value, str) and re.fullmatch(DEVICE_PATTERN, value)):
        raise UsageError(f"{where} must be auto, cpu, cuda or cuda:N, got {value!r}")


def parse_assignment(text: str, option: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as YAML (``5`` an integer, ``false`` a boolean, ``[1, 2]`` a list)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{option} expects KEY=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def parse_pair(text: str, option: str) -> tuple[str, str]:
    """``NAME=PATH`` kept as text (a file name is never read as YAML)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UsageError(f"{option} expects NAME=FILE, got {text!r}")
    return name.strip(), value.strip()


def apply_assignments(section: dict, assignments: Iterable[str], where: str) -> dict:
    """``--set a.b=1``: set ``section["a"]["b"] = 1`` (intermediate mappings are created)."""
    for text in assignments or ():
        key, value = parse_assignment(text, "--set")
        node = section
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(
                    f"--set {key}: {where}.{'.'.join(parts[: depth + 1])} is {child!r}, not a mapping"
                )
            node = child
        node[parts[-1]] = value
    return section


def set_nested(section: dict, keys: tuple[str, ...], value: Any, where: str) -> None:
    """``section[k1][k2]... = value`` when ``value`` is not None (a flag that was not given); ``where`` names
    ``section`` in the error for a config that holds something else than a mapping on the way."""
    if value is None:
        return
    node = section
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            path = ".".join((where, *keys[: depth + 1]))
            raise UsageError(f"{path} is {child!r}, not a mapping: a flag sets {'.'.join((where, *keys))}")
        node = child
    node[keys[-1]] = value


def folder(value: str | os.PathLike | None, option: str) -> Path | None:
    """A folder option's path (None when not given), refused at once when it names a file: the library would find
    out only when it reads or writes there, after the work, with an OS error that names no option."""
    if value is None:
        return None
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file; give a folder")
    return path


def required(value, what: str, option: str):
    """An input the command cannot do without (a missing file is reported by the library, as in the workflow)."""
    if value is None:
        raise UsageError(f"{what} is needed: give {option}")
    return value


def add_tracking_options(parser, what: str):
    """--tracking, --tracking-uri, --experiment (and for training --track-model) over kd_gat.tracking."""
    group = parser.add_argument_group("experiment tracking (kd_gat.tracking of --config)", description=what)
    group.add_argument("--tracking", choices=BACKENDS, help="none or mlflow (kd_gat.tracking.backend)")
    group.add_argument("--tracking-uri", help="MLflow tracking URI or store path (kd_gat.tracking.uri)")
    group.add_argument("--experiment", help="MLflow experiment (kd_gat.tracking.experiment)")
    return group


def tracking_settings(section: Mapping | None, args, tags: Mapping[str, Any]) -> TrackingSettings:
    """kd_gat.tracking with the command's tracking flags on top."""
    if section is not None and not isinstance(section, Mapping):
        raise UsageError(f"kd_gat.tracking must be a mapping, got {section!r}")
    options = dict(section or {})
    for key, value in (("backend", args.tracking), ("uri", args.tracking_uri), ("experiment", args.experiment),
                       ("model", getattr(args, "track_model", None))):  # fmt: skip
        set_nested(options, (key,), value, "kd_gat.tracking")
    return TrackingSettings.from_config(options, tags=tags)

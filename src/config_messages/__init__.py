"""One line per bad config key, for a config that fails its JSON schema: the key's dotted name, the config file(s)
or ``--config`` that set it, and what was expected (and why, where :data:`REASONS` knows a bare bound misleads).
Snakemake's own message names the key only as ``On instance['a']['b']`` after a dump of the schema. Pure Python: workflow/modules/config_check.smk calls it with
jsonschema's error, the workflow's config files and its ``--config`` overrides. A key of a module imported with
``config: config["lab"]`` is named as those name it, lab.kd_gat.epochs (``config_location``), and one of a
mapping an intermediate module built of the config's parts from the part that holds it (``config_place``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

# Why a value is refused, where the schema's bare bound reads as arbitrary: {(the key's last name, the validator that
# refused it, the value): why}. runtime: the resources of the preprocess, kd_gat (resources.runtime) and evaluation
# modules, in minutes.
REASONS = {
    ("runtime", "minimum", 0): (
        "a runtime of 0 is no time limit at all: Snakemake's SLURM executor then sends none (no --time), so the "
        "partition's default time limit would apply, not the one you meant; give the minutes the job needs"
    ),
}


def _reason(path, problem) -> str:
    value = problem.instance
    if not path or isinstance(value, bool) or not isinstance(value, int | float | str):
        return ""
    why = REASONS.get((path[-1], problem.validator, value))
    return f": {why}" if why else ""


def config_problem(problem, configfiles, overrides, prefix=(), module=None, depth=0, importer=None) -> str:
    """One line for a config that fails the schema: the dotted key, the config file(s) or --config that set it
    (none: a default) and what was expected. ``prefix``: where the validated config sits in the workflow's config
    (``config_location``), [] for the whole of it; with ``depth``, where the part of it that holds the refused key
    sits, standing for the first ``depth`` names of the key (``config_place``: a mapping an intermediate module
    built of parts of the workflow's config); None where no part of it is in the workflow's config (a module, the
    ``importer`` or the workflow itself, built it anew): the key is then named as ``module`` sees it, and no file
    can be."""
    path = list(problem.absolute_path)
    placed = [*(prefix or ()), *path[depth:]]  # the key as the workflow's config files and --config name it
    expected = problem.message
    if problem.validator == "additionalProperties":
        known = sorted(problem.schema.get("properties", {}))
        keys = [path + [name] for name in sorted(set(problem.instance) - set(known))]
        expected = f"an unknown key; {_dotted(placed) or 'the top level'} takes {known}"
    elif problem.validator == "required":
        present = problem.instance if isinstance(problem.instance, dict) else {}
        keys = [path + [name] for name in problem.validator_value if name not in present]
        expected = f"a required key is missing from {_dotted(placed) or 'the config'}"
    elif "propertyNames" in problem.relative_schema_path:  # a name, judged as the instance
        keys = [path + [problem.instance]]
        expected = f"{problem.message} (a name not allowed there)"
    else:
        keys = [path]
    expected += _reason(path, problem)
    if prefix is None:
        return "\n".join(_unplaced(key, expected, module, importer) for key in keys)
    lines = []
    for key in keys:
        dotted = _dotted([*prefix, *key[depth:]])
        # the files that gave the refused value (a name refused: every file naming it)
        # (a required key: every file giving the mapping it is missing from)
        looked_up = [*prefix, *(path if problem.validator == "required" else key)[depth:]]
        culprit = (
            (lambda value: value is not _MISSING)
            if looked_up != placed or problem.validator == "required"
            else (lambda value: value == problem.instance)
        )
        sources = [
            str(file) for file in _unique_files(configfiles) if culprit(_value(_load(file), looked_up))
        ]
        from_cli = culprit(_value(overrides, looked_up))
        if from_cli:
            sources.append("--config")
        where = ", ".join(sources) or "no config file or --config: a default, or the Snakefile"
        if (prefix or depth) and module:
            where += f"; module {module} sees it as {_dotted(key)}"
        hint = ""
        if (
            from_cli
            and len(prefix) + len(key) > 1
            and isinstance(problem.instance, str)
            and problem.validator == "type"
        ):
            hint = (
                "; --config reads every value inside a mapping as text (kd_gat='{seeds: [1]}' gives '1'): set "
                "nested numbers and booleans in a --configfile"
            )
        lines.append(f"config key {dotted or '(the whole config)'} (set in {where}): {expected}{hint}")
    return "\n".join(lines)


def config_location(workflow_config, validated):
    """Where ``validated`` sits in ``workflow_config``, as a list of names and indexes: [] when it is the whole of
    it, ["lab"] for a module imported with ``config: config["lab"]``. Found by identity, as Snakemake hands a
    module the very mapping its ``config:`` names; None where it is no part of it (a copy, a mapping built in the
    Snakefile) or sits in two places (a YAML alias), so that no key is named where it may not be."""
    found = list(_locations(workflow_config, validated, []))
    return found[0] if len(found) == 1 else None


def config_place(workflow_config, validated, key):
    """Where the key ``key`` (a list of names and indexes) of a module's config ``validated`` sits in
    ``workflow_config``: (location, depth), the location (``config_location``) of ``validated`` itself (depth 0) or
    else of the deepest mapping or list along ``key`` that is part of ``workflow_config``, standing for the first
    ``depth`` names of ``key``. A module that imports another with a mapping it built, ``{"kd_gat":
    config["training"]}`` in a module imported with ``config["lab"]``: kd_gat.epoch is (["lab", "training"], 1),
    lab.training.epoch. None where no part of it is (every mapping along ``key`` built anew)."""
    whole = config_location(workflow_config, validated)
    if whole is not None:
        return whole, 0
    for depth in range(len(key), 0, -1):
        part = _value(validated, key[:depth])
        found = config_location(workflow_config, part) if isinstance(part, dict | list) else None
        if found is not None:
            return found, depth
    return None


def placed_message(message, prefix, keys, workflow_config=None) -> str:
    """A module's own refusal ``message`` (not the schema's), with every config key it names named as the workflow's
    config files name it: behind ``prefix`` (``config_location``), lab.kd_gat.sweep.table. A key is one quoted after
    "config key" (config key 'datasets' is missing), the one the message starts with where it is one of ``keys``
    (the module's config: kd_gat.sweep.table: ...), and any other dotted name whose first two names are keys of
    ``keys`` (... but evaluation.device is cpu; set evaluation.gpu to 0), not a file name such as kd_gat.tsv.
    Unchanged for the whole config ([]). Where no prefix is known (None: a config the importing workflow or an
    intermediate module built), each key is named from the deepest part of it that ``workflow_config`` holds
    (``config_place``), and left as it is where none."""
    if prefix == [] or (prefix is None and workflow_config is None):
        return message
    quoted = {match.start(1) for match in re.finditer(r"config key '([^']+)'", message)}

    def placed(match):
        dotted, start = match.group(1), match.start(1)
        key = [int(index) if index else name for index, name in re.findall(r"\[(\d+)\]|([^.\[\]]+)", dotted)]
        leading = (
            start == 0 and key[0] in keys and message[match.end(1) : match.end(1) + 1] in (".", ":", " ")
        )
        if not (start in quoted or leading or _names_a_key(keys, key[0], dotted[len(key[0]) :])):
            return dotted
        if prefix is not None:
            return f"{_dotted(prefix)}.{dotted}"
        place = config_place(workflow_config, keys, key)
        return dotted if place is None else _dotted([*place[0], *key[place[1] :]])

    return re.sub(r"(?<![\w./\\-])(\w+(?:\.\w+|\[\d+\])*)", placed, message)


def _names_a_key(keys, name, rest):
    """Whether ``name`` followed by ``rest`` is a dotted key of the mapping ``keys``: evaluation.gpu where ``keys``
    has an evaluation mapping holding gpu, datasets.lab.files[0] where datasets holds lab."""
    section = keys.get(name) if isinstance(keys, Mapping) else None
    following = re.match(r"\.(\w+)|\[(\d+)\]", rest)
    if following is None:
        return False
    if following.group(1) is not None:
        return isinstance(section, Mapping) and following.group(1) in section
    return isinstance(section, list)


def _locations(data, wanted, path):
    if data is wanted:
        yield path
        return
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for name, value in items:
        if isinstance(value, dict | list):
            yield from _locations(value, wanted, [*path, name])


def _unplaced(key, expected, module, importer=None):
    """The line for a key of a config the importing workflow (or module ``importer``) built: named as the module
    sees it."""
    builder = f"module {importer}" if importer else "the importing workflow"
    given = f"the config {builder} gives module {module}" if module else "the config given here"
    built = f"a mapping module {importer} built, " if importer else "a mapping that is "
    return (
        f"config key {_dotted(key) or '(the whole config)'} (of {given}: {built}no part of the workflow's config, "
        f"so no config file can be named): {expected}"
    )


def duplicate_keys(configfiles) -> list[str]:
    """One line per key given twice in one mapping of a config file: YAML (and so Snakemake) keeps the last and
    drops the other without a word. Files that cannot be read or parsed are left to Snakemake."""
    lines = []
    for file in _unique_files(configfiles):
        try:
            document = yaml.compose(Path(file).read_text(), Loader=yaml.SafeLoader)
        except (OSError, yaml.YAMLError):
            continue
        for key, first, again in _repeats(document, []):
            lines.append(
                f"config key {_dotted(key)} is given twice in {file} (lines {first} and {again}): YAML keeps only "
                f"the last, the other is lost; give it once"
            )
    return lines


def overridden_values(configfiles, overrides) -> list[str]:
    """One line per value a config file sets that ``--config`` replaces with another. Snakemake applies --config
    over every config file without a word, and a profile's ``config:`` is a --config: profiles/k8s's
    calibration.backend.kind replaced a config file's ``kind: service`` unseen. Lists are values, not merged."""
    lines = []
    for key, value in _leaves(overrides, []):
        for file in _unique_files(configfiles):
            given = _value(_load(file), key)
            if given is not _MISSING and given != value:
                lines.append(
                    f"config key {_dotted(key)}: {file} sets {given!r}, but --config (or a profile's config:) sets "
                    f"{value!r}, which is used"
                )
    return lines


def non_finite_numbers(data, path=()):
    """(dotted key, value) of every number in ``data`` that is NaN or infinite (YAML's .nan, .inf), which pass every
    ``minimum``/``maximum`` of a JSON schema (a comparison with NaN is false; .inf is above any minimum)."""
    if isinstance(data, float) and not math.isfinite(data):
        yield _dotted(list(path)), data
    elif isinstance(data, dict):
        for name, value in data.items():
            yield from non_finite_numbers(value, (*path, name))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from non_finite_numbers(value, (*path, index))


def _leaves(data, path):
    """(key, value) of every value of ``data`` that is no mapping, a key being the list of names leading to it."""
    if not isinstance(data, dict) or (path and not data):
        yield path, data
        return
    for name, value in data.items():
        yield from _leaves(value, [*path, name])


def _repeats(node, path):
    """(key, first line, repeated line) for every key given twice, in document order, each mapping's own first."""
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _repeats(item, [*path, index])
    if not isinstance(node, yaml.MappingNode):
        return
    seen = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in seen:
                yield [*path, key.value], seen[key.value], key.start_mark.line + 1
            else:
                seen[key.value] = key.start_mark.line + 1
    for key, value in node.value:
        yield from _repeats(value, [*path, key.value] if isinstance(key, yaml.ScalarNode) else path)


_MISSING = object()


def _dotted(key):
    """datasets.lab.synthetic.files[0] from ['datasets', 'lab', 'synthetic', 'files', 0]."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in key).lstrip(".")


def _unique_files(files):
    seen = set()
    for file in files:
        resolved = Path(file).resolve()
        if resolved not in seen:
            seen.add(resolved)
            yield file


def _load(file):
    try:
        return yaml.safe_load(Path(file).read_text())
    except (OSError, yaml.YAMLError):
        return None


def _value(data, key):
    """The value at ``key`` (a list of names and indexes) in ``data``, or _MISSING."""
    for part in key:
        if isinstance(part, int) and isinstance(data, list) and part < len(data):
            data = data[part]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return _MISSING
    return data

"""One line per bad config key, for a config that fails its JSON schema: the key's dotted name, the config file(s)
or ``--config`` that set it, and what was expected. Snakemake's own message names the key only as
``On instance['a']['b']`` after a dump of the schema. Pure Python: workflow/modules/config_check.smk calls it with
jsonschema's error, the workflow's config files and its ``--config`` overrides. A key of a module imported with
``config: config["lab"]`` is named as those name it, lab.kd_gat.epochs (``config_location``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml


def config_problem(problem, configfiles, overrides, prefix=(), module=None) -> str:
    """One line for a config that fails the schema: the dotted key, the config file(s) or --config that set it
    (none: a default) and what was expected. ``prefix``: where the validated config sits in the workflow's config
    (``config_location``), [] for the whole of it; None where it is no part of it (the importing workflow built it):
    the key is then named as ``module`` sees it, and no file can be."""
    path = list(problem.absolute_path)
    placed = [*(prefix or ()), *path]  # the key as the workflow's config files and --config name it
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
    if prefix is None:
        return "\n".join(_unplaced(key, expected, module) for key in keys)
    lines = []
    for key in keys:
        dotted = _dotted([*prefix, *key])
        # the files that gave the refused value (a name refused: every file naming it)
        # (a required key: every file giving the mapping it is missing from)
        looked_up = [*prefix, *(path if problem.validator == "required" else key)]
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
        if prefix and module:
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


def placed_message(message, prefix, keys) -> str:
    """A module's own refusal ``message`` (not the schema's), with every config key it names named as the workflow's
    config files name it: behind ``prefix`` (``config_location``), lab.kd_gat.sweep.table. A key is one quoted after
    "config key" (config key 'datasets' is missing), the one the message starts with where it is one of ``keys``
    (the module's config: kd_gat.sweep.table: ...), and any other dotted name whose first two names are keys of
    ``keys`` (... but evaluation.device is cpu; set evaluation.gpu to 0), not a file name such as kd_gat.tsv.
    Unchanged for the whole config ([]) and where no prefix is known (None: a config the importing workflow built)."""
    if not prefix:
        return message
    quoted = {match.start(1) for match in re.finditer(r"config key '([^']+)'", message)}

    def placed(match):
        name, start = match.group(1), match.start(1)
        leading = start == 0 and name in keys and message[match.end(1) : match.end(1) + 1] in (".", ":", " ")
        if start in quoted or leading or _names_a_key(keys, name, message[match.end(1) :]):
            return f"{_dotted(prefix)}.{name}"
        return name

    return re.sub(r"(?<![\w./\\-])(\w+)", placed, message)


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


def _unplaced(key, expected, module):
    """The line for a key of a config the importing workflow built: named as the module sees it."""
    given = f"the config the importing workflow gives module {module}" if module else "the config given here"
    return (
        f"config key {_dotted(key) or '(the whole config)'} (of {given}: a mapping that is no part of the "
        f"workflow's config, so no config file can be named): {expected}"
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

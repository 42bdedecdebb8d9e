"""The repository's own metadata stays consistent: pixi.toml and constraints.txt vs pyproject.toml, schemas,
catalog file."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from testkit import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PIXI = tomllib.loads((REPO / "pixi.toml").read_text())


def _pixi_specs() -> dict[str, str]:
    """Every dependency pixi installs (all features), name -> version spec."""
    specs: dict[str, str] = {}
    tables = [PIXI.get("dependencies", {}), PIXI.get("pypi-dependencies", {})]
    for feature in PIXI.get("feature", {}).values():
        tables += [feature.get("dependencies", {}), feature.get("pypi-dependencies", {})]
    for table in tables:
        for name, spec in table.items():
            specs[name.lower()] = spec if isinstance(spec, str) else ""
    return specs


def _extras_requirements() -> list[Requirement]:
    extras = PYPROJECT["project"]["optional-dependencies"]
    return [Requirement(req) for extra, reqs in extras.items() if extra != "dev" for req in reqs]


@pytest.mark.parametrize("requirement", _extras_requirements(), ids=str)
def test_pixi_pins_every_optional_dependency_like_pyproject(requirement: Requirement) -> None:
    specs = _pixi_specs()
    assert requirement.name.lower() in specs, f"{requirement.name} is in pyproject.toml but not in pixi.toml"
    pixi_spec = specs[requirement.name.lower()].replace(" ", "")
    assert set(pixi_spec.split(",")) == set(str(requirement.specifier).split(",")), (
        f"{requirement.name}: pyproject says {requirement.specifier!s}, pixi says {pixi_spec}"
    )


def test_pixi_installs_the_library_editable_from_this_repository() -> None:
    project = PIXI["pypi-dependencies"][PYPROJECT["project"]["name"]]
    assert project == {"path": ".", "editable": True}


def test_pixi_and_readme_python_floor_match_pyproject() -> None:
    floor = re.search(r">=\s*([\d.]+)", PYPROJECT["project"]["requires-python"]).group(1)
    assert PIXI["dependencies"]["python"].startswith(f">={floor}")
    assert f"Needs only Python ≥ {floor} " in (REPO / "README.md").read_text()


TORCH_FLAVOURS = {"cu126", "cu130", "cpu"}  # PyTorch wheel indexes, profiles/slurm/README.md "GPU stack"


def _pyproject_torch() -> Requirement:
    return next(Requirement(r) for r in PYPROJECT["project"]["dependencies"] if r.startswith("torch=="))


def test_pixi_environments_use_every_feature_and_default_every_non_torch_one() -> None:
    features = set(PIXI["feature"])
    environments = PIXI["environments"]
    assert set().union(*(set(env["features"]) for env in environments.values())) == features
    assert set(environments["default"]["features"]) == features - TORCH_FLAVOURS


@pytest.mark.parametrize("flavour", sorted(TORCH_FLAVOURS))
def test_pixi_torch_flavour_pins_pyprojects_torch_from_its_index(flavour: str) -> None:
    feature = PIXI["feature"][flavour]
    torch = feature["pypi-dependencies"]["torch"]
    assert torch["version"] == str(_pyproject_torch().specifier)
    assert torch["index"] == f"https://download.pytorch.org/whl/{flavour}"
    assert flavour in PIXI["environments"][flavour]["features"]
    if flavour != "cpu":  # PyTorch publishes CUDA wheels for Linux x86_64 only
        assert feature["platforms"] == ["linux-64"]


def _conda_torch_pins() -> dict[Path, Requirement]:
    """The torch requirement of every conda environment the rules and wrappers use (pip section)."""
    pins = {}
    for env_file in sorted(
        [*(REPO / "workflow" / "envs").glob("*.yaml"), *(REPO / "wrappers").glob("*/environment.yaml")]
    ):
        dependencies = yaml.safe_load(env_file.read_text())["dependencies"]
        for pip in (d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d):
            for requirement in map(Requirement, pip):
                if requirement.name == "torch":
                    pins[env_file] = requirement
    return pins


def test_conda_environments_pin_the_same_torch_as_pyproject() -> None:
    pins = _conda_torch_pins()
    assert REPO / "workflow" / "envs" / "kdgat.yaml" in pins
    wrong = {
        str(path.relative_to(REPO)): str(r)
        for path, r in pins.items()
        if r.specifier != _pyproject_torch().specifier
    }
    assert not wrong, f"pyproject.toml pins {_pyproject_torch()}: {wrong}"


@pytest.mark.parametrize("target", ["demo", "test", "lint", "bench", "docs"])
def test_pixi_has_a_task_for_each_make_target(target: str) -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target} target"
    assert target in PIXI["tasks"], f"pixi.toml has no {target} task"


def test_pixi_tasks_run_the_same_commands_as_the_makefile() -> None:
    makefile = (REPO / "Makefile").read_text()
    for task, program in {
        "demo": "snakemake --cores",
        "test": "-m pytest",
        "docs": "scripts/make_docs.py",
    }.items():
        assert program in PIXI["tasks"][task]
        recipe = makefile.split(f"\n{task}:", 1)[1].split("\n\n", 1)[0]
        assert program in recipe, f"make {task} does not run {program!r}"


# -- constraints.txt: the exact versions make venv installs --------------------------------------------------------
# What neither the lock nor the freeze lists: the project itself, and torch, pinned in pyproject.toml (its wheels'
# local version tags, +cpu or +cu126, differ per build).
NOT_LOCKED = ("snakemake-gpu-catalog", "torch")


def _pins(lines: str, where: str) -> dict[str, str]:
    """name -> version of every `name==version` line (comments and blank lines skipped)."""
    pins: dict[str, str] = {}
    for number, line in enumerate(lines.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, version = line.partition("==")
        assert separator and version, f"{where}:{number}: expected name==version, got {line!r}"
        pins[canonicalize_name(name)] = version
    return pins


def _locked() -> dict[str, str]:
    return _pins((REPO / "constraints.txt").read_text(), "constraints.txt")


def test_the_test_environment_is_the_locked_one() -> None:
    """CI's `make venv` installs with -c constraints.txt: every installed distribution is locked, at its version."""
    excludes = [arg for name in NOT_LOCKED for arg in ("--exclude", name)]
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--disable-pip-version-check", *excludes],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    installed = _pins(freeze.stdout, "pip freeze")
    locked = _locked()
    differ = {
        name: f"locked {locked.get(name, '-')}, installed {installed.get(name, '-')}"
        for name in sorted(locked.keys() | installed.keys())
        if locked.get(name) != installed.get(name)
    }
    assert not differ, (
        "the virtualenv differs from constraints.txt: `make venv` reinstalls it; after changing dependencies, "
        f"`make lock` writes the lock anew: {differ}"
    )


def test_what_the_lock_leaves_out_is_not_in_it() -> None:
    """The project and torch are not locked: a lock line for torch would pin one build's local version and make pip
    refuse the +cu126 wheel a GPU user's index offers (profiles/slurm/README.md, "GPU stack")."""
    assert not set(NOT_LOCKED) & set(_locked()), set(NOT_LOCKED) & set(_locked())


def test_the_lock_satisfies_every_range_of_pyproject() -> None:
    project = PYPROJECT["project"]
    requirements = [Requirement(r) for r in project["dependencies"]] + _extras_requirements()
    locked = _locked()
    missing, outside = [], []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name in NOT_LOCKED or (requirement.marker and not requirement.marker.evaluate()):
            continue
        if name not in locked:
            missing.append(str(requirement))
        elif not requirement.specifier.contains(locked[name], prereleases=True):
            outside.append(f"{requirement} (locked {locked[name]})")
    assert not missing and not outside, (
        f"run `make lock`: not in constraints.txt {missing}; outside {outside}"
    )


def _matches_in_tracked_text(pattern: re.Pattern) -> Iterator[tuple[str, int, re.Match]]:
    """(file, line number, match) of `pattern` in every text file git tracks."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    suffixes = {".py", ".md", ".yaml", ".yml", ".toml", ".smk", ".sh", ".txt", ""}
    for name in listing.split("\0"):
        path = REPO / name
        if not name or path.suffix not in suffixes or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            for match in pattern.finditer(line):
                yield name, number, match


# An extra in an install command: 'snakemake-gpu-catalog[tracking]', '.[dev]', "-e '.[workflow]'".
EXTRA_IN_INSTALL = re.compile(r"(?:snakemake-gpu-catalog|(?<=[\s'\"])\.)\[([\w,-]+)\]")


def test_every_extra_an_install_command_names_exists() -> None:
    """Messages, docs and scripts name only extras pyproject.toml defines (pip merely warns about others)."""
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named, unknown = 0, []
    for name, number, match in _matches_in_tracked_text(EXTRA_IN_INSTALL):
        for extra in match.group(1).split(","):
            named += 1
            if extra not in extras:
                unknown.append(f"{name}:{number}: [{extra}]")
    assert named >= 10, f"the pattern found only {named} extras: is it still matching the install commands?"
    assert not unknown, f"extras pyproject.toml does not define ({sorted(extras)}): {unknown}"


# A file of the repository named in text: a top folder, then a path ending in a file type.
REPOSITORY_PATH = re.compile(
    r"(?<![\w./-])((?:\.tests|scripts|bench|src|workflow|profiles|config|docs|wrappers|executors)/[\w./-]*"
    r"\.(?:py|md|yaml|sh|smk|toml|json|ipynb|txt|csv))"
)
# Named on purpose although absent here: a path inside an upstream package, a file a test writes.
NAMED_ELSEWHERE = {
    # snakemake-interface-executor-plugins' module, named where the workaround explains what it works around
    ("scripts/slurm_cancel.py", "executors/remote.py"),
    # written into the test's own workspace
    (".tests/integration/test_k8s_calibration.py", "config/k8s-test.yaml"),
    # removed with the edge features; the docs point to the commit that still has it
    ("docs/models.md", "bench/ablate_edge_features.py"),
}


def test_every_repository_file_named_in_docs_and_code_exists() -> None:
    """A renamed test, script or doc leaves no stale name behind (relative to the root or to the naming file)."""
    this_file = Path(__file__).resolve().relative_to(REPO).as_posix()  # its list above names them too
    allowed = NAMED_ELSEWHERE | {(this_file, target) for _, target in NAMED_ELSEWHERE}
    named, missing = 0, []
    for name, number, match in _matches_in_tracked_text(REPOSITORY_PATH):
        target = match.group(1)
        named += 1
        if (name, target) in allowed:
            continue
        if not (REPO / target).exists() and not (REPO / name).parent.joinpath(target).exists():
            missing.append(f"{name}:{number}: {target}")
    assert named >= 200, f"the pattern found only {named} names: is it still matching?"
    assert not missing, f"named but not in the repository: {missing}"


# A test named in text: a function name that starts with test_ and a letter (not a path, not a file's name).
TEST_NAME = re.compile(r"(?<![\w./-])(test_[a-z]\w*)(?!\w*\.\w)")
# Names of that form that are not tests: the metrics' split `test_pooled`, variables, a shell variable, a Snakemake
# function. In the tests' own code only names of four or more words count (their docstrings cite tests; their
# variables are short).
NOT_TESTS = {"test_pooled", "test_only", "test_scenario_of_file", "test_sets", "test_started"}


def test_every_test_named_in_docs_and_code_exists() -> None:
    """A claim that names its check (README, docs, RESULTS.md, docstrings, comments) names a test that exists: a
    renamed or deleted test leaves no citation behind that no check stands behind any more."""
    defined = set()
    for path in (REPO / ".tests").rglob("*.py"):
        defined |= set(re.findall(r"^\s*(?:async )?def (test_\w+)", path.read_text(), re.MULTILINE))
        defined.add(path.stem)
    named, missing = 0, []
    for name, number, match in _matches_in_tracked_text(TEST_NAME):
        test = match.group(1)
        if test in NOT_TESTS or (name.startswith(".tests/") and test.count("_") < 4):
            continue
        named += 1
        if test not in defined:
            missing.append(f"{name}:{number}: {test}")
    assert named >= 300, f"the pattern found only {named} test names: is it still matching?"
    assert not missing, f"named but no test has that name: {missing}"


def test_catalog_file_puts_report_directly_under_usage() -> None:
    # The catalog scraper reads settings["usage"]["report"], not the nested form in its docs.
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert usage["report"] is True
    assert usage["software-stack-deployment"]["conda"] is True


def _schema_properties(node, path=""):
    """Yield (path, property schema, default exempt) for every property in a JSON schema tree.

    Exempt from a default: required properties, and properties of an object whose own default is null
    (Snakemake's validator would try to fill defaults into that null and fail).
    """
    if isinstance(node, dict):
        nullable_object = "default" in node and node["default"] is None
        required = set(node.get("required", [])) if not nullable_object else set(node.get("properties", {}))
        for name, sub in node.get("properties", {}).items():
            yield f"{path}.{name}".lstrip("."), sub, name in required
            yield from _schema_properties(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from _schema_properties(node[key], f"{path}[]")
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key, []):
                yield from _schema_properties(sub, path)
        for name, sub in node.get("$defs", {}).items():
            yield from _schema_properties(sub, f"{path}${name}")


SCHEMAS = sorted((REPO / "workflow").rglob("*.schema.yaml"))


@pytest.mark.parametrize("schema_path", SCHEMAS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_schema_property_has_a_description_and_a_default(schema_path: Path) -> None:
    schema = yaml.safe_load(schema_path.read_text())
    missing = [
        path
        for path, prop, exempt in _schema_properties(schema)
        if "$ref" not in prop and ("description" not in prop or ("default" not in prop and not exempt))
    ]
    assert not missing, f"{schema_path.name}: properties without description/default: {missing}"


# Keywords a schema node may hold besides the validating ones: annotations, which jsonschema ignores as it ignores
# any unknown key. An unknown key is therefore no error there: it is text gone astray, e.g. a comma inside an
# unquoted description of a YAML flow mapping, `{description: Shell lines (module load, venv)., type: array}`,
# cuts the description at the comma and turns the rest into a key of its own.
ANNOTATIONS = {"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples"}


def _schema_nodes(node, path="") -> Iterator[tuple[str, dict]]:
    """Yield (path, node) for every schema node of a JSON schema tree (not for the values of `properties`,
    `default` or `enum`, which are no schemas)."""
    if not isinstance(node, dict):
        return
    yield path or "<root>", node
    for container in ("properties", "patternProperties", "$defs", "dependentSchemas"):
        for name, sub in (node.get(container) or {}).items():
            yield from _schema_nodes(sub, f"{path}.{name}".lstrip("."))
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"):
        yield from _schema_nodes(node.get(key), f"{path}[{key}]")
    for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
        for index, sub in enumerate(node.get(key) or []):
            yield from _schema_nodes(sub, f"{path}[{key}][{index}]")


@pytest.mark.parametrize(
    "schema_path",
    sorted({*SCHEMAS, *(REPO / "src").rglob("*.schema.yaml"), REPO / "wrappers" / "meta.schema.yaml"}),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_every_schema_node_holds_only_json_schema_keywords(schema_path: Path) -> None:
    from jsonschema import Draft202012Validator

    known = set(Draft202012Validator.VALIDATORS) | ANNOTATIONS | {"then", "else"}
    schema = yaml.safe_load(schema_path.read_text())
    stray = [f"{path}: {key!r}" for path, node in _schema_nodes(schema) for key in node if key not in known]
    assert not stray, f"{schema_path.relative_to(REPO)}: keys that are no JSON Schema keyword: {stray}"


def test_each_test_carries_its_xdist_group_and_the_scheduler_sees_it(request):
    """make test's two workers rely on .tests/conftest.py's groups (SLURM node, shared pipelines): under
    --dist loadgroup the group must reach the node id, which xdist's scheduler splits on."""
    (group,) = [mark.args[0] for mark in request.node.iter_markers("xdist_group")]
    assert group == ".tests/unit/test_project_files.py"
    if getattr(request.config.option, "loadgroup", False):  # set on xdist workers only
        assert request.node.nodeid.endswith(f"@{group}"), request.node.nodeid


def test_make_venv_reinstalls_when_a_package_is_added() -> None:
    """The venv's stamp depends on every package under src/ and executors/ (make's own database, ``make -pq``): an
    editable install maps the packages it found when installed, so one added later imports only after a reinstall."""
    database = subprocess.run(
        ["make", "-pq", "-f", "Makefile"], cwd=REPO, capture_output=True, text=True, timeout=60
    ).stdout
    (line,) = [line for line in database.splitlines() if line.startswith(".venv/.installed-stamp:")]
    prerequisites = set(line.split(":", 1)[1].split())
    packages = {
        str(p.relative_to(REPO)) for root in ("src", "executors") for p in (REPO / root).glob("*/__init__.py")
    }
    assert {"pyproject.toml", "constraints.txt"} | packages <= prerequisites, prerequisites


def _make_target_commands(target: str) -> list[str]:
    """The recipe lines of a Makefile target, without the virtualenv's `$(BIN)/` prefix."""
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M)[1]
    return [line.strip().replace("$(BIN)/", "") for line in recipe.splitlines()]


@pytest.mark.parametrize("target", ["lint", "format", "bench"])
def test_pixi_tasks_run_what_the_makefile_targets_run(target: str) -> None:
    """`pixi run lint` checks what `make lint` checks (one missing `ruff format --check` let unformatted code pass
    pixi's lint), and no task needs a shell loop: pixi's task shell has none, so `bench` calls the same script."""
    task = PIXI["tasks"][target]
    steps = [step.strip() for step in task.split("&&")]
    for command in _make_target_commands(target):
        command = re.sub(r"^PYTHON=\S+ ", "", command)
        assert command in steps, f"pixi.toml task {target!r} lacks `{command}` (Makefile target {target})"
    assert not re.search(r"\b(for|while)\b.*\bdo\b", task), f"pixi.toml task {target!r} uses a shell loop"

"""The software a rule gets with `--sdm conda`: every third-party package that the code it runs can import is in
the environment file it names (workflow/envs/*.yaml for the modules' rules, which take precedence over the
wrapper's own, and each wrapper's environment.yaml for a workflow that calls the wrapper alone).

What the code imports is read from the source, transitively through the library (src/), imports inside functions
included: a package imported only where the config asks for it (MLflow for `tracking.backend: mlflow`, httpx for
`backend.kind: service`) is one a user turns on with a config key, and a rule's environment must have it then.
What an environment holds: its conda and pip packages, the library's own dependencies (pyproject.toml, which the
pip line brings) and, for each, what its metadata in the test environment says it requires."""

from __future__ import annotations

import ast
import json
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from testkit import REPO, parsed_workflow

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SRC = REPO / "src"
LIBRARY = {path.name for path in SRC.iterdir() if (path / "__init__.py").is_file()}
WRAPPER_ENVIRONMENTS = sorted((REPO / "wrappers").glob("*/environment.yaml"))
# conda-forge names of packages whose PyPI name differs (what their metadata is found under here)
CONDA_TO_PYPI = {
    "matplotlib-base": "matplotlib",
    "pytorch": "torch",
    "pytorch_geometric": "torch-geometric",
    "pyg": "torch-geometric",
    # conda-forge's dask is the metapackage: dask-core, distributed and the dashboard's bokeh
    "dask": "dask[distributed]",
    "dask-core": "dask",
}
NOT_PYTHON = {"python", "pip", "git"}
# The functions a calibration rule imports by name from the default config ("package.module:function").
CONFIG_FUNCTIONS = re.compile(r"""["']([A-Za-z_][\w.]*):[A-Za-z_]\w*["']""")


def _module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imported_names(tree: ast.AST, package: str) -> list[str]:
    """Every module an ``import`` in ``tree`` names, at any depth (``from a import b`` names ``a`` and ``a.b``)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(parts + ([node.module] if node.module else []))
            else:
                module = node.module
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def third_party_imports(roots: list[str]) -> dict[str, str]:
    """Top-level third-party module -> the file that imports it, for the modules ``roots`` and every library module
    they import, transitively."""
    found: dict[str, str] = {}
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        # its packages' __init__ run first
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in _imported_names(ast.parse(path.read_text()), package):
            top = imported.split(".")[0]
            if top in LIBRARY:
                todo.append(imported)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _roots_of_file(path: Path) -> list[str]:
    """The library modules a wrapper.py or a notebook imports (a notebook's code cells read as one script)."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    else:
        source = path.read_text()
    return _imported_names(ast.parse(source), "")


@cache
def _requires(distribution: str) -> list[Requirement]:
    try:
        return [Requirement(line) for line in metadata.requires(distribution) or []]
    except metadata.PackageNotFoundError:  # not installed here (a conda-only package): nothing more is known
        return []


def installed_by(requirements: list[Requirement]) -> set[str]:
    """The distributions ``requirements`` install: them and what they require, transitively (their extras'
    requirements included where asked for)."""
    found: set[str] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in requirements]
    seen = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        found.add(name)
        for requirement in _requires(name):
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found


@cache
def environment_packages(path: Path) -> set[str]:
    """The distributions the conda environment file ``path`` installs (canonical PyPI names)."""
    requirements = []
    for item in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(item, str):
            name = re.split(r"[\s=<>!]", item, maxsplit=1)[0]
            if name not in NOT_PYTHON:
                requirements.append(Requirement(CONDA_TO_PYPI.get(name, name)))
        else:
            for line in item["pip"]:
                requirement = Requirement(line)
                if requirement.name == PROJECT["name"]:  # the library: its own dependencies and extras
                    extras = PROJECT.get("optional-dependencies", {})
                    lines = PROJECT["dependencies"] + [r for e in requirement.extras for r in extras[e]]
                    requirements += map(Requirement, lines)
                else:
                    requirements.append(requirement)
    return installed_by(requirements)


@cache
def _top_level_modules() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The distributions that install the top-level ``module`` (``sklearn``: scikit-learn)."""
    names = _top_level_modules().get(module)
    assert names, f"{module} is imported by the library but not installed in the test environment"
    return {canonicalize_name(name) for name in names}


def missing_from(path: Path, roots: list[str]) -> list[str]:
    packages = environment_packages(path)
    return [
        f"{module} ({' or '.join(sorted(distributions_of(module)))}), imported by {where}"
        for module, where in sorted(third_party_imports(roots).items())
        if not distributions_of(module) & packages
    ]


# -- the modules' rules: the conda: file each names, against its wrapper's or notebook's imports --------------------
RULE_CODE = r"""
print(json.dumps({
    rule.name: {
        "conda": rule.conda_env and str(rule.conda_env),
        "snakefile": str(rule.snakefile),
        "wrapper": rule.wrapper,
        "notebook": rule.notebook,
    }
    for rule in workflow.rules
    if rule.conda_env
}))
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> dict:
    """The main workflow's rules with the demo config and the GAT sweep switched on (every rule there is)."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["kd_gat"]["sweep"] |= {"enabled": True, "table": str(REPO / "config/params.tsv")}
    return parsed_workflow(tmp_path_factory.mktemp("rules"), config, RULE_CODE, cores=64)


def test_the_environment_of_every_rule_has_what_its_code_imports(rules) -> None:
    config_functions = CONFIG_FUNCTIONS.findall((REPO / "config/config.yaml").read_text())
    assert "simcal.models.sir" in config_functions
    assert len(rules) >= 25
    problems = []
    for name, rule in sorted(rules.items()):
        folder = Path(rule["snakefile"]).parent
        environment = (folder / rule["conda"]).resolve()
        if not environment.is_file():
            problems.append(f"{name}: conda {rule['conda']!r} is not a file")
            continue
        if rule["wrapper"]:
            code = REPO / "wrappers" / rule["wrapper"].rsplit("/", 1)[-1] / "wrapper.py"
        else:
            assert rule["notebook"], f"{name} runs neither a wrapper nor a notebook"
            code = (folder / rule["notebook"]).resolve()
        assert code.is_file(), f"{name}: {code}"
        roots = _roots_of_file(code)
        if name.startswith("calibration_"):  # the simulation model and loss targets the config names
            roots += config_functions
        problems += [
            f"{name} ({environment.relative_to(REPO)}): {problem}"
            for problem in missing_from(environment, roots)
        ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", WRAPPER_ENVIRONMENTS, ids=lambda path: path.parent.name)
def test_a_wrappers_own_environment_has_what_the_wrapper_imports(path: Path) -> None:
    """A workflow that calls the wrapper alone (`wrapper: "v0.1.0/wrappers/<name>"`) gets this environment."""
    problems = missing_from(path, _roots_of_file(path.parent / "wrapper.py"))
    assert not problems, f"{path.relative_to(REPO)}: " + "; ".join(problems)


def test_the_reading_of_environments_and_imports_sees_what_each_holds(tmp_path: Path) -> None:
    environment = tmp_path / "environment.yaml"
    environment.write_text(
        "channels: [conda-forge, nodefaults]\n"
        "dependencies:\n"
        "  - python =3.11\n"
        "  - matplotlib-base >=3.8\n"
        "  - dask >=2024.8\n"
        "  - pip\n"
        "  - pip:\n"
        "      - mlflow-skinny==3.17.2\n"
    )
    packages = environment_packages(environment)
    # psutil: a requirement of distributed, which conda-forge's dask brings
    assert {"matplotlib", "dask", "distributed", "psutil", "mlflow-skinny"} <= packages
    assert "torch" not in packages and "httpx" not in packages
    assert distributions_of("sklearn") == {"scikit-learn"} and distributions_of("mlflow") == {"mlflow-skinny"}
    # an import inside a function counts; so does one of a library module that is imported the same way
    imports = third_party_imports(["kdgat.tracking.settings"])
    assert imports["mlflow"] == "src/kdgat/tracking/settings.py"
    assert "httpx" in third_party_imports(["simcal.backends"])
    missing = [line.split(" ")[0] for line in missing_from(environment, ["simcal.backends"])]
    assert "httpx" in missing and "dask" not in missing and "mlflow" not in missing


@pytest.mark.parametrize(
    "path", sorted((REPO / "workflow" / "envs").glob("*.yaml")), ids=lambda path: path.name
)
def test_conda_environments_take_the_headless_matplotlib(path: Path) -> None:
    """The rules draw plots without a display: conda-forge's plain `matplotlib` adds the Qt GUI stack (hundreds of
    MB on every node) that `matplotlib-base` leaves out."""
    names = [
        item.split()[0] for item in yaml.safe_load(path.read_text())["dependencies"] if isinstance(item, str)
    ]
    assert "matplotlib" not in names, f"{path.name}: use matplotlib-base (headless), not matplotlib"

"""The layers of CONTRIBUTING.md hold in the code, counting imports inside functions and importlib calls.

- The library (src/) never imports snakemake; kdgat and simcal never import each other.
- A wrapper imports only the library (kdgat, simcal) and the standard library: every other package reaches it
  through the library, so its environment.yaml needs the library (and the clients of its optional paths:
  test_environments.py). It never edits sys.path.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from testkit import REPO

LIBRARIES = ("kdgat", "simcal")
# resource_history is library too (src/, no Snakemake): the training wrappers mark a resumed job's benchmark with it.
WRAPPER_IMPORTS = {*LIBRARIES, "resource_history"} | set(sys.stdlib_module_names)
# Imports a wrapper still makes until its body becomes one library call (issue 12, simcal's entry points).
# The test below fails once an entry is no longer needed, so that it is removed.
PENDING_WRAPPER_IMPORTS: dict[str, set[str]] = {}


def imported_modules(path: Path, package: str | None = None) -> dict[str, int]:
    """Absolute names of every module a file imports (any depth, importlib.import_module with a literal) -> line."""
    modules = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name: node.lineno for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                modules[".".join(base + ([node.module] if node.module else []))] = node.lineno
            else:
                modules[node.module] = node.lineno
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in {"importlib.import_module", "import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            modules[node.args[0].value] = node.lineno
    return modules


def top(module: str) -> str:
    return module.split(".")[0]


def library_files(library: str) -> list[Path]:
    return sorted((REPO / "src" / library).rglob("*.py"))


def package_of(path: Path) -> str:
    parts = path.relative_to(REPO / "src").with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


@pytest.mark.parametrize("library", LIBRARIES)
def test_library_never_imports_snakemake_or_the_other_library(library: str) -> None:
    (other,) = set(LIBRARIES) - {library}
    files = library_files(library)
    assert len(files) > 5
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in files
        for module, line in imported_modules(path, package_of(path)).items()
        if top(module) in {"snakemake", other}
    ]
    assert not offences, "\n".join(offences)


def test_no_package_of_the_library_imports_snakemake() -> None:
    """Every package under src/ (kdgat and simcal above; resource_history, config_messages, wrapper_rules,
    output_locks, folder_walk, and any added later): what the workflow needs from Snakemake stays in the .smk files
    that call the library."""
    packages = sorted(path.parent.name for path in (REPO / "src").glob("*/__init__.py"))
    shared = {"resource_history", "config_messages", "wrapper_rules", "output_locks", "folder_walk"}
    assert {"kdgat", "simcal"} | shared <= set(packages)
    offences = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for package in packages
        for path in library_files(package)
        for module, line in imported_modules(path, package_of(path)).items()
        if top(module) == "snakemake"
    ]
    assert not offences, "\n".join(offences)


def test_what_both_libraries_share_imports_only_the_standard_library() -> None:
    """wrapper_rules (the check of a rule's names that kdgat's and simcal's wrappers share), output_locks (the
    lock of an output that one process writes at a time) and folder_walk (the walk of a folder tree that simcal and
    resource_history share) may not bring one library, Snakemake or any other package into the other. output_locks
    may import wrapper_rules (its refusals are wrapper_rules.InputError), never the reverse; a package may import its
    own modules (wrapper_rules.memory)."""
    wrapper_rules = sorted((REPO / "src" / "wrapper_rules").rglob("*.py"))
    output_locks = sorted((REPO / "src" / "output_locks").rglob("*.py"))
    folder_walk = sorted((REPO / "src" / "folder_walk").rglob("*.py"))
    for files, allowed in (
        (wrapper_rules, {"wrapper_rules"}),
        (output_locks, {"wrapper_rules"}),
        (folder_walk, set()),
    ):
        modules = {top(module) for path in files for module in imported_modules(path, package_of(path))}
        assert files and modules <= set(sys.stdlib_module_names) | {"__future__"} | allowed, files


WRAPPERS = sorted((REPO / "wrappers").glob("*/wrapper.py"))


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda p: p.parent.name)
def test_wrapper_imports_only_the_library_and_the_standard_library(wrapper: Path) -> None:
    allowed = WRAPPER_IMPORTS | PENDING_WRAPPER_IMPORTS.get(wrapper.parent.name, set())
    modules = imported_modules(wrapper)
    offences = [f"line {line}: {module}" for module, line in modules.items() if top(module) not in allowed]
    assert not offences, (
        f"{wrapper.relative_to(REPO)} imports more than the libraries and the stdlib: {offences}"
    )
    assert {top(m) for m in modules} & set(LIBRARIES), f"{wrapper.relative_to(REPO)} calls no library"
    pending = PENDING_WRAPPER_IMPORTS.get(wrapper.parent.name, set())
    assert pending <= {top(m) for m in modules}, f"remove {pending} from PENDING_WRAPPER_IMPORTS"
    tree = ast.parse(wrapper.read_text())
    edits = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.path"
    ]
    assert not edits, f"{wrapper.relative_to(REPO)}:{edits} touches sys.path; the library is installed"


def test_the_guard_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "import os\n"
        "def f():\n"
        "    from snakemake.io import expand\n"
        "    from ..simcal import runner\n"
        "    importlib.import_module('kdgat.graphs')\n"
    )
    assert set(imported_modules(source, "kdgat.training")) == {
        "os",
        "snakemake.io",
        "kdgat.simcal",
        "kdgat.graphs",
    }

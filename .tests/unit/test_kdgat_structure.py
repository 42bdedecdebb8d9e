"""kdgat's internal structure: no import cycle (imports inside functions count), data flows from the lower layers
up; and no library file (any package under src/: kdgat, simcal, resource_history, ...) grows past 500 lines
unless it is one cohesive kernel."""

from __future__ import annotations

import ast
from pathlib import Path

from testkit import REPO

SRC = REPO / "src"
PACKAGE = SRC / "kdgat"
# The command line on top (it makes the wrappers' calls); what the wrappers call; the stores and scoring they build
# on; everything else (formats, graphs, models, presets, losses, runtime, files, chain, tracking) is the bottom
# layer. A module never imports one of a higher layer.
ENTRY = ("kdgat.cli", "kdgat.__main__")  # `python -m kdgat` is the same command
TOP = ("kdgat.preprocess", "kdgat.training", "kdgat.evaluation")
MIDDLE = ("kdgat.graph_store", "kdgat.model_store", "kdgat.inference", "kdgat.synthetic")
MAX_LINES = 500
KERNELS = {"kdgat.graphs"}  # one vectorised windows-to-graphs kernel; cutting it would hurt more than help


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """kdgat modules ``name`` imports anywhere in its file (module level, functions, methods)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        else:
            continue
        found |= {target for target in targets if target in MODULES and target != name}
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def layer(name: str) -> int:
    if name.startswith(ENTRY):
        return 3
    if name.startswith(TOP):
        return 2
    return 1 if name in MIDDLE else 0


def test_the_import_graph_sees_imports_inside_functions():
    # evaluation.run imports the model store only when it evaluates a detector (inside evaluate_files)
    assert "kdgat.model_store" in GRAPH["kdgat.evaluation.run"]
    assert "kdgat.can.hcrl_csv" in GRAPH["kdgat.can.formats"]


def test_no_import_cycle_between_kdgat_modules():
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target) :] + [target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(name)
    ]
    assert not upward, upward


def library_files() -> dict[str, Path]:
    """Every module of every package under src/ (a package: a folder holding __init__.py), by module name."""
    packages = sorted(path.parent for path in SRC.glob("*/__init__.py"))
    return {module_name(path): path for package in packages for path in sorted(package.rglob("*.py"))}


def test_the_line_limit_covers_every_package_under_src():
    covered = {name.split(".")[0] for name in library_files()}
    on_disk = {path.parent.name for path in SRC.glob("*/__init__.py")}
    assert covered == on_disk and {"kdgat", "simcal", "resource_history", "wrapper_rules"} <= covered
    assert "simcal.service.jobs" in library_files() and "kdgat.graphs" in library_files()


def test_library_files_stay_small_unless_they_are_one_kernel():
    large = {
        name: len(path.read_text().splitlines())
        for name, path in library_files().items()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert set(large) <= KERNELS, large


def private_names_imported(path: Path) -> list[str]:
    """``module.name`` for each name with a leading underscore that ``path`` imports from a module of src/."""
    packages = {package.parent.name for package in SRC.glob("*/__init__.py")}
    return [
        f"{node.module}.{alias.name}"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in packages
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]


def test_the_private_name_check_sees_a_private_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from simcal.sweep_failures import TooManyFailures\nfrom simcal.store import _hidden, shown\n"
    )
    assert private_names_imported(module) == ["simcal.store._hidden"]


def test_no_library_module_imports_a_private_name_of_another():
    """A helper one module of the library uses from another is public there (no leading underscore, a
    docstring), or lives where it is used: an underscore says only this file uses it."""
    imported = {
        name: found for name, path in library_files().items() if (found := private_names_imported(path))
    }
    assert not imported, imported

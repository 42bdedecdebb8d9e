"""What a wrapper.py reads from ``snakemake.input/output/params``, found by parsing its AST (never run).

Used by the meta.yaml test: every name a wrapper reads must be declared in its meta.yaml, every declared name
must be read, and the ``optional``/``default`` a meta.yaml states must be what the code does.

Recognised reads (``S`` is ``snakemake.input``, ``.output`` or ``.params``, or a local alias ``x = S``):
``S.name``, ``S["name"]``, ``S[0]`` (positional), ``S.get("name"[, default])``, and keys computed from a
literal tuple or a library constant in a comprehension or ``for`` loop (``S.get(f"teacher_{n}") for n in
("a", "b")``). ``S.get("name", S[0])`` reads ``name`` with a positional fallback. ``configure_wrapper(what, snakemake.log,
{"input": snakemake.input, ...}, TAKES, OPTIONAL)`` reads none: it checks the names a rule gives against
``TAKES`` and ``OPTIONAL`` (``Reads.takes``, ``Reads.optional``: literal dicts of tuples assigned at the top of
the file; an ``OPTIONAL`` section may be ``ALL``, imported from the library: every name of its ``TAKES``, which
``Reads.optional`` lists). Any other use of ``S``
(``**S``, ``S.items()``, ``dict(S)``) hands the whole section to the library: then the names must be
keyword parameters of the library function it is passed to, and the defaults are that function's defaults.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
from dataclasses import dataclass, field
from pathlib import Path

SECTIONS = ("input", "output", "params")
MISSING = object()  # read without a default: required


@dataclass
class Read:
    """One name (or position) of a section, and how the wrapper reads it."""

    required: bool = False  # read at least once without .get
    defaults: list = field(
        default_factory=list
    )  # the literal defaults of its .get calls (MISSING: not literal)
    has_fallback: bool = False  # .get(name, S[i]): a positional item stands in


@dataclass
class Reads:
    path: Path
    sections: dict[str, dict[str | int, Read]] = field(default_factory=lambda: {s: {} for s in SECTIONS})
    # Sections handed over whole: section -> the library callables they are passed to (may be empty)
    passed_whole: dict[str, list] = field(default_factory=dict)
    # What the wrapper tells configure_wrapper it takes, and what of that a rule may leave out, per section (None:
    # it does not call it)
    takes: dict[str, list] | None = None
    optional: dict[str, list] | None = None

    def read(self, section: str, key: str | int) -> Read:
        return self.sections[section].setdefault(key, Read())


class UnresolvedRead(AssertionError):
    pass


def wrapper_reads(path: Path) -> Reads:
    tree = ast.parse(path.read_text(), filename=str(path))
    return _Walker(path, tree).reads


class _Walker(ast.NodeVisitor):
    def __init__(self, path: Path, tree: ast.Module) -> None:
        self.reads = Reads(path)
        self.imports: dict[str, tuple[str, str]] = {}  # local name -> (module, attribute)
        self.aliases: dict[str, str] = {}  # local name -> section
        self.scopes: list[dict[str, list[str]]] = []  # loop variable -> the keys it takes
        self.handled: set[int] = set()  # ids of section expressions consumed by a recognised read
        self.alias_sources: set[int] = set()
        self.constants: dict[str, object] = {}  # top-level NAME = <literal>
        self.dicts: dict[str, ast.Dict] = {}  # top-level NAME = {<key>: <literal or imported name>}
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                try:
                    self.constants[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    if isinstance(node.value, ast.Dict):
                        self.dicts[node.targets[0].id] = node.value
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (node.module, alias.name)
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                section = self._direct_section(node.value)
                if section:
                    self.aliases[node.targets[0].id] = section
                    self.alias_sources.add(id(node.value))
        self.visit(tree)
        self._find_whole_uses(tree)

    # -- where a section appears ------------------------------------------------------------------
    @staticmethod
    def _direct_section(node: ast.AST) -> str | None:
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "snakemake"
            and node.attr in SECTIONS
        ):
            return node.attr
        return None

    def section(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name) and node.id in self.aliases:
            return self.aliases[node.id]
        return self._direct_section(node)

    def fail(self, node: ast.AST, what: str) -> UnresolvedRead:
        return UnresolvedRead(f"{self.reads.path}:{node.lineno}: {what}: {ast.unparse(node)}")

    # -- keys -------------------------------------------------------------------------------------
    def keys(self, node: ast.AST) -> list[str | int]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str | int):
            return [node.value]
        if isinstance(node, ast.Name):
            for scope in reversed(self.scopes):
                if node.id in scope:
                    return scope[node.id]
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append([str(value.value)])
                elif (
                    isinstance(value, ast.FormattedValue) and value.conversion == -1 and not value.format_spec
                ):
                    parts.append([str(key) for key in self.keys(value.value)])
                else:
                    raise self.fail(node, "cannot tell which name this reads")
            return ["".join(combo) for combo in itertools.product(*parts)]
        raise self.fail(node, "cannot tell which name this reads")

    def iteration_values(self, node: ast.AST) -> list[str]:
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and all(
            isinstance(element, ast.Constant) for element in node.elts
        ):
            return [element.value for element in node.elts]
        if isinstance(node, ast.Name) and node.id in self.imports:
            module, attribute = self.imports[node.id]
            return list(getattr(importlib.import_module(module), attribute))
        return []  # not a loop over names: nothing to bind

    def _bind(self, target: ast.AST, iterable: ast.AST) -> dict[str, list[str]]:
        if isinstance(target, ast.Name):
            values = self.iteration_values(iterable)
            if values:
                return {target.id: values}
        return {}

    # -- visiting ---------------------------------------------------------------------------------
    def _visit_comprehension(self, node: ast.AST, *elements: ast.AST) -> None:
        scope: dict[str, list[str]] = {}
        for generator in node.generators:
            self.visit(generator.iter)
            scope |= self._bind(generator.target, generator.iter)
        self.scopes.append(scope)
        for generator in node.generators:
            for condition in generator.ifs:
                self.visit(condition)
        for element in elements:
            self.visit(element)
        self.scopes.pop()

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._visit_comprehension(node, node.elt)

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._visit_comprehension(node, node.key, node.value)

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self.scopes.append(self._bind(node.target, node.iter))
        for statement in node.body + node.orelse:
            self.visit(statement)
        self.scopes.pop()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        section = self.section(node.value)
        if section and node.attr not in {"get", "items", "keys", "values"}:
            self.handled.add(id(node.value))
            self.reads.read(section, node.attr).required = True
            return
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        section = self.section(node.value)
        if section:
            self.handled.add(id(node.value))
            for key in self.keys(node.slice):
                self.reads.read(section, key).required = True
            return
        self.generic_visit(node)

    def _optional_with_all(self, node: ast.Dict) -> dict[str, list]:
        """OPTIONAL with ``ALL`` (wrapper_rules.ALL, imported from the library) for a section: the names of that
        section's TAKES; any other value must be a literal."""
        from wrapper_rules import ALL

        optional = {}
        for key, value in zip(node.keys, node.values, strict=True):
            section = ast.literal_eval(key)
            if isinstance(value, ast.Name) and value.id in self.imports:
                module, attribute = self.imports[value.id]
                if getattr(importlib.import_module(module), attribute) != ALL or self.reads.takes is None:
                    raise self.fail(value, f"OPTIONAL[{section!r}] must be a literal tuple or ALL")
                optional[section] = [k for k in self.reads.takes.get(section, []) if isinstance(k, str)]
            else:
                optional[section] = list(ast.literal_eval(value))
        return optional

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "configure_wrapper":
            # it reads no name: it checks the names a rule gives against the wrapper's TAKES
            arguments = node.args + [keyword.value for keyword in node.keywords]
            for argument in arguments:
                for sub in ast.walk(argument):
                    if self.section(sub):
                        self.handled.add(id(sub))
            for position, name in ((3, "takes"), (4, "optional")):
                given = node.args[position] if len(node.args) > position else None
                given = next((k.value for k in node.keywords if k.arg == name), given)
                if isinstance(given, ast.Name) and isinstance(self.constants.get(given.id), dict):
                    constant = self.constants[given.id]
                    setattr(self.reads, name, {key: list(value) for key, value in constant.items()})
                elif name == "optional" and isinstance(given, ast.Name) and given.id in self.dicts:
                    self.reads.optional = self._optional_with_all(self.dicts[given.id])
                elif given is not None:
                    raise self.fail(given, f"configure_wrapper's {name} must be the name of a literal dict")
            return
        if isinstance(func, ast.Attribute) and func.attr == "get" and self.section(func.value):
            section = self.section(func.value)
            self.handled.add(id(func.value))
            default = node.args[1] if len(node.args) > 1 else None
            fallback = (
                isinstance(default, ast.Subscript)
                and self.section(default.value) == section
                and isinstance(default.slice, ast.Constant)
            )
            for key in self.keys(node.args[0]):
                read = self.reads.read(section, key)
                if fallback:
                    self.handled.add(id(default.value))
                    read.has_fallback = True
                    read.defaults.append(MISSING)
                else:
                    read.defaults.append(_literal(default))
            if default is not None and not fallback:
                self.visit(default)
            return
        self.generic_visit(node)

    # -- sections handed over whole ---------------------------------------------------------------
    def _unhandled_section(self, node: ast.AST) -> str | None:
        section = self.section(node)
        if not section or id(node) in self.handled or id(node) in self.alias_sources:
            return None
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            return None
        return section

    def _find_whole_uses(self, tree: ast.Module) -> None:
        for node in ast.walk(tree):
            section = self._unhandled_section(node)
            if section:
                self.reads.passed_whole.setdefault(section, [])
        for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
            for keyword in call.keywords:
                if keyword.arg is None:  # **something
                    inner = {self._unhandled_section(sub) for sub in ast.walk(keyword.value)} - {None}
                    for section in inner:
                        self.reads.passed_whole[section].append(self.callable(call.func))

    def callable(self, func: ast.AST):
        if isinstance(func, ast.Name) and func.id in self.imports:
            module, attribute = self.imports[func.id]
            return getattr(importlib.import_module(module), attribute)
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.imports
        ):
            module, attribute = self.imports[func.value.id]
            owner = importlib.import_module(f"{module}.{attribute}")
            return getattr(owner, func.attr)
        raise self.fail(func, "a section is handed to something that is not a library function")


def _literal(node: ast.AST | None):
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return MISSING


def signature_defaults(function) -> dict[str, object]:
    """Keyword parameters of a library function -> default (MISSING when it has none)."""
    parameters = inspect.signature(function).parameters.values()
    return {
        p.name: (MISSING if p.default is inspect.Parameter.empty else p.default)
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }

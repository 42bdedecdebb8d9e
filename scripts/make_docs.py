#!/usr/bin/env python3
"""Regenerate the documentation that is derived from the workflow itself (`make docs`).

From `snakemake --forceall --rulegraph` of the main workflow with its default config:
  docs/rulegraph.dot, docs/rulegraph.mmd, docs/rulegraph.svg (rendered with Graphviz `dot`) and the Mermaid block
  in README.md between `<!-- rulegraph:start -->` and `<!-- rulegraph:end -->`.
From the config schemas (workflow/schemas/config.schema.yaml and the module schemas it references):
  config/README.md, every key per section with its type, default and description.

`--check` writes nothing and exits 1 when a committed file is stale (the SVG is not compared: its bytes depend on
the Graphviz version). Snakemake prints the rule graph's edges in set order, so nodes and edges are renumbered and
sorted here to keep the text deterministic.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
CONFIG_README = REPO / "config" / "README.md"
MAIN_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
START, END = "<!-- rulegraph:start -->", "<!-- rulegraph:end -->"

CONFIG_INTRO = """\
# Configuration

`config/config.yaml` is the embedded default: two small synthetic CAN datasets and a toy SIR calibration, so
`snakemake --cores 2` (or `make demo`) runs without arguments. Use your own with
`snakemake --cores 2 --configfile my.yaml`: it is merged onto `config/config.yaml` (the Snakefile's `configfile:`), so
keys you leave out keep that file's values, its demo datasets too; add `--replace-workflow-config` to start from the
defaults below instead. The whole config is validated once
by the main workflow against `workflow/schemas/config.schema.yaml`, and each module validates the sections it
reads against its own `workflow/modules/<name>/schemas/config.schema.yaml`, so a typo or a wrong type stops the
run before any job starts; the main workflow's message starts with one line per bad key: its dotted name, the
config file (or `--config`) that set it and what was expected
(`.tests/unit/test_config_validation.py::test_a_config_the_schema_refuses_is_named_by_dotted_key_and_the_file_that_set_it`).
A number that is not finite (YAML's `.inf` or `.nan`, which pass every bound of a schema) is refused anywhere
in the config, naming its key
(`.tests/unit/test_config_validation.py::test_a_number_that_is_not_finite_is_refused_naming_its_key`).
`--config` reads the values inside a mapping as text (`--config 'kd_gat={seeds: [1]}'` gives the string `'1'`,
which is refused): put nested numbers and booleans in a `--configfile`. A `--config` or `--configfile` mapping
replaces only the keys it names; a list replaces the whole list.

The tables below are generated from those schemas by `scripts/make_docs.py` (`make docs`); do not edit them by
hand. `<name>` stands for a key you choose (a dataset name, a preset name); `[]` for the items of a list.
"""


# ------------------------------------------------------------------------------------------------------------------
# Rule graph
# ------------------------------------------------------------------------------------------------------------------
def snakemake_rulegraph(fmt: str) -> str:
    snakemake = Path(sys.executable).with_name("snakemake")
    command = [str(snakemake) if snakemake.exists() else "snakemake", "--forceall", "--rulegraph", fmt]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed in {REPO}:\n{proc.stderr[-4000:]}")
    return proc.stdout


def canonical_dot(text: str) -> str:
    node = re.compile(r'^\s*(\d+)\[label = "([^"]+)"(.*)\];\s*$')
    edge = re.compile(r"^\s*(\d+) -> (\d+)\s*$")
    header, nodes, edges = [], {}, set()
    for line in text.splitlines():
        if match := node.match(line):
            nodes[match.group(1)] = (match.group(2), match.group(3))
        elif match := edge.match(line):
            edges.add((match.group(1), match.group(2)))
        elif line.strip() and line.strip() != "}" and line.startswith(("digraph", " ", "\t")):
            header.append(re.sub(r"\s+", " ", line.strip()))
    if not nodes:
        raise SystemExit("snakemake --rulegraph dot printed no rules")
    ids = {old: new for new, old in enumerate(sorted(nodes, key=lambda n: nodes[n][0]))}
    lines = [header[0]] + [f"    {line}" for line in header[1:]]
    for old in sorted(nodes, key=ids.get):
        label, rest = nodes[old]
        lines.append(f'    {ids[old]}[label = "{label}"{rest}];')
    for source, target in sorted((ids[s], ids[t]) for s, t in edges):
        lines.append(f"    {source} -> {target}")
    return "\n".join(lines) + "\n}\n"


def canonical_mermaid(text: str) -> str:
    node = re.compile(r"^\s*id(\d+)\[([^\]]+)\]\s*$")
    style = re.compile(r"^\s*style id(\d+) (.*)$")
    edge = re.compile(r"^\s*id(\d+) --> id(\d+)\s*$")
    header, nodes, styles, edges = [], {}, {}, set()
    for line in text.splitlines():
        if match := node.match(line):
            nodes[match.group(1)] = match.group(2)
        elif match := style.match(line):
            styles[match.group(1)] = match.group(2).strip()
        elif match := edge.match(line):
            edges.add((match.group(1), match.group(2)))
        elif line.strip():
            header.append(line.strip())
    if not nodes:
        raise SystemExit("snakemake --rulegraph mermaid-js printed no rules")
    ids = {old: new for new, old in enumerate(sorted(nodes, key=nodes.get))}
    lines = list(header)
    order = sorted(nodes, key=ids.get)
    lines += [f"    id{ids[old]}[{nodes[old]}]" for old in order]
    lines += [f"    style id{ids[old]} {styles[old]}" for old in order if old in styles]
    lines += [f"    id{s} --> id{t}" for s, t in sorted((ids[s], ids[t]) for s, t in edges)]
    return "\n".join(lines) + "\n"


def readme_with_block(readme: str, mermaid: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the markers {START} and {END}")
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n```mermaid\n{mermaid}```\n{END}{after}"


def render_svg(dot_text: str) -> bytes:
    dot = shutil.which("dot")
    if dot is None:
        raise SystemExit("Graphviz `dot` is not installed (Debian: apt-get install graphviz)")
    proc = subprocess.run([dot, "-Tsvg"], input=dot_text.encode(), capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"dot -Tsvg failed: {proc.stderr.decode()[-2000:]}")
    return proc.stdout


# ------------------------------------------------------------------------------------------------------------------
# Config reference from the schemas
# ------------------------------------------------------------------------------------------------------------------
def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def resolve(schema: dict, document: dict) -> dict:
    """Follow a local `$ref` ("#/$defs/name") within the schema's own file."""
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise SystemExit(f"only local $ref are supported inside a module schema, found {ref!r}")
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def type_text(schema: dict, document: dict) -> str:
    schema = resolve(schema, document)
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(type_text(option, document) for option in schema[key])
    kind = schema.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if "enum" in schema:
        return f"{kind}: " + ", ".join(f"`{value}`" for value in schema["enum"])
    if kind == "array" and "items" in schema:
        return f"list of {type_text(schema['items'], document)}"
    bounds = []
    for key, symbol in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            bounds.append(f"{symbol} {schema[key]}")
    return f"{kind} ({', '.join(bounds)})" if bounds else kind


def cell(text: str) -> str:
    """One Markdown table cell: one line, `|` escaped, `<...>` outside code spans escaped (not read as HTML)."""
    parts = re.sub(r"\s+", " ", str(text)).strip().replace("|", "\\|").split("`")
    parts[::2] = [part.replace("<", "&lt;").replace(">", "&gt;") for part in parts[::2]]
    return "`".join(parts)


def default_text(schema: dict) -> str:
    if "default" not in schema:
        return "required" if schema.get("_required") else "—"
    return f"`{json.dumps(schema['default'], ensure_ascii=False)}`"


def rows_for(
    name: str, schema: dict, document: dict, required: bool = False
) -> list[tuple[str, str, str, str]]:
    schema = resolve(schema, document)
    if required:
        schema = {**schema, "_required": True}
    rows = [(name, type_text(schema, document), default_text(schema), schema.get("description", ""))]
    for child, child_schema in schema.get("properties", {}).items():
        rows += rows_for(f"{name}.{child}", child_schema, document, child in schema.get("required", []))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        extra = resolve(extra, document)
        if "properties" in extra:
            rows += [row for row in rows_for(f"{name}.<name>", extra, document)]
    items = resolve(schema["items"], document) if isinstance(schema.get("items"), dict) else {}
    for child, child_schema in items.get("properties", {}).items():
        rows += rows_for(f"{name}[].{child}", child_schema, document, child in items.get("required", []))
    return rows


def config_reference() -> str:
    main = load_yaml(MAIN_SCHEMA)
    sections: list[tuple[str, str, dict, dict]] = []  # (section, source, schema, document)
    for key, schema in main.get("properties", {}).items():
        sections.append((key, str(MAIN_SCHEMA.relative_to(REPO)), schema, main))
    for part in main.get("allOf", []):
        path = (MAIN_SCHEMA.parent / part["$ref"]).resolve()
        document = load_yaml(path)
        for key, schema in document.get("properties", {}).items():
            sections.append((key, str(path.relative_to(REPO)), schema, document))
    order = main.get("propertyNames", {}).get("enum", [])
    sections.sort(key=lambda s: order.index(s[0]) if s[0] in order else len(order))
    out = [CONFIG_INTRO]
    for key, source, schema, document in sections:
        resolved = resolve(schema, document)
        out.append(f"\n## `{key}`\n")
        out.append(f"{cell(resolved.get('description', ''))}\n\nSchema: `{source}`.\n")
        out.append("| key | type | default | description |\n|---|---|---|---|")
        for name, kind, default, description in rows_for(key, schema, document)[1:]:
            out.append(f"| `{name}` | {cell(kind)} | {cell(default)} | {cell(description)} |")
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------------------------
def generated_text() -> dict[Path, str]:
    dot_text = canonical_dot(snakemake_rulegraph("dot"))
    mermaid = canonical_mermaid(snakemake_rulegraph("mermaid-js"))
    return {
        DOCS / "rulegraph.dot": dot_text,
        DOCS / "rulegraph.mmd": mermaid,
        README: readme_with_block(README.read_text(), mermaid),
        CONFIG_README: config_reference(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files, write nothing"
    )
    args = parser.parse_args(argv)
    files = generated_text()
    if args.check:
        stale = []
        for path, text in files.items():
            current = path.read_text() if path.exists() else ""
            if current != text:
                stale.append(path)
                diff = difflib.unified_diff(
                    current.splitlines(), text.splitlines(), str(path), "generated", lineterm="", n=1
                )
                print("\n".join(list(diff)[:40]), file=sys.stderr)
        if stale:
            names = ", ".join(str(p.relative_to(REPO)) for p in stale)
            print(f"stale generated docs: {names}; run `make docs` and commit", file=sys.stderr)
            return 1
        print("docs are up to date")
        return 0
    DOCS.mkdir(exist_ok=True)
    for path, text in files.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    svg = DOCS / "rulegraph.svg"
    tmp = svg.with_name(".rulegraph.svg.tmp")
    tmp.write_bytes(render_svg(files[DOCS / "rulegraph.dot"]))
    tmp.replace(svg)
    print("wrote " + ", ".join(str(p.relative_to(REPO)) for p in [*files, svg]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

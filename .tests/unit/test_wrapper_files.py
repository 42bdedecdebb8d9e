"""Every wrapper folder is complete and tells the truth: meta.yaml against its wrapper.py, environment.yaml
against pyproject.toml (the release the wrapper installs, and the versions pyproject pins)."""

from __future__ import annotations

import ast
import re
import textwrap
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from testkit import REPO, parsed_workflow
from wrapperkit import MISSING, SECTIONS, signature_defaults, wrapper_reads

from wrapper_rules import InputRefused

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
REPOSITORY = PROJECT["urls"]["Repository"]
WRAPPERS = sorted(path.parent for path in (REPO / "wrappers").glob("*/wrapper.py"))
META_SCHEMA = yaml.safe_load((REPO / "wrappers" / "meta.schema.yaml").read_text())
# Environment files that Snakemake builds for the catalog's code with --sdm conda: each wrapper's own, and the
# ones the modules' rules name with conda: (they take precedence over the wrapper's).
ENVIRONMENTS = [path / "environment.yaml" for path in WRAPPERS] + sorted(
    (REPO / "workflow/envs").glob("*.yaml")
)


def ids(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_every_wrapper_folder_has_the_snakemake_wrappers_files() -> None:
    assert len(WRAPPERS) >= 13
    for folder in WRAPPERS:
        missing = [
            name
            for name in ("meta.yaml", "environment.yaml", "test/Snakefile")
            if not (folder / name).is_file()
        ]
        assert not missing, f"{ids(folder)} lacks {missing}"


@pytest.mark.parametrize("folder", WRAPPERS, ids=lambda p: p.name)
def test_meta_yaml_follows_the_schema_and_says_where_the_wrapper_lives(folder: Path) -> None:
    meta = yaml.safe_load((folder / "meta.yaml").read_text())
    jsonschema.validate(meta, META_SCHEMA)
    assert meta["name"] == folder.name
    assert meta["url"] == f"{REPOSITORY}/tree/main/wrappers/{folder.name}"
    for section in SECTIONS:
        for key in meta.get(section) or {}:
            assert isinstance(key, str | int), f"{section}.{key!r}: a name or a position"
            assert section == "params" or "default" not in meta[section][key], f"{section}.{key}: default"


# Params a wrapper takes and does not read, which its meta.yaml declares so that a rule may set them without a
# warning: the between-workflow cache key of build_graphs, and of the logs generate_can writes for it (their
# meta.yaml's notes), and the digests of the user's code a calibration rule calls (simcal.model_code.code_digests),
# which rerun its job when that code changes.
NOT_FOR_THE_WRAPPER = {
    "build_graphs": {"roles_of_logs", "library_code"},
    "generate_can": {"library_code"},
    **{name: {"code"} for name in ("sample_design", "generate_observed", "simulate", "calibrate")},
}


@pytest.mark.parametrize("folder", WRAPPERS, ids=lambda p: p.name)
def test_meta_yaml_declares_exactly_what_the_wrapper_reads(folder: Path) -> None:
    meta = yaml.safe_load((folder / "meta.yaml").read_text())
    reads = wrapper_reads(folder / "wrapper.py")
    problems = []
    for section in SECTIONS:
        declared = meta.get(section) or {}
        read = reads.sections[section]
        problems += [
            f"reads {section}.{key} but meta.yaml does not declare it" for key in read if key not in declared
        ]
        library = reads.passed_whole.get(section)
        taken_unread = NOT_FOR_THE_WRAPPER.get(folder.name, set()) if section == "params" else set()
        if library is None:
            problems += [
                f"meta.yaml declares {section}.{key} but the wrapper never reads it"
                for key in declared
                if key not in read and key not in taken_unread
            ]
            accepted = {}
        else:  # the section is handed to library functions: their keyword parameters are what it takes
            accepted = {}
            for function in library:
                accepted |= signature_defaults(function)
            problems += [
                f"meta.yaml declares {section}.{key}, which neither the wrapper nor {[f.__name__ for f in library]} reads"
                for key in declared
                if key not in read and key not in accepted and key not in taken_unread
            ]
        for key, entry in declared.items():
            meta_optional = entry.get("optional", False) or "default" in entry
            if key in read:
                code_optional = not read[key].required and not read[key].has_fallback
                defaults = [d for d in read[key].defaults if d is not None and d is not MISSING]
            elif key in accepted:
                code_optional = accepted[key] is not MISSING
                defaults = [] if accepted[key] in (None, MISSING) else [accepted[key]]
            else:
                continue
            if meta_optional and not code_optional:
                problems.append(f"meta.yaml calls {section}.{key} optional, but the wrapper needs it")
            if section != "params":
                continue  # an optional input or output may also be read as required: only the claim is checked
            if code_optional and not meta_optional:
                problems.append(
                    f"params.{key} is optional in the wrapper: meta.yaml must say so (optional/default)"
                )
            if defaults and _plain(entry.get("default", MISSING)) != _plain(defaults[0]):
                problems.append(
                    f"params.{key}: the wrapper's default is {defaults[0]!r}, meta.yaml says {entry.get('default')!r}"
                )
            if "default" in entry and not defaults:
                problems.append(
                    f"params.{key}: meta.yaml states a default {entry['default']!r} the wrapper does not have"
                )
    assert not problems, f"{ids(folder)}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("folder", WRAPPERS, ids=lambda p: p.name)
def test_the_names_a_wrapper_warns_about_are_the_ones_meta_yaml_does_not_name(folder: Path) -> None:
    # Remote users get wrapper.py alone, so the names it checks a rule's inputs, outputs and params against are
    # written in it (TAKES); a name added to meta.yaml and not there would be logged as unknown, one left there
    # would never be. A section read by position, or by name with the first item as fallback, lists 0 too.
    meta = yaml.safe_load((folder / "meta.yaml").read_text())
    reads = wrapper_reads(folder / "wrapper.py")
    expected = {}
    for section in SECTIONS:
        expected[section] = list(meta.get(section) or {})
        if any(read.has_fallback for read in reads.sections[section].values()):
            expected[section].append(0)
    assert reads.takes == expected, (
        f"{ids(folder)}: TAKES in wrapper.py must list meta.yaml's names, in its order"
    )


@pytest.mark.parametrize("folder", WRAPPERS, ids=lambda p: p.name)
def test_the_names_a_wrapper_lets_a_rule_leave_out_are_the_ones_meta_yaml_calls_optional(
    folder: Path,
) -> None:
    # A rule that lacks a name of TAKES is refused before anything runs unless OPTIONAL (also written in wrapper.py,
    # for remote users) lists it: a name optional in meta.yaml and missing there would refuse rules that the docs
    # allow, a required one listed there would let a rule through to an AttributeError after set-up.
    meta = yaml.safe_load((folder / "meta.yaml").read_text())
    expected = {
        section: [
            key
            for key, entry in (meta.get(section) or {}).items()
            if entry.get("optional") or "default" in entry
        ]
        for section in SECTIONS
    }
    assert wrapper_reads(folder / "wrapper.py").optional == expected, (
        f"{ids(folder)}: OPTIONAL in wrapper.py must list, per section, meta.yaml's optional names, in its order"
    )


def _plain(value):
    """Tuples as lists, so that a YAML default compares equal to a Python one."""
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


# -- environment.yaml -----------------------------------------------------------------------------------------------
def _pip_requirements(environment: dict) -> list[Requirement]:
    pip = [item["pip"] for item in environment["dependencies"] if isinstance(item, dict) and "pip" in item]
    return [Requirement(line) for block in pip for line in block]


def _conda_specs(environment: dict) -> dict[str, str]:
    specs = {}
    for item in environment["dependencies"]:
        if isinstance(item, str):
            name, _, spec = item.partition(" ")
            specs[name] = spec.replace(" ", "")
    return specs


# conda-forge names of pyproject dependencies where they differ
CONDA_NAMES = {"matplotlib-base": "matplotlib", "distributed": "dask", "pytorch": "torch"}


@pytest.mark.parametrize("path", ENVIRONMENTS, ids=ids)
def test_environment_installs_this_release_of_the_library(path: Path) -> None:
    environment = yaml.safe_load(path.read_text())
    assert environment["channels"][-1] == "nodefaults"
    library = [r for r in _pip_requirements(environment) if r.name == PROJECT["name"]]
    assert len(library) == 1, (
        f"{ids(path)}: no pip entry for {PROJECT['name']} (the library the wrapper imports)"
    )
    assert library[0].url == f"git+{REPOSITORY}@v{PROJECT['version']}", (
        f"{ids(path)}: install {PROJECT['name']} @ git+{REPOSITORY}@v{PROJECT['version']} (pyproject's version)"
    )
    python = _conda_specs(environment)["python"].lstrip("=")
    floor = PROJECT["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("."))) >= tuple(map(int, floor.split("."))), (
        f"{ids(path)}: python {python}"
    )


@pytest.mark.parametrize("path", ENVIRONMENTS, ids=ids)
def test_environment_pins_what_pyproject_pins(path: Path) -> None:
    environment = yaml.safe_load(path.read_text())
    lines = PROJECT["dependencies"] + [
        line for extra in PROJECT["optional-dependencies"].values() for line in extra
    ]
    pyproject = {r.name: r for r in map(Requirement, lines) if r.name != PROJECT["name"]}
    listed = {r.name: str(r.specifier) for r in _pip_requirements(environment) if r.name != PROJECT["name"]}
    for name, spec in _conda_specs(environment).items():
        listed[CONDA_NAMES.get(name, name)] = (
            spec.replace("=", "==", 1) if spec[:1] == "=" and spec[1:2] != "=" else spec
        )
    for name, spec in listed.items():
        if name in pyproject:
            assert set(spec.split(",")) == set(str(pyproject[name].specifier).split(",")), (
                f"{ids(path)}: {name} {spec}, pyproject.toml says {pyproject[name].specifier}"
            )
        # a CUDA- or CPU-specific build (+cu126, +cpu) would tie the environment to one kind of machine
        assert "+" not in spec, (
            f"{ids(path)}: {name} {spec} names a local build; keep the pin CPU/CUDA-neutral"
        )


def test_every_wrapper_shares_one_environment() -> None:
    # Snakemake keys conda environments by content: one file content means one environment for all wrappers.
    contents = {path.read_text() for path in ENVIRONMENTS if path.parent.parent.name == "wrappers"}
    assert len(contents) == 1


def test_the_reader_of_wrappers_sees_every_kind_of_read(tmp_path: Path) -> None:
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(
        "from json import dumps\n"
        "from string import digits\n"
        "params = snakemake.params\n"
        "a = snakemake.input.get('trials', snakemake.input[0])\n"
        "b = {n: snakemake.output[n] for n in digits}\n"
        "c = [snakemake.input.get(f'teacher_{s}') for s in ('vgae', 'gat')]\n"
        "for key in ('x', 'y'):\n"
        "    params.get(key, 3)\n"
        "dumps(seed=params.seed, **dict(params.items()))\n"
    )
    reads = wrapper_reads(wrapper)
    assert set(reads.sections["input"]) == {"trials", "teacher_vgae", "teacher_gat"}
    assert reads.sections["input"]["trials"].has_fallback
    assert set(reads.sections["output"]) == set("0123456789")
    assert {k: (r.required, r.defaults) for k, r in reads.sections["params"].items()} == {
        "x": (False, [3]),
        "y": (False, [3]),
        "seed": (True, []),
    }
    assert [f.__name__ for f in reads.passed_whole["params"]] == ["dumps"]
    assert "input" not in reads.passed_whole
    assert reads.takes is None and reads.optional is None
    wrapper.write_text(
        "TAKES = {'input': (0,), 'params': ('x', 'y')}\n"
        "OPTIONAL = {'input': (), 'params': ('y',)}\n"
        "configure_wrapper('w', snakemake.log, {'input': snakemake.input, 'params': snakemake.params}, TAKES,\n"
        "                  OPTIONAL)\n"
        "print(snakemake.params.x)\n"
    )
    reads = wrapper_reads(wrapper)
    assert reads.takes == {"input": [0], "params": ["x", "y"]}
    assert reads.optional == {"input": [], "params": ["y"]}
    assert reads.passed_whole == {}  # the check reads no section


def test_optional_all_makes_every_name_of_its_section_optional_and_no_other(tmp_path: Path) -> None:
    """OPTIONAL = {"params": ALL}: a rule may leave out every param of TAKES (build_graphs' params are all
    optional), and nothing else. The reader of wrappers lists the names ALL stands for, so meta.yaml is checked
    against them; the check of a rule (wrapper_rules) needs every name a section does not make optional."""
    from snakemake.iocontainers import Namedlist

    from wrapper_rules import ALL, missing_items

    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(
        "from kdgat.logs import ALL, configure_wrapper\n"
        "TAKES = {'input': ('train', 'extra', 0), 'params': ('seed', 'e')}\n"
        "OPTIONAL = {'input': ('extra',), 'params': ALL}\n"
        "configure_wrapper('w', snakemake.log, {'input': snakemake.input, 'params': snakemake.params}, TAKES,\n"
        "                  OPTIONAL)\n"
    )
    assert wrapper_reads(wrapper).optional == {"input": ["extra"], "params": ["seed", "e"]}
    wrapper.write_text(wrapper.read_text().replace("import ALL,", "import ALL, failure_logged,").replace(
        "'params': ALL", "'params': failure_logged"
    ))  # fmt: skip
    with pytest.raises(AssertionError, match=r"OPTIONAL\['params'\] must be a literal tuple or ALL"):
        wrapper_reads(wrapper)

    takes = {"input": ("train", "extra"), "params": ("seed", "e")}
    train = Namedlist(fromdict={"train": "t.csv"})
    optional = {"input": ("extra",), "params": ALL}
    assert missing_items("w", {"input": train, "params": Namedlist()}, takes, optional) is None
    # ALL is for its own section only: the other sections need what they do not list
    assert missing_items("w", {"input": Namedlist(), "params": Namedlist()}, takes, {"params": ALL}) == (
        "w wrapper: the rule gives no input 'train' or 'extra' (it takes input: train, extra)"
    )
    assert missing_items(
        "w", {"input": train, "params": Namedlist()}, takes, {"input": ALL, "params": ("e",)}
    ) == ("w wrapper: the rule gives no param 'seed' (it takes params: seed, e; 'e' may be left out)")
    # a bare string is neither ALL nor a list of names ('e' is in 'seed' as a substring): refused, not guessed
    with pytest.raises(TypeError, match=r"OPTIONAL\['params'\] is 'seed': a tuple of names, or ALL"):
        missing_items("w", {"input": train, "params": Namedlist()}, takes, {"params": "seed"})


# -- one wrapper style (CONTRIBUTING.md, "Wrapper conventions") -----------------------------------------------------
# Wrappers written before the style; each leaves this set when it is converted (the test fails while a converted
# wrapper is still listed, so the set only shrinks).
OLD_STYLE: set[str] = set()


# What a wrapper passes failure_logged of its job, so that a MemoryError's line names the rule's mem_mb and the rule
JOB_RESOURCES = {"mem_mb": "snakemake.resources.get('mem_mb')", "rule": "snakemake.rule"}


def style_problems(wrapper: Path) -> list[str]:
    """How wrapper.py departs from: docstring, __author__/__license__, imports, TAKES, configure_wrapper(...), one
    library call."""
    tree = ast.parse(wrapper.read_text())
    body = list(tree.body)
    problems = []
    if not ast.get_docstring(tree):
        problems.append("no module docstring")
    assigned = {
        t.id for node in body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
    }
    problems += [
        f"no {name}" for name in ("__author__", "__license__", "TAKES", "OPTIONAL") if name not in assigned
    ]
    imported = {
        alias.asname or alias.name: node.module
        for node in body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    steps = [
        node
        for node in body
        if not isinstance(node, ast.Import | ast.ImportFrom)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        and not (
            isinstance(node, ast.Assign)
            and assigned
            & {"__author__", "__license__", "TAKES", "OPTIONAL"}
            & {t.id for t in node.targets if isinstance(t, ast.Name)}
        )
    ]
    if (
        len(steps) == 1
        and isinstance(steps[0], ast.If)
        and ast.unparse(steps[0].test) == "__name__ == '__main__'"
    ):
        steps = steps[0].body  # a wrapper that starts Dask workers guards its body
    shape = [ast.unparse(node).split("\n")[0] for node in steps]
    if len(steps) != 2 or not re.fullmatch(
        r"configure_wrapper\('\w+', snakemake\.log, \{'input': snakemake\.input, 'output': snakemake\.output, "
        r"'params': snakemake\.params\}, TAKES, OPTIONAL\)",
        shape[0],
    ):
        problems.append(
            "the body must be configure_wrapper(<name>, snakemake.log, {<section>: snakemake.<section>}, TAKES, "
            "OPTIONAL) "
            "then one "
            f"`with failure_logged(...)`: {shape}"
        )
    else:
        block = steps[1]
        if not (
            isinstance(block, ast.With)
            and ast.unparse(block.items[0].context_expr).startswith("failure_logged(")
        ):
            problems.append("the library call must run inside `with failure_logged(...)`")
        elif len(block.body) != 1 or not (
            isinstance(block.body[0], ast.Expr) and isinstance(block.body[0].value, ast.Call)
        ):
            problems.append("`with failure_logged(...)` must hold exactly one library call")
        if isinstance(block, ast.With) and isinstance(block.items[0].context_expr, ast.Call):
            # A MemoryError's line names the job's mem_mb and the rule to raise it for: only the wrapper reads them.
            given = {k.arg: ast.unparse(k.value) for k in block.items[0].context_expr.keywords}
            for name, value in JOB_RESOURCES.items():
                if given.get(name) != value:
                    problems.append(f"`with failure_logged(...)` must pass {name}={value}")
    for helper in ("configure_wrapper", "failure_logged"):
        if imported.get(helper) not in {"kdgat.logs", "simcal.logs"}:
            problems.append(f"{helper} must come from kdgat.logs or simcal.logs")
    return problems


@pytest.mark.parametrize("folder", WRAPPERS, ids=lambda p: p.name)
def test_wrapper_has_the_one_style(folder: Path) -> None:
    problems = style_problems(folder / "wrapper.py")
    if folder.name in OLD_STYLE:
        assert problems, f"{folder.name} follows the style now: remove it from OLD_STYLE"
    else:
        assert not problems, f"{ids(folder)}/wrapper.py:\n  " + "\n  ".join(problems)


GUARDED = """\"\"\"Snakemake wrapper: a sweep on Dask.\"\"\"

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.logs import configure_wrapper, failure_logged
from simcal.runner import simulate

TAKES = {"input": (0,), "output": (0,), "params": ()}
OPTIONAL = {"input": (), "output": (), "params": ()}

if __name__ == "__main__":
    configure_wrapper(
        "simulate",
        snakemake.log,
        {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
        TAKES,
        OPTIONAL,
    )
    with failure_logged("simulate", mem_mb=snakemake.resources.get("mem_mb"), rule=snakemake.rule):
        simulate(parameters=snakemake.input[0], output=snakemake.output[0])
"""


def test_style_check_accepts_the_contributing_example_and_a_dask_guard(tmp_path: Path) -> None:
    example = (REPO / "CONTRIBUTING.md").read_text().split("## Wrapper conventions", 1)[1]
    for code in (textwrap.dedent(re.search(r"```python\n(.*?)```", example, re.S).group(1)), GUARDED):
        (tmp_path / "wrapper.py").write_text(code)
        assert style_problems(tmp_path / "wrapper.py") == [], code
    (tmp_path / "wrapper.py").write_text(
        GUARDED.replace("        simulate(", "        print()\n        simulate(")
    )
    assert style_problems(tmp_path / "wrapper.py") == [
        "`with failure_logged(...)` must hold exactly one library call"
    ]


# -- modules call the wrappers of their own release ----------------------------------------------------------------
@pytest.mark.parametrize(
    "snakefile", sorted((REPO / "workflow/modules").glob("*/Snakefile")), ids=lambda p: p.parent.name
)
def test_module_names_its_wrappers_through_catalog_wrapper(snakefile: Path) -> None:
    text = snakefile.read_text()
    references = re.findall(r"^\s+wrapper:\n\s+(.+)$", text, re.M)
    assert 'include: "../wrappers.smk"' in text or not references
    for reference in references:
        match = re.fullmatch(r'catalog_wrapper\("(\w+)"\)', reference.strip())
        assert match and (REPO / "wrappers" / match.group(1) / "wrapper.py").is_file(), reference


# -- every module rule hands its wrapper what meta.yaml names, under those names ----------------------------------
RULE_NAMES = r"""
print(json.dumps({
    rule.name: {
        "wrapper": rule.wrapper,
        **{section: [*getattr(rule, section)._names] or [0] * bool(len(getattr(rule, section)))
           for section in ("input", "output", "params")},
    }
    for rule in workflow.rules
    if rule.wrapper
}))
"""
# What meta.yaml names and a rule leaves out on purpose; anything else a rule leaves out fails (a dropped
# file_index= would make every synthetic file a copy of the first: the wrapper's default is 0).
DISTILLED = {"teacher"}
LEFT_OUT = {
    # only the student_kd rules distil from a teacher
    **{
        f"kd_gat_train_{stage}_{variant}": {"input": DISTILLED}
        for stage in ("vgae", "gat")
        for variant in ("teacher", "student")
    },
    **{
        f"kd_gat_train_dqn_{variant}": {"input": {"teacher_dqn", "teacher_gat", "teacher_vgae"}}
        for variant in ("teacher", "student")
    },
    "kd_gat_train_gat_sweep": {"input": DISTILLED},
    # the summary over all datasets has no training curves (summarize_dataset draws them per dataset)
    "evaluation_summarize": {"input": {"history"}, "output": {"curves"}, "params": {"history_keys", "title"}},
}


def test_every_module_rule_gives_its_wrapper_what_meta_yaml_names(tmp_path: Path) -> None:
    # A misspelt or dropped param (stride= as strid=) is otherwise never noticed: the wrapper takes its default.
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["kd_gat"]["sweep"] |= {"enabled": True, "table": str(REPO / "config/params.tsv")}
    rules = parsed_workflow(tmp_path, config, RULE_NAMES)
    assert set(LEFT_OUT) <= set(rules) and "preprocess_generate_can" in rules, sorted(rules)
    problems = []
    for name, rule in rules.items():
        wrapper = Path(rule["wrapper"].removeprefix("file:"))
        assert wrapper.parent == REPO / "wrappers", rule["wrapper"]
        meta = yaml.safe_load((wrapper / "meta.yaml").read_text())
        for section in SECTIONS:
            declared = set(meta.get(section) or {})
            given = set(rule[section])
            problems += [
                f"{name}: {section}.{key} is not in meta.yaml" for key in sorted(map(str, given - declared))
            ]
            left_out = LEFT_OUT.get(name, {}).get(section, set())
            problems += [
                f"{name}: meta.yaml's {section}.{key} is not given by the rule"
                for key in sorted(map(str, declared - given - left_out))
            ]
            problems += [
                f"{name}: LEFT_OUT names {section}.{key}, which it gives" for key in sorted(left_out & given)
            ]
    assert not problems, "\n".join(problems)


# Two instances of the kd_gat module under their own `prefix:`, and one without: the paths each training rule
# gives its wrapper besides its outputs (the resume checkpoint, the benchmark the resume mark goes next to).
TWO_PREFIXED_INSTANCES = """
module kd_gat:
    snakefile:
        "{module}"
    config:
        config


use rule * from kd_gat as kd_gat_*


module run_a:
    snakefile:
        "{module}"
    config:
        config
    prefix:
        "run_a"


use rule * from run_a as run_a_*


module run_b:
    snakefile:
        "{module}"
    config:
        config
    prefix:
        "run_b"


use rule * from run_b as run_b_*
"""
PLACED_PATHS = r"""
wildcards = {"dataset": "synth_hcrl", "seed": "42"}
print(json.dumps({
    rule.name: {
        "model": str(rule.output.model.apply_wildcards(wildcards)),
        "benchmark": str(rule.benchmark.apply_wildcards(wildcards)),
        "benchmark_param": rule.params.benchmark(wildcards, None),
        "checkpoint": rule.params.checkpoint.format(**wildcards),
    }
    for rule in workflow.rules
    if "_train_" in rule.name
}))
"""


def test_prefixed_module_instances_keep_their_checkpoints_and_resume_marks_apart(tmp_path: Path) -> None:
    # Snakemake moves a rule's outputs, log and benchmark behind the module's prefix, not its params: two instances
    # (say, two configs) then resumed from and overwrote each other's checkpoints, and the resume mark went next
    # to a benchmark file that no rule writes, so a resumed job's partial time was learned as its runtime.
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(TWO_PREFIXED_INSTANCES.format(module=REPO / "workflow/modules/kd_gat/Snakefile"))
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    rules = parsed_workflow(tmp_path, config, PLACED_PATHS, snakefile=snakefile)
    assert len(rules) == 27, sorted(rules)
    for name, paths in rules.items():
        prefix = {"kd_gat": "", "run_a": "run_a/", "run_b": "run_b/"}[name.split("_train_")[0]]
        stage, variant = name.split("_train_")[1].split("_", 1)
        place = f"synth_hcrl/seed_42/{variant}/{stage}"
        assert paths == {
            "model": f"{prefix}results/kd_gat/{place}/model.pt",
            "benchmark": f"{prefix}benchmarks/kd_gat/synth_hcrl/seed_42/{variant}/{stage}.tsv",
            "benchmark_param": f"{prefix}benchmarks/kd_gat/synth_hcrl/seed_42/{variant}/{stage}.tsv",
            "checkpoint": f"{prefix}checkpoints/kd_gat/{place}/last.pt",
        }, name


# -- the monitoring param joins the simulation settings the library gets -------------------------------------------
# The params calibrate needs besides the model (simulate takes and warns of them); the library call is replaced.
NEEDED_BY_CALIBRATE = {"parameters": {"beta": [0.1, 0.6]}, "targets": [{"column": "incidence"}]}


class _Section(dict):
    """What a wrapper reads of snakemake.input/output/params/log: names as attributes, [0] the first value."""

    def __getattr__(self, name):
        return self[name]

    def __getitem__(self, key):
        return list(self.values())[key] if isinstance(key, int) else super().__getitem__(key)


def _run_wrapper(
    wrapper: str, monkeypatch, library: str, inputs: dict, outputs: dict, params: dict, threads=1
):
    """Run the wrapper as Snakemake does (a `snakemake` global), its library call replaced: the keywords it got."""
    import importlib
    import runpy
    from types import SimpleNamespace

    module, function = library.rsplit(".", 1)
    calls = []
    monkeypatch.setattr(importlib.import_module(module), function, lambda **kwargs: calls.append(kwargs))
    for logs in ("simcal.logs", "kdgat.logs"):  # keep the test process's log handlers
        monkeypatch.setattr(f"{logs}.configure", lambda path: None)
    snakemake = SimpleNamespace(
        input=_Section(inputs),
        output=_Section(outputs),
        params=_Section(params),
        log=_Section(),
        threads=threads,
        resources=_Section(),
        rule="rule",
    )
    runpy.run_path(str(REPO / "wrappers" / wrapper / "wrapper.py"), {"snakemake": snakemake}, "__main__")
    (kwargs,) = calls
    return kwargs


@pytest.mark.parametrize(
    ("wrapper", "library", "section"),
    [("simulate", "simcal.runner.simulate", "settings"), ("calibrate", "simcal.calibrate.calibrate_files", "simulation")],
)  # fmt: skip
def test_the_monitoring_param_reaches_the_library_with_the_simulation_settings(
    wrapper, library, section, tmp_path, monkeypatch
):
    # The calibration module passes progress_seconds and no_worker_timeout_s apart (as `monitoring`, kept out of the
    # params rerun trigger); dropping them in the wrapper would silently run with the defaults.
    params = {
        "model": "simcal.models.sir:simulate",
        **NEEDED_BY_CALIBRATE,
        section: {"replicates": 2, "timeout_s": 60},
        "monitoring": {"progress_seconds": 0.5, "no_worker_timeout_s": 30},
    }
    inputs = {"observed": str(tmp_path / "in.csv")}
    outputs = {"simulations": str(tmp_path / "sims.parquet"), "trials": str(tmp_path / "trials.parquet")}
    kwargs = _run_wrapper(wrapper, monkeypatch, library, inputs, outputs, params, threads=2)
    assert kwargs[section] == {
        "replicates": 2,
        "timeout_s": 60,
        "progress_seconds": 0.5,
        "no_worker_timeout_s": 30,
    }
    assert "monitoring" not in kwargs


# -- what a kdgat wrapper stopped by a signal says of the rerun ------------------------------------------------------
TRAINING_FILES = {
    "input": {"train": "train.pt", "val": "val.pt", "metadata": "metadata.json"},
    "output": {"model": "model.pt", "metrics": "metrics.json", "history": "history.csv"},
}
BUILD_GRAPHS_FILES = {
    "input": {"train": "train.csv", "test": "test.csv"},
    "output": {name: f"{name}.out" for name in ("train", "val", "test", "vocab", "metadata")},
}
EVALUATION_FILES = {
    "input": {name: f"{name}.pt" for name in ("vgae", "gat", "dqn", "val", "test")},
    "output": {name: f"{name}.out" for name in ("metrics", "scores", "roc", "pr", "confusion")},
}


@pytest.mark.parametrize(
    ("wrapper", "library", "files", "params", "rerun"),
    [
        ("train_gat", "kdgat.training.gat.run", TRAINING_FILES, {"settings": {}, "checkpoint": "ck/last.pt"},
         "a rerun resumes from the last checkpoint, ck/last.pt (from the start if none was written)"),
        ("train_gat", "kdgat.training.gat.run", TRAINING_FILES, {"settings": {}}, "a rerun starts it again"),
        ("build_graphs", "kdgat.preprocess.preprocess_dataset", BUILD_GRAPHS_FILES,
         {"test_scenario_of_file": "attack"}, "a rerun starts it again"),
        ("evaluate_detector", "kdgat.evaluation.run.evaluate_files", EVALUATION_FILES,
         {"dataset": "toy", "variant": "large"}, "a rerun starts it again"),
    ],
)  # fmt: skip
def test_a_kdgat_wrapper_stopped_by_sigterm_says_a_rerun_resumes_only_where_it_has_a_checkpoint(
    wrapper, library, files, params, rerun, monkeypatch, caplog
):
    """Every kdgat wrapper said "a rerun resumes from the last checkpoint", also build_graphs, the evaluation and a
    training rule without params.checkpoint, whose rerun starts the job again."""
    import importlib
    import runpy
    from types import SimpleNamespace

    from kdgat.logs import Terminated

    def stopped(**kwargs):
        raise Terminated

    module, function = library.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), function, stopped)
    monkeypatch.setattr("kdgat.logs.configure", lambda path: None)  # keep the test process's log handlers
    snakemake = SimpleNamespace(
        input=_Section(files["input"]),
        output=_Section(files["output"]),
        params=_Section(params),
        log=_Section(),
        threads=1,
        resources=_Section(),
        rule="rule",
    )
    with pytest.raises(Terminated):
        runpy.run_path(str(REPO / "wrappers" / wrapper / "wrapper.py"), {"snakemake": snakemake}, "__main__")
    (line,) = [record.getMessage() for record in caplog.records if "stopped by" in record.getMessage()]
    assert line.startswith(f"{wrapper} stopped by SIGTERM (") and line.endswith(
        f"what was written is whole, and {rerun}"
    )


# -- a rule's items of one value ------------------------------------------------------------------------------------
def test_one_value_is_a_list_of_one_and_names_pair_with_files_or_are_refused_naming_both() -> None:
    from kdgat.rule_items import listed, paired

    # Snakemake gives `train="a.csv"` as the string: list() of it was one "file" per character
    assert listed("data/a.csv") == ["data/a.csv"] and listed(Path("a.csv")) == [Path("a.csv")]
    assert listed(["a.csv", "b.csv"]) == ["a.csv", "b.csv"] and listed(None) == []
    keys = {"names_key": "params.test_scenario_of_file", "files_key": "input.test"}
    assert paired("attack", "t.csv", **keys) == [("attack", "t.csv")]
    assert paired(["dos", "fuzzy"], ["d.csv", "f.csv"], **keys) == [("dos", "d.csv"), ("fuzzy", "f.csv")]
    with pytest.raises(ValueError) as error:
        paired([], ["d.csv"], **keys)
    assert str(error.value) == (
        "input.test has 1 file(s) and params.test_scenario_of_file 0 name(s) []: give one name per file, in the "
        "same order"
    )


def test_summarize_evaluation_hands_one_metrics_file_over_whole(tmp_path, monkeypatch) -> None:
    # A rule summarising one evaluation gives `metrics="…/metrics.json"`, which Snakemake hands over as the string:
    # list() of it gave the library one "file" per character.
    import kdgat.evaluation.run

    outputs = {name: str(tmp_path / name) for name in ("csv", "markdown", "chart", "scenarios")}
    kwargs = _run_wrapper(
        "summarize_evaluation", monkeypatch, "kdgat.evaluation.run.summarize_files",
        {"metrics": "results/toy/metrics.json"}, outputs, {},
    )  # fmt: skip
    assert kdgat.evaluation.run._paths(kwargs["metrics"]) == ["results/toy/metrics.json"]


def test_summarize_evaluation_takes_one_history_key_given_as_a_string(tmp_path, monkeypatch) -> None:
    # `history_keys="teacher/vgae"` beside one history.csv: list() of it made 12 keys, and the library refused them
    # as "history_keys (12) must name every history.csv (1)"
    outputs = {name: str(tmp_path / name) for name in ("csv", "markdown", "chart", "scenarios", "curves")}
    kwargs = _run_wrapper(
        "summarize_evaluation", monkeypatch, "kdgat.evaluation.run.summarize_files",
        {"metrics": "m.json", "history": "out/vgae/history.csv"}, outputs, {"history_keys": "teacher/vgae"},
    )  # fmt: skip
    assert list(kwargs["history_keys"]) == ["teacher/vgae"]


@pytest.mark.parametrize(
    ("wrapper", "section"),
    [("simulate", "settings"), ("simulate", "monitoring"), ("calibrate", "simulation"), ("calibrate", "monitoring")],
)  # fmt: skip
def test_a_string_for_the_simulation_settings_fails_naming_the_param(wrapper, section, tmp_path, monkeypatch):
    # `settings="replicates: 2"` (YAML written as a string) died as "TypeError: 'str' object is not a mapping"
    import runpy
    from types import SimpleNamespace

    from simcal.contract import ContractError

    monkeypatch.setattr("simcal.logs.configure", lambda path: None)  # keep the test process's log handlers
    snakemake = SimpleNamespace(
        input=_Section(observed=str(tmp_path / "in.csv")),
        output=_Section(simulations=str(tmp_path / "sims.parquet"), trials=str(tmp_path / "trials.parquet")),
        params=_Section(
            model="simcal.models.sir:simulate", **NEEDED_BY_CALIBRATE, **{section: "replicates: 2"}
        ),
        log=_Section(),
        threads=1,
        resources=_Section(),
        rule="rule",
    )
    # a user's mistake ends the wrapper with status 1 (InputRefused), the ContractError its cause
    with pytest.raises(
        InputRefused, match=rf"^params\.{section}: expected a mapping .* got str 'replicates: 2'"
    ) as ended:
        runpy.run_path(str(REPO / "wrappers" / wrapper / "wrapper.py"), {"snakemake": snakemake}, "__main__")
    assert ended.value.code == 1 and type(ended.value.error) is ContractError


def test_a_whole_number_param_is_not_rounded_and_a_wrong_type_is_named() -> None:
    # int() made `window_size=10.5` a silent 10 and `file_index="first"` "invalid literal for int()", naming no param
    import numpy as np

    from kdgat.rule_items import integer, number

    assert (
        integer(10, "params.window_size") == 10 and integer(10.0, "params.window_size") == 10
    )  # schema's integer
    assert integer(np.int64(10), "params.window_size") == 10  # a numpy integer is a whole number
    with pytest.raises(ValueError, match=r"^params\.window_size: expected an integer, got float 10\.5$"):
        integer(10.5, "params.window_size")
    with pytest.raises(ValueError, match=r"^params\.file_index: expected an integer, got str 'first'$"):
        integer("first", "params.file_index")
    with pytest.raises(ValueError, match=r"^params\.seed: expected an integer, got bool True$"):
        integer(True, "params.seed")
    assert number(1, "params.val_fraction") == 1.0 and number(0.25, "params.val_fraction") == 0.25
    with pytest.raises(ValueError, match=r"^params\.val_fraction: expected a number, got str '0\.2'$"):
        number("0.2", "params.val_fraction")
    with pytest.raises(ValueError, match=r"^params\.val_fraction: expected a number, got bool False$"):
        number(False, "params.val_fraction")


@pytest.mark.parametrize(
    ("wrapper", "param", "value"),
    [("build_graphs", "window_size", 10.5), ("build_graphs", "time_blocks", 4.9), ("generate_can", "file_index", 1.9)],
)  # fmt: skip
def test_the_kdgat_wrappers_refuse_a_fractional_whole_number_param(
    wrapper, param, value, monkeypatch
) -> None:
    import runpy
    from types import SimpleNamespace

    import kdgat.preprocess
    import kdgat.synthetic
    from kdgat.rule_items import RuleItemError

    calls = []
    monkeypatch.setattr(kdgat.preprocess, "preprocess_dataset", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kdgat.synthetic, "generate_file", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr("kdgat.logs.configure", lambda path: None)  # keep the test process's log handlers
    outputs = {name: f"{name}.out" for name in ("train", "val", "test", "vocab", "metadata")}
    snakemake = SimpleNamespace(
        input=_Section(train="train.csv", test="test.csv"),
        output=_Section(outputs),
        params=_Section(options={}, test_scenario_of_file="attack", **{param: value}),
        log=_Section(),
        threads=1,
        resources=_Section(),
        rule="rule",
    )
    with pytest.raises(
        InputRefused, match=rf"^params\.{param}: expected an integer, got float {value}$"
    ) as ended:
        runpy.run_path(str(REPO / "wrappers" / wrapper / "wrapper.py"), {"snakemake": snakemake}, "__main__")
    assert ended.value.code == 1 and type(ended.value.error) is RuleItemError
    assert calls == []


@pytest.mark.parametrize(
    ("param", "value", "named"),
    [("true_params", "beta=0.3,gamma=0.1", "observed.true_params"), ("options", ["noise", "poisson"], "observed.options"),
     ("fixed", "days=60", "calibration.fixed")],
)  # fmt: skip
def test_generate_observed_names_a_param_given_as_a_string_or_list_for_a_mapping(
    param, value, named, tmp_path, restore_logging
):
    # the wrapper hands its params to simcal.observed.generate_observed, whose dict() of them said only
    # "dictionary update sequence element #0 has length 1; 2 is required"
    import runpy
    from types import SimpleNamespace

    from simcal.contract import ContractError

    params = {
        "generator": "simcal.models.sir:observe",
        "true_params": {"beta": 0.3, "gamma": 0.1},
        param: value,
    }
    snakemake = SimpleNamespace(
        input=_Section(),
        output=_Section(observed=str(tmp_path / "observed.csv")),
        params=_Section(params),
        log=_Section(log=str(tmp_path / "observed.log")),
        threads=1,
        resources=_Section(),
        rule="rule",
    )
    with pytest.raises(
        InputRefused, match=rf"^{re.escape(named)}: expected a mapping of names to values, got"
    ) as ended:
        runpy.run_path(
            str(REPO / "wrappers/generate_observed/wrapper.py"), {"snakemake": snakemake}, "__main__"
        )
    assert ended.value.code == 1 and type(ended.value.error) is ContractError
    log = (tmp_path / "observed.log").read_text()
    assert (
        log.endswith(f" ERROR simcal: generate_observed failed: {ended.value}\n") and "Traceback" not in log
    )
    assert not (tmp_path / "observed.csv").exists()


# -- what a wrapper hands its library -------------------------------------------------------------------------------
# The wrappers that hand their params on by TAKES: the library call, and what a rule must give (inputs, outputs,
# params).
HANDS_PARAMS_ON = {
    "analyze_calibration": (
        "simcal.analyze.analyze_files", {"trials": "t.parquet"}, ("best", "top_k", "summary"),
        {"parameter_names": ["beta"]},
    ),
    "analyze_sweep": (
        "simcal.analyze.summarize_sweep_files", {"simulations": "s.parquet"}, ("table", "summary"),
        {"parameter_names": ["beta"]},
    ),
    "generate_observed": (
        "simcal.observed.generate_observed", {}, ("observed",),
        {"generator": "simcal.models.sir:observe", "true_params": {"beta": 0.3}},
    ),
    "sample_design": ("simcal.design.write_design", {}, ("design",), {"parameters": {"beta": [0.1, 0.6]}, "n": 8}),
    "visualize_calibration": (
        "simcal.visualize.visualize",
        {name: f"{name}.in" for name in ("trials", "simulations", "observed", "best", "summary")}, ("html",),
        {"parameter_names": ["beta"]},
    ),
    "visualize_sweep": (
        "simcal.visualize.visualize_sweep", {name: f"{name}.in" for name in ("simulations", "table", "summary")},
        ("html",), {"parameter_names": ["beta"]},
    ),
    "evaluate_detector": (
        "kdgat.evaluation.run.evaluate_files", {name: f"{name}.in" for name in ("vgae", "gat", "dqn", "val", "test")},
        ("metrics", "scores", "roc", "pr", "confusion"), {"dataset": "synth", "variant": "teacher"},
    ),
    "calibrate": (
        "simcal.calibrate.calibrate_files", {"observed": "observed.csv"}, ("simulations", "trials"),
        {"model": "simcal.models.sir:simulate", **NEEDED_BY_CALIBRATE},
    ),
}  # fmt: skip


@pytest.mark.parametrize("wrapper", HANDS_PARAMS_ON)
def test_a_param_the_wrapper_does_not_take_is_not_handed_to_the_library(wrapper, monkeypatch):
    """A name a rule gives that is not in TAKES (meta.yaml's names) is logged as a warning and ignored
    (test_logs.py); handed on to the library it would stop the job with "unexpected keyword argument 'colour'"."""
    library, inputs, outputs, params = HANDS_PARAMS_ON[wrapper]
    outputs = {name: f"{name}.out" for name in outputs}
    kwargs = _run_wrapper(wrapper, monkeypatch, library, inputs, outputs, {**params, "colour": "blue"})
    assert "colour" not in kwargs and {key: kwargs[key] for key in params} == params


@pytest.mark.parametrize(
    ("wrapper", "pictures"),
    [("visualize_calibration", ("fit", "loss", "history")), ("visualize_sweep", ("outputs", "series"))],
)
def test_a_visualize_rule_gets_the_pngs_it_names_and_no_other(wrapper, pictures, monkeypatch):
    """meta.yaml: every PNG output is optional. One the rule does not name is not asked of the library (a None path
    it would try to write); one it names is written where the rule says."""
    library, inputs, _, params = HANDS_PARAMS_ON[wrapper]
    alone = _run_wrapper(wrapper, monkeypatch, library, inputs, {"html": "page.html"}, params)
    assert alone["png_paths"] == {}
    first = {"html": "page.html", pictures[0]: f"{pictures[0]}.png"}
    assert _run_wrapper(wrapper, monkeypatch, library, inputs, first, params)["png_paths"] == {
        pictures[0]: f"{pictures[0]}.png"
    }


@pytest.mark.parametrize("wrapper", ["simulate", "calibrate", "evaluate_detector"])
def test_the_rules_threads_reach_the_library(wrapper, monkeypatch):
    """docs/simulation.md: the local backend is "a LocalCluster of the rule's threads"; the evaluation runs on them
    too. The wrapper hands snakemake.threads on, whatever the library's default."""
    if wrapper == "simulate":
        library, inputs, outputs, params = (
            "simcal.runner.simulate", {"parameters": "p.parquet"}, ("simulations",),
            {"model": "simcal.models.sir:simulate"},
        )  # fmt: skip
    else:
        library, inputs, outputs, params = HANDS_PARAMS_ON[wrapper]
    outputs = {name: f"{name}.out" for name in outputs}
    assert _run_wrapper(wrapper, monkeypatch, library, inputs, outputs, params, threads=3)["threads"] == 3


def test_build_graphs_hands_one_file_given_as_a_string_over_whole(monkeypatch) -> None:
    """Snakemake hands `train="data/train.csv"` over as the string: listed() makes it one file, not one per
    character (the same for held_out_fusion; a test file pairs with its scenario name)."""
    outputs = {name: f"{name}.out" for name in ("train", "val", "test", "vocab", "metadata")}
    kwargs = _run_wrapper(
        "build_graphs", monkeypatch, "kdgat.preprocess.preprocess_dataset",
        {"train": "data/train.csv", "test": "data/attack.csv", "held_out_fusion": "data/fusion.csv"}, outputs,
        {"test_scenario_of_file": "attack"},
    )  # fmt: skip
    assert kwargs["train_files"] == ["data/train.csv"]
    assert kwargs["test_files"] == [("attack", "data/attack.csv")]
    assert kwargs["held_out_files"] == {"fusion": ["data/fusion.csv"]}


@pytest.mark.parametrize(
    ("held_out", "message"),
    [
        (["fusion"], r"^params\.held_out must map each further held-out split to its share .* got \['fusion'\]$"),
        (0.2, r"^params\.held_out must map each further held-out split to its share .* got 0\.2$"),
        ({"fusion": "0.2"}, r"^params\.held_out\.fusion must be a number in \[0, 1\), got str '0\.2'$"),
    ],
)  # fmt: skip
def test_build_graphs_names_params_held_out_given_as_no_mapping_of_shares(
    held_out, message, monkeypatch
) -> None:
    """`held_out=["fusion"]` or `held_out=0.2` died as "dictionary update sequence element #0 has length 6; 2 is
    required" and "'float' object is not iterable" (the wrapper's dict() ran before the library's check), and a
    share given as the string "0.2" as "'>' not supported between instances of 'str' and 'int'"."""
    import runpy
    from types import SimpleNamespace

    from kdgat.layout import PreprocessError

    monkeypatch.setattr("kdgat.logs.configure", lambda path: None)  # keep the test process's log handlers
    outputs = {name: f"{name}.out" for name in ("train", "val", "test", "vocab", "metadata", "fusion")}
    snakemake = SimpleNamespace(
        input=_Section(train="train.csv", test="test.csv"),
        output=_Section(outputs),
        params=_Section(test_scenario_of_file="attack", held_out=held_out),
        log=_Section(),
        threads=1,
        resources=_Section(),
        rule="rule",
    )
    # a user's mistake ends the wrapper with status 1 (InputRefused), the PreprocessError (a ValueError) its cause
    with pytest.raises(InputRefused, match=message) as ended:
        runpy.run_path(str(REPO / "wrappers/build_graphs/wrapper.py"), {"snakemake": snakemake}, "__main__")
    assert ended.value.code == 1 and type(ended.value.error) is PreprocessError


def _graph_and_model_stand_ins(tmp_path: Path) -> dict[str, Path]:
    """Files a user may give in the wrong place: a text file named .pt, a graph file, a metadata.json."""
    import json

    from kdgat.graph_store import save_graph_sets, save_graphs
    from kdgat.testing import toy_graphs

    (tmp_path / "text.pt").write_text("not a torch file\n")
    save_graphs(toy_graphs(4, seed=0), tmp_path / "val.pt")
    save_graph_sets({"dos": toy_graphs(4, seed=1)}, tmp_path / "test.pt")
    (tmp_path / "metadata.json").write_text(json.dumps({"num_ids": 1000}))
    (tmp_path / "broken.json").write_text("{not json\n")
    (tmp_path / "partial.json").write_text(json.dumps({"dataset": "toy"}))
    return {path.name: path for path in tmp_path.iterdir()}


EVALUATION_OUTPUTS = ("metrics", "scores", "roc", "pr", "confusion")
SUMMARY_OUTPUTS = ("csv", "markdown", "chart", "scenarios")


@pytest.mark.parametrize(
    ("wrapper", "inputs", "params", "outputs", "error", "message"),
    [
        ("build_graphs", {"train": "val.pt", "test": "test.pt"}, {"test_scenario_of_file": "dos", "time_blocks": 1},
         ("train", "val", "test", "vocab", "metadata"), "PreprocessError",
         r"params\.time_blocks must be >= 2, got 1"),
        ("build_graphs", {"train": "val.pt", "test": "test.pt"}, {"test_scenario_of_file": "dos", "window_size": 1},
         ("train", "val", "test", "vocab", "metadata"), "PreprocessError",
         r"params\.window_size must be an integer >= 2, got 1"),
        ("evaluate_baselines", {"train": "text.pt", "val": "val.pt", "test": "test.pt", "metadata": "metadata.json"},
         {}, ("metrics", "scores"), "FileContentError", r"{tmp}/text\.pt: not a readable kdgat graph file "),
        ("evaluate_baselines", {"train": "val.pt", "val": "val.pt", "test": "val.pt", "metadata": "metadata.json"},
         {}, ("metrics", "scores"), "FileContentError",
         r"{tmp}/val\.pt: expected a 'kdgat-graph-sets/1' file, found 'kdgat-graphs/1'$"),
        ("evaluate_baselines", {"train": "val.pt", "val": "val.pt", "test": "test.pt", "metadata": "broken.json"},
         {}, ("metrics", "scores"), "FileContentError",
         r"{tmp}/broken\.json: expected preprocess metadata with an integer 'num_ids'$"),
        ("evaluate_detector", {"vgae": "val.pt", "gat": "val.pt", "dqn": "val.pt", "val": "val.pt", "test": "test.pt"},
         {"dataset": "toy", "variant": "teacher"}, EVALUATION_OUTPUTS, "FileContentError",
         r"{tmp}/val\.pt: cannot load the vgae model \(FileContentError: {tmp}/val\.pt: not a kd_gat model file "),
        ("evaluate_detector", {"vgae": "val.pt", "gat": "val.pt", "dqn": "val.pt", "val": "val.pt", "test": "test.pt"},
         {"dataset": "toy", "variant": "teacher", "fpr_targets": [5]}, EVALUATION_OUTPUTS, "EvaluationSettingsError",
         r"^params\.fpr_targets \(evaluation\.fpr_targets in the workflow's config\) must be false-positive rates strictly between 0 and 1; got \[5\]$"),
        ("evaluate_detector", {"vgae": "val.pt", "gat": "val.pt", "dqn": "val.pt", "val": "val.pt", "test": "test.pt"},
         {"dataset": "toy", "variant": "teacher", "batch_size": 0}, EVALUATION_OUTPUTS, "EvaluationSettingsError",
         r"^params\.batch_size \(evaluation\.batch_size in the workflow's config\) must be a positive integer \(graphs per inference batch\); got 0$"),
        ("summarize_evaluation", {"metrics": "broken.json"}, {}, SUMMARY_OUTPUTS, "FileContentError",
         r"^{tmp}/broken\.json: not valid JSON \(Expecting property name enclosed in double quotes at line 1\)$"),
        ("summarize_evaluation", {"metrics": "partial.json"}, {}, SUMMARY_OUTPUTS, "FileContentError",
         r"^{tmp}/partial\.json: metrics lack \['variant', 'test', "),
        ("summarize_evaluation", {"metrics": "partial.json", "history": "text.pt"}, {"history_keys": "teacher/vgea"},
         SUMMARY_OUTPUTS + ("curves",), "EvaluationSettingsError", r"^history key 'teacher/vgea' must be "),
        # named bare as "history_keys (2) must name every history.csv (1)", neither as the param nor the input
        ("summarize_evaluation", {"metrics": "partial.json", "history": "text.pt"},
         {"history_keys": ["teacher/vgae", "teacher/gat"]}, SUMMARY_OUTPUTS + ("curves",), "EvaluationSettingsError",
         r"^params\.history_keys \(2\) must name every history\.csv of input\.history \(1\), in the same order$"),
    ],
)  # fmt: skip
def test_a_wrong_file_or_setting_ends_the_kdgat_wrappers_with_one_line_naming_it(
    wrapper, inputs, params, outputs, error, message, tmp_path, restore_logging
):
    """A file given in the wrong place (text where a graph file goes, graphs where a model or the test sets go, a
    metrics.json that is no JSON or lacks its keys) or a setting out of range reached failure_logged as a bare
    ValueError: a traceback in the log and again on the terminal for a message that already names the file or
    setting. Now each is the user's mistake: status 1 and one ERROR line."""
    import runpy
    from types import SimpleNamespace

    files = _graph_and_model_stand_ins(tmp_path)
    snakemake = SimpleNamespace(
        input=_Section({name: str(files[value]) for name, value in inputs.items()}),
        output=_Section({name: str(tmp_path / "out" / name) for name in outputs}),
        params=_Section(params),
        log=_Section(log=str(tmp_path / "job.log")),
        threads=1,
        resources=_Section(),
        rule="rule",
    )
    with pytest.raises(InputRefused, match=message.format(tmp=re.escape(str(tmp_path)))) as ended:
        runpy.run_path(str(REPO / "wrappers" / wrapper / "wrapper.py"), {"snakemake": snakemake}, "__main__")
    assert ended.value.code == 1 and type(ended.value.error).__name__ == error
    assert isinstance(ended.value.error, ValueError)  # callers that catch ValueError still catch it
    log = (tmp_path / "job.log").read_text()
    assert log.endswith(f" ERROR kdgat: {wrapper} failed: {ended.value}\n") and "Traceback" not in log
    assert not (tmp_path / "out").exists()


def test_simulate_meta_yaml_names_every_option_each_backend_accepts() -> None:
    """wrappers/simulate/meta.yaml's backend_options text is what a wrapper user reads to set a backend; it once left
    out options the code accepts (job_script_prologue, local_directory, log_directory, ...)."""
    from simcal.backends import LOCAL_OPTIONS, SCHEDULER_OPTIONS, SLURM_OPTIONS
    from simcal.service.remote import OPTIONS as SERVICE_OPTIONS

    meta = yaml.safe_load((REPO / "wrappers" / "simulate" / "meta.yaml").read_text())
    text = meta["params"]["backend_options"]["description"]
    sections = dict(
        re.findall(r"(local|slurm|scheduler|service): (.*?)(?=; (?:local|slurm|scheduler|service):|$)", text)
    )
    accepted = {
        "local": LOCAL_OPTIONS,
        "slurm": SLURM_OPTIONS,
        "scheduler": SCHEDULER_OPTIONS,
        "service": SERVICE_OPTIONS,
    }
    missing = {
        backend: sorted(name for name in names if not re.search(rf"\b{name}\b", sections.get(backend, "")))
        for backend, names in accepted.items()
    }
    assert not any(missing.values()), f"wrappers/simulate/meta.yaml backend_options leaves out {missing}"


@pytest.mark.parametrize(
    ("wrapper", "library", "inputs", "outputs", "params", "digests"),
    [
        (
            "generate_can", "kdgat.synthetic.generate_file", {}, {"can": "can.csv"}, {"options": {"seed": 1}},
            "synthetic_code_digest",
        ),
        (
            "build_graphs", "kdgat.preprocess.preprocess_dataset", {"train": ["train.csv"], "test": ["dos.csv"]},
            {name: f"{name}.out" for name in ("train", "val", "test", "vocab", "metadata")},
            {"test_scenario_of_file": ["dos"]}, "preprocess_code_digest",
        ),
    ],
)  # fmt: skip
def test_the_library_code_param_is_taken_in_either_form_without_a_warning_and_not_handed_on(
    wrapper, library, inputs, outputs, params, digests, monkeypatch, caplog
):
    """meta.yaml: the preprocess module passes library_code as {file: digest} (kdgat.layout.*_code_digests), so
    the dry run names the files that changed; a user's own rule may still pass the one digest of earlier releases.
    The wrapper reads neither: each form is taken without the warning of a name it does not take, and the library
    call is the one made without it."""
    import logging

    import kdgat.layout

    plain = _run_wrapper(wrapper, monkeypatch, library, inputs, outputs, params)
    for form in (getattr(kdgat.layout, f"{digests}s")(), getattr(kdgat.layout, digests)()):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            kwargs = _run_wrapper(
                wrapper, monkeypatch, library, inputs, outputs, {**params, "library_code": form}
            )
        assert kwargs == plain, form
        assert not [record for record in caplog.records if record.levelno >= logging.WARNING], caplog.text

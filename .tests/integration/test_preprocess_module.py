"""The preprocess module run by Snakemake: from the main workflow, from a downstream Snakefile, with the
between-workflow cache, and on a real-layout dataset directory with bad rows."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil

import pytest
import yaml
from testkit import REPO, run_snakemake

from kdgat.graph_store import load_graph_sets, load_graphs
from kdgat.graphs import window_count
from kdgat.layout import preprocess_code_digests, synthetic_code_digests

pytestmark = pytest.mark.integration

DOWNSTREAM = REPO / ".tests" / "integration" / "preprocess"
TINY = yaml.safe_load((DOWNSTREAM / "config.yaml").read_text())
OUTPUTS = ("train.pt", "val.pt", "fusion.pt", "test.pt", "vocab.json", "metadata.json")


def changed_code_files(dry_run: str, rule: str) -> dict[str, tuple[str | None, str | None]]:
    """{file: (digest before, digest now)} of each file the "Params have changed" reason of ``rule``'s first job in
    a dry run's output shows changed: the entries of its library_code mapping that differ before and now."""
    job = dry_run.split(f"rule {rule}:", 1)[1]
    found = re.search(r"Params have changed since last execution: .*? before: (\{.*?\}) now: (\{.*?\})", job)
    assert found, dry_run[-3000:]
    before, now = (ast.literal_eval(text) for text in found.groups())
    return {
        name: (before.get(name), now.get(name))
        for name in sorted(before | now)
        if before.get(name) != now.get(name)
    }


def check_outputs(workdir, dataset, scenarios):
    folder = workdir / "results" / "preprocess" / dataset
    assert all((folder / name).is_file() for name in OUTPUTS)
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["dataset"] == dataset
    assert meta["counts"]["train"] == len(load_graphs(folder / "train.pt")) > 0
    # Validation and the configured further split are one time block of four of every training capture.
    assert meta["split"]["held_out_blocks_per_capture"] == {"val": 1, "fusion": 1}
    assert meta["counts"]["fusion"] == len(load_graphs(folder / "fusion.pt")) > 0
    assert list(load_graph_sets(folder / "test.pt")) == scenarios
    return meta


def test_main_workflow_runs_the_module(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config.update(datasets=TINY["datasets"], preprocess=TINY["preprocess"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(
        "preprocess_all", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(tmp_path / "config.yaml"), "--cores", "2",
    )  # fmt: skip
    meta = check_outputs(tmp_path, "tiny_hcrl", ["dos", "gear"])
    assert meta["window_size"] == 50
    check_outputs(tmp_path, "tiny_4col", ["fuzzy"])
    # The generator wrote the formats the config asked for, and the readers took them.
    assert (
        (tmp_path / "resources/preprocess/tiny_4col/train_01_attack_free/normal.csv")
        .read_text()
        .startswith("timestamp,arbitration_id,data_field,attack\n")
    )
    assert (tmp_path / "benchmarks/preprocess/generate_can/tiny_hcrl/test_01_dos/dos.tsv").is_file()
    assert "0 bad rows skipped" in (tmp_path / "logs/preprocess/build_graphs/tiny_hcrl.log").read_text()


def test_downstream_snakefile_from_another_directory(tmp_path):
    run_snakemake(
        "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(tmp_path), "--cores", "2", cwd=tmp_path
    )  # fmt: skip
    check_outputs(tmp_path, "tiny_hcrl", ["dos", "gear"])
    assert (tmp_path / "results" / "summary.txt").read_text().startswith("tiny_hcrl ")


def test_cache_between_workflows(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(cache)}
    first, second = tmp_path / "first", tmp_path / "second"
    for workdir in (first, second):
        workdir.mkdir()
        proc = run_snakemake(
            "preprocess_all", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(workdir), "--cores", "2", "--cache",
            cwd=workdir, env=env,
        )  # fmt: skip
    # The first workflow built the graphs (its job wrote a log) and stored them; the second took them from the
    # cache: its build_graphs jobs never ran (Snakemake leaves their logs empty), yet the outputs are identical.
    assert (
        "toy" not in proc.stdout
        and "tiny_hcrl: " in (first / "logs/preprocess/build_graphs/tiny_hcrl.log").read_text()
    )
    assert (second / "logs/preprocess/build_graphs/tiny_hcrl.log").read_text() == ""
    assert "Symlinking output file results/preprocess/tiny_hcrl/train.pt from cache" in proc.stdout
    assert len(list(cache.iterdir())) == 2 * len(OUTPUTS)
    # README.md ("Snakemake makes every entry it stores readable and writable by every user"): mode 0666, past the
    # umask the test runs under (022 in CI), which is why the README asks for a cache folder of the project group alone.
    assert {entry.stat().st_mode & 0o777 for entry in cache.iterdir()} == {0o666}
    for name in OUTPUTS:
        path = f"results/preprocess/tiny_hcrl/{name}"
        assert (first / path).read_bytes() == (second / path).read_bytes()
    # A newer library (here: a comment added to kdgat/graphs.py, as a fix would change it) is not served the
    # older one's graphs: the rule's library_code param (kdgat.layout.preprocess_code_digests) changes the key.
    newer = tmp_path / "newer" / "kdgat"
    shutil.copytree(REPO / "src" / "kdgat", newer, ignore=shutil.ignore_patterns("__pycache__"))
    with (newer / "graphs.py").open("a", encoding="utf-8") as graphs:
        graphs.write("\n# a fix of the graph builder\n")
    third = tmp_path / "third"
    third.mkdir()
    run_snakemake(
        "preprocess_all", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(third), "--cores", "2", "--cache",
        cwd=third, env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(newer.parent), os.environ.get("PYTHONPATH")]))},
    )  # fmt: skip
    assert "tiny_hcrl: " in (third / "logs/preprocess/build_graphs/tiny_hcrl.log").read_text()
    assert len(list(cache.iterdir())) == 2 * 2 * len(OUTPUTS)
    # Where the older code built the graphs, the newer code reruns the step (Snakemake's params trigger).
    rerun = run_snakemake(
        "preprocess_all", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(first), "--cores", "1", "--dry-run",
        cwd=first, env={**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(newer.parent), os.environ.get("PYTHONPATH")]))},
    )  # fmt: skip
    assert re.search(r"preprocess_build_graphs\s+2", rerun.stdout), rerun.stdout[-3000:]
    # Its reason names the file that changed (docs/upgrading.md), with library_code's entries before and now.
    assert changed_code_files(rerun.stdout, "preprocess_build_graphs") == {
        "graphs.py": (preprocess_code_digests()["graphs.py"], preprocess_code_digests(newer)["graphs.py"])
    }


def test_cache_serves_no_graphs_of_an_older_generators_logs(tmp_path):
    """A synthetic dataset's logs are generate_can's outputs: build_graphs' cache key holds those jobs' keys (their
    wrapper and params), not the logs' contents. A newer generator (here: another draw of each file's traffic)
    wrote other logs, and was served the graphs of the older one's, whose message counts its metadata.json showed
    beside its own logs. generate_can's library_code param (kdgat.layout.synthetic_code_digests) changes the key."""
    cache = tmp_path / "cache"
    cache.mkdir()
    newer = tmp_path / "newer" / "kdgat"
    shutil.copytree(REPO / "src" / "kdgat", newer, ignore=shutil.ignore_patterns("__pycache__"))
    synthetic = newer / "synthetic.py"
    assert "0xF11E" in synthetic.read_text()
    synthetic.write_text(synthetic.read_text().replace("0xF11E", "0xF11F"))
    pythonpath = os.pathsep.join(filter(None, [str(newer.parent), os.environ.get("PYTHONPATH")]))
    workdirs = {
        "older": (tmp_path / "older", {}),
        "newer": (tmp_path / "newer_run", {"PYTHONPATH": pythonpath}),
    }
    for workdir, env in workdirs.values():
        workdir.mkdir()
        run_snakemake(
            "results/preprocess/tiny_hcrl/train.pt", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory",
            str(workdir), "--cores", "2", "--cache", cwd=workdir, env={"SNAKEMAKE_OUTPUT_CACHE": str(cache), **env},
        )  # fmt: skip
    older, newer_run = (workdir for workdir, _ in workdirs.values())
    log = "resources/preprocess/tiny_hcrl/train_01_attack_free/normal.csv"
    # the newer generator wrote other logs ...
    assert (older / log).read_bytes() != (newer_run / log).read_bytes()
    # ... and its graphs were built from them, not taken from the older logs' cache entry
    assert "tiny_hcrl: " in (newer_run / "logs/preprocess/build_graphs/tiny_hcrl.log").read_text()
    graphs = "results/preprocess/tiny_hcrl/train.pt"
    assert (older / graphs).read_bytes() != (newer_run / graphs).read_bytes()
    # After a pull of the newer generator, the dry run in the older working directory says which file changed.
    rerun = run_snakemake(
        "results/preprocess/tiny_hcrl/train.pt", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory",
        str(older), "--cores", "1", "--dry-run", cwd=older, env={"PYTHONPATH": pythonpath},
    )  # fmt: skip
    assert re.search(r"preprocess_generate_can\s+4", rerun.stdout), rerun.stdout[-3000:]
    assert changed_code_files(rerun.stdout, "preprocess_generate_can") == {
        "synthetic.py": (
            synthetic_code_digests()["synthetic.py"],
            synthetic_code_digests(newer)["synthetic.py"],
        )
    }


def test_cache_is_not_served_when_a_log_changes_role(tmp_path):
    """Snakemake's cache key holds the contents of the inputs, sorted, not which input is which: a log moved from
    training to test (same contents in all), or two logs whose contents swap places under the same paths, must not
    be served the graphs of the other arrangement."""
    data = REPO / "wrappers" / "build_graphs" / "test" / "data"
    cache = tmp_path / "cache"
    cache.mkdir()
    runs = {}
    # arrangement: (training log's contents, its name), (test log's contents, its name)
    for arrangement, ((train_log, train_name), (test_log, test_name)) in {
        "first": (("train_attack.csv", "train_attack.csv"), ("test_attack.csv", "test_attack.csv")),
        "second": (("test_attack.csv", "test_attack.csv"), ("train_attack.csv", "train_attack.csv")),
        "swapped": (("test_attack.csv", "train_attack.csv"), ("train_attack.csv", "test_attack.csv")),
    }.items():
        root = tmp_path / arrangement / "data"
        (root / "train_01_attack_free").mkdir(parents=True)
        (root / "test_01_dos").mkdir()
        shutil.copy(data / "train_normal.csv", root / "train_01_attack_free" / "normal.csv")
        shutil.copy(data / train_log, root / "train_01_attack_free" / train_name)
        shutil.copy(data / test_log, root / "test_01_dos" / test_name)
        config = {
            "datasets": {"real": {"path": str(root)}},
            "preprocess": {"window_size": 20, "stride": 20, "held_out": {"fusion": None}},
        }
        (tmp_path / arrangement / "config.yaml").write_text(yaml.safe_dump(config))
        workdir = tmp_path / arrangement / "work"
        workdir.mkdir()
        run_snakemake(
            "results/preprocess/real/metadata.json", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory",
            str(workdir), "--configfile", str(tmp_path / arrangement / "config.yaml"), "--cores", "1", "--cache",
            cwd=workdir, env={"SNAKEMAKE_OUTPUT_CACHE": str(cache)},
        )  # fmt: skip
        runs[arrangement] = (
            root,
            json.loads((workdir / "results/preprocess/real/metadata.json").read_text()),
        )
    root, meta = runs["second"]
    # The second arrangement was built, not taken from the first one's cache entry.
    assert meta["files"]["train"] == [
        str(root / "train_01_attack_free" / name) for name in ("normal.csv", "test_attack.csv")
    ]
    assert meta["files"]["test"] == {"dos": [str(root / "test_01_dos" / "train_attack.csv")]}
    # The swapped contents under the first arrangement's paths were built too (the fingerprints in roles_of_logs).
    root, meta = runs["swapped"]
    assert meta["files"]["test"] == {"dos": [str(root / "test_01_dos" / "test_attack.csv")]}
    assert meta["files"]["test"] != runs["first"][1]["files"]["test"]


def candump_capture(seconds: float, injected: bool) -> str:
    """A candump log: the vehicle's frames every 10 ms and, from 1.0 s to 2.0 s, all-0xFF frames of new IDs."""
    frames = [
        (k * 0.01, (0x0C1, 0x0D0, 0x1F3)[k % 3], f"{k % 256:02X}00000000001122")
        for k in range(int(seconds * 100))
    ]
    if injected:
        frames += [(1.0 + k * 0.05 + 0.002, 0x100 + 7 * k, "FF" * 8) for k in range(20)]
    return "".join(f"({1602165123.0 + t:.6f}) can0 {i:03X}#{data}\n" for t, i, data in sorted(frames))


def test_capture_metadata_is_an_input_of_build_graphs(tmp_path):
    """The capture_metadata.json that labels a dataset's candump logs is an input of build_graphs: remote storage
    (the k8s profile's) retrieves only inputs, so as a param's fingerprint it was never there for the job; an edit
    reruns the job by Snakemake's usual rule (an input newer than the outputs)."""
    root = tmp_path / "road"
    (root / "train_01_ambient").mkdir(parents=True)
    (root / "test_01_fuzzing").mkdir()
    (root / "train_01_ambient" / "ambient_street_1.log").write_text(candump_capture(4.0, False))
    (root / "test_01_fuzzing" / "fuzzing_attack_1.log").write_text(candump_capture(3.0, True))
    entry = {"injection_id": "XXX", "injection_data_str": "F" * 16, "injection_interval": [1.0, 2.0]}
    metadata = root / "capture_metadata.json"
    metadata.write_text(json.dumps({"ambient_street_1": {"on_dyno": False}, "fuzzing_attack_1": entry}))
    config = {
        "datasets": {"road": {"path": str(root)}},
        "preprocess": {"window_size": 20, "stride": 20, "time_blocks": 5, "held_out": {"fusion": None}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work"
    workdir.mkdir()
    args = (
        "results/preprocess/road/metadata.json", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory",
        str(workdir), "--configfile", str(tmp_path / "config.yaml"), "--cores", "1",
    )  # fmt: skip
    dry = run_snakemake(*args, "--dry-run", cwd=workdir).stdout
    job = dry.split("rule preprocess_build_graphs:", 1)[1]
    inputs = re.search(r"input: (.*)", job).group(1).split(", ")
    assert str(metadata) in inputs, job[:2000]
    run_snakemake(*args, cwd=workdir)
    meta = json.loads((workdir / "results/preprocess/road/metadata.json").read_text())
    assert meta["attack_fraction"]["train"] == 0.0 and meta["attack_fraction"]["test"]["fuzzing"] > 0
    # an edited interval reruns the job, as an input updated
    metadata.write_text(
        json.dumps({"ambient_street_1": {}, "fuzzing_attack_1": {**entry, "injection_interval": [1.5, 2.0]}})
    )
    job = run_snakemake(*args, "--dry-run", cwd=workdir).stdout.split("rule preprocess_build_graphs:", 1)[1]
    assert f"Updated input files: {metadata}" in job, job[:2000]


BAD_LINE = "1478198376.400000,03zz,8,00,00,00,00,00,00,00,00,R"


@pytest.fixture
def real_layout(tmp_path):
    """A dataset directory like HCRL's, copied from the wrapper's test logs, with one bad row."""
    data = REPO / "wrappers" / "build_graphs" / "test" / "data"
    root = tmp_path / "hcrl_like"
    (root / "train_01_attack_free").mkdir(parents=True)
    (root / "test_01_dos").mkdir()
    (root / "test_02_masquerade").mkdir()
    lines = (data / "train_normal.csv").read_text().splitlines()
    lines.insert(10, BAD_LINE)
    (root / "train_01_attack_free" / "normal.csv").write_text("\n".join(lines) + "\n")
    shutil.copy(data / "train_attack.csv", root / "train_01_attack_free" / "dos.csv")
    shutil.copy(data / "test_attack.csv", root / "test_01_dos" / "dos.csv")
    shutil.copy(data / "test_attack.csv", root / "test_02_masquerade" / "masquerade.csv")
    return root


def write_config(tmp_path, root, bad_rows):
    config = {
        "datasets": {"real": {"path": str(root)}},
        "preprocess": {"window_size": 20, "stride": 20, "bad_rows": bad_rows},
    }
    path = tmp_path / f"config_{bad_rows}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_real_layout_bad_row_stops_with_file_and_line(tmp_path, real_layout):
    workdir = tmp_path / "error"
    workdir.mkdir()
    # a second bad row: the refusal says how to skip them, naming the config key
    with (real_layout / "train_01_attack_free" / "normal.csv").open("a") as log:
        log.write(BAD_LINE + "\n")
    proc = run_snakemake(
        "preprocess_all", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(workdir), "--cores", "1",
        "--configfile", str(write_config(tmp_path, real_layout, "error")), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    log = (workdir / "logs/preprocess/build_graphs/real.log").read_text()
    assert "normal.csv, line 11: CAN ID is not a hexadecimal number" in log
    # the module's user set preprocess.bad_rows, not the build_graphs wrapper's params.bad_rows
    assert "(1 more bad row; set preprocess.bad_rows: skip to drop them)" in log, log
    assert not (workdir / "results/preprocess/real/metadata.json").exists()


def test_real_layout_skip_counts_bad_rows(tmp_path, real_layout):
    workdir = tmp_path / "skip"
    workdir.mkdir()
    run_snakemake(
        "preprocess_all", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(workdir), "--cores", "1",
        "--configfile", str(write_config(tmp_path, real_layout, "skip")),
    )  # fmt: skip
    meta = check_outputs(workdir, "real", ["dos"])  # the masquerade scenario is excluded
    assert meta["skipped_rows"]["total"] == 1
    assert meta["skipped_rows"]["per_file"][str(real_layout / "train_01_attack_free" / "normal.csv")] == 1
    assert "skipped 1 bad rows" in (workdir / "logs/preprocess/build_graphs/real.log").read_text()


def test_missing_dataset_directory_names_the_config_key(tmp_path):
    config = {**TINY, "datasets": {"real": {"path": str(tmp_path / "nowhere")}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(
        "-n", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"datasets.real.path: dataset directory {tmp_path / 'nowhere'} does not exist" in proc.stdout, (
        proc.stdout
    )


@pytest.mark.parametrize(
    ("entry", "key", "given"),
    [
        ({"path": "data/real"}, "datasets.real.path", "data/real"),
        (
            {
                "files": {
                    "train": ["data/real/train_01_attack_free/normal.csv"],
                    "test": {"dos": ["/abs/dos.csv"]},
                }
            },
            "datasets.real.files.train[0]",
            "data/real/train_01_attack_free/normal.csv",
        ),
    ],
)
def test_a_relative_log_path_under_a_module_prefix_is_refused_naming_the_key(
    tmp_path, real_layout, entry, key, given
):
    """The kd_gat docs tell a downstream workflow to import preprocess with the same `prefix:` as kd_gat. The
    module read a relative datasets.<name>.path (or files) in the working directory while Snakemake looked for the
    rule's inputs behind the prefix: a MissingInputException for runA/data/real/... although data/real held them."""
    shutil.copytree(real_layout, tmp_path / "data" / "real")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**TINY, "datasets": {"real": entry}}))
    (tmp_path / "Snakefile").write_text(
        'configfile: "config.yaml"\n\n\n'
        f'module preprocess:\n    snakefile:\n        "{REPO}/workflow/modules/preprocess/Snakefile"\n'
        '    config:\n        config\n    prefix:\n        "runA"\n\n\nuse rule * from preprocess as a_*\n'
    )
    proc = run_snakemake("-n", "--cores", "1", "a_all", cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode != 0, proc.stdout
    assert "MissingInputException" not in proc.stdout, proc.stdout
    assert (
        f"{key}: {given!r} is relative, and the preprocess module is imported with a `prefix:`, behind which "
        f"Snakemake looks for it (runA/{given}): give an absolute path"
    ) in proc.stdout, proc.stdout


def test_a_log_path_in_the_home_folder_under_a_module_prefix_is_read_there(tmp_path, real_layout):
    """``~/data/real``, in a module imported with a `prefix:`: it is the home folder (kdgat.layout), not a relative
    path behind the prefix, so neither refused as relative nor looked up as runA/~/data/real."""
    home = tmp_path / "home"
    shutil.copytree(real_layout, home / "data" / "real")
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({**TINY, "datasets": {"real": {"path": "~/data/real"}}})
    )
    (tmp_path / "Snakefile").write_text(
        'configfile: "config.yaml"\n\n\n'
        f'module preprocess:\n    snakefile:\n        "{REPO}/workflow/modules/preprocess/Snakefile"\n'
        '    config:\n        config\n    prefix:\n        "runA"\n\n\nuse rule * from preprocess as a_*\n'
    )
    proc = run_snakemake("-n", "--cores", "1", "a_all", cwd=tmp_path, env={"HOME": str(home)}, timeout=300)
    assert "runA/results/preprocess/real/train.pt" in proc.stdout, proc.stdout


def test_whole_fusion_captures_from_synthetic_files_and_from_folders(tmp_path, real_layout):
    """A synthetic split fusion_NN_<what> and a fusion_*/ folder of a real layout are whole captures of the fusion
    split: with a share of 0 fusion.pt holds their windows and nothing else, the training captures keep all
    their blocks but validation's, and metadata.json names the files."""
    config = yaml.safe_load((DOWNSTREAM / "config.yaml").read_text())
    tiny = config["datasets"]["tiny_hcrl"]
    tiny["synthetic"]["files"].append(
        {"split": "fusion_01_with_attacks", "name": "dos", "attack": "dos", "duration_s": 0.5}
    )
    # the module's own config.yaml is merged under this one: its tiny_4col needs a fusion capture too
    config["datasets"]["tiny_4col"]["synthetic"]["files"].append(
        {"split": "fusion_01_with_attacks", "name": "fuzzy", "attack": "fuzzy", "duration_s": 0.5}
    )
    (real_layout / "fusion_01_dos").mkdir()
    shutil.copy(real_layout / "test_01_dos" / "dos.csv", real_layout / "fusion_01_dos" / "dos.csv")
    config["datasets"]["real"] = {"path": str(real_layout)}
    config["preprocess"] |= {"held_out": {"fusion": 0}, "bad_rows": "skip"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    workdir.mkdir()
    run_snakemake(
        "preprocess_all", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(tmp_path / "config.yaml"), "--cores", "2",
    )  # fmt: skip
    captures = {
        "tiny_hcrl": "resources/preprocess/tiny_hcrl/fusion_01_with_attacks/dos.csv",
        "tiny_4col": "resources/preprocess/tiny_4col/fusion_01_with_attacks/fuzzy.csv",
        "real": str(real_layout / "fusion_01_dos" / "dos.csv"),
    }
    for dataset, capture in captures.items():
        folder = workdir / "results" / "preprocess" / dataset
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["split"]["held_out_blocks_per_capture"] == {"val": 1, "fusion": 0}
        assert meta["split"]["whole_captures"] == {"fusion": [capture]} and meta["files"]["fusion"] == [
            capture
        ]
        messages = meta["messages"]["per_file"][capture]
        windows = window_count(messages, window_size=50, stride=50)  # every window of the capture
        assert meta["counts"]["fusion"] == len(load_graphs(folder / "fusion.pt")) == windows > 0
        split_windows = sum(f["windows"] - f["purged_windows"] for f in meta["split"]["per_file"].values())
        assert meta["counts"]["train"] + meta["counts"]["val"] == split_windows  # no block went to fusion
    # Without a fusion split written, whole fusion captures are an error naming where they are: fusion_*/
    # folders of a path, then a synthetic split that is neither train_, test_ nor a configured held-out split.
    config["preprocess"]["held_out"] = {"fusion": None}
    for expected in (
        "datasets.real.path: <split>_*/ folders hold whole captures of ['fusion'], but preprocess.held_out",
        "split 'fusion_01_with_attacks' is neither train_*, test_* nor a held-out split",
    ):
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        proc = run_snakemake(
            "-n", "preprocess_all", "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", check=False,
        )  # fmt: skip
        assert proc.returncode != 0
        assert expected in proc.stdout, proc.stdout
        config["datasets"].pop("real", None)


def test_adding_a_synthetic_file_generates_only_it(tmp_path):
    """Each generate_can job's parameters hold its own file, not the dataset's list: after a run, a file added to
    the list is the one file Snakemake plans to generate (with the list in every job's parameters, the params
    rerun trigger planned them all again)."""
    config = yaml.safe_load((DOWNSTREAM / "config.yaml").read_text())
    workdir = tmp_path / "run"

    def snakemake(*args):
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        logs = [  # every synthetic file, as targets: the generators alone
            f"resources/preprocess/{dataset}/{entry['split']}/{entry['name']}.csv"
            for dataset, spec in config["datasets"].items()
            for entry in spec["synthetic"]["files"]
        ]
        return run_snakemake(
            *args, *logs, "--snakefile", str(DOWNSTREAM / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(tmp_path / "config.yaml"), "--cores", "2",
        )  # fmt: skip

    snakemake()
    generated = sum(len(spec["synthetic"]["files"]) for spec in config["datasets"].values())
    assert len(list((workdir / "resources" / "preprocess").rglob("*.csv"))) == generated
    config["datasets"]["tiny_hcrl"]["synthetic"]["files"].append(
        {"split": "test_03_rpm", "name": "rpm", "attack": "rpm", "duration_s": 0.5}
    )
    planned = snakemake("-n").stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", planned, re.M))  # the job-count table of the dry run
    assert counts.get("preprocess_generate_can") == "1", planned
    assert "resources/preprocess/tiny_hcrl/test_03_rpm/rpm.csv" in planned


def test_shipped_whole_fusion_captures_come_last_and_the_blocks_only_experiment_drops_them(
    tmp_path,
):
    """The shipped config lists its whole fusion captures after every other file, so each other file is generated
    as before they were added (a file's traffic depends on its position); config/experiments/fusion_blocks_only.yaml
    (the default before, docs/science.md) is the same list without them, and the workflow generates them under the
    shipped config and not under the experiment (how they become whole captures of the fusion split:
    test_whole_fusion_captures_from_synthetic_files_and_from_folders)."""
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    experiment_path = REPO / "config" / "experiments" / "fusion_blocks_only.yaml"
    experiment = yaml.safe_load(experiment_path.read_text())
    assert set(experiment["datasets"]) == set(shipped["datasets"])
    whole_captures = 0
    for dataset, spec in shipped["datasets"].items():
        files, blocks_only = spec["synthetic"]["files"], experiment["datasets"][dataset]["synthetic"]["files"]
        assert files[: len(blocks_only)] == blocks_only
        assert not any(f["split"].startswith("fusion_") for f in blocks_only)
        assert files[len(blocks_only) :] and all(
            f["split"].startswith("fusion_") for f in files[len(blocks_only) :]
        )
        whole_captures += len(files) - len(blocks_only)

    def planned_generations(*configfiles):
        dry = run_snakemake(
            "-n", "preprocess_all", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory",
            str(tmp_path), "--configfile", *map(str, configfiles), "--cores", "1",
        )  # fmt: skip
        counts = re.findall(r"^(\w+)\s+(\d+)$", dry.stdout, re.M)  # the job-count table of the dry run
        return {rule: int(count) for rule, count in counts}["preprocess_generate_can"]

    shipped_config = REPO / "config" / "config.yaml"
    shipped_files = sum(len(spec["synthetic"]["files"]) for spec in shipped["datasets"].values())
    assert planned_generations(shipped_config) == shipped_files
    assert planned_generations(shipped_config, experiment_path) == shipped_files - whole_captures

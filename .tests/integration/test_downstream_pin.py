"""A downstream lab pins a release: the README's "Reuse it" code, run on a copy of this repository's HEAD.

The copy is a ``git archive`` of HEAD unpacked as ``<tmp>/catalog/v<version>/`` (the layout ``--wrapper-prefix``
expects) and committed to a git repository tagged ``v<version>``. The library is installed from that repository
with the README's pip command (its GitHub URL swapped for the local one) into a fresh virtualenv: non-editable,
without dependencies, which it finds in this venv's site-packages through a ``.pth`` file (seconds, not a torch
download). Then the copy's ``src/`` is deleted, so nothing can import a checkout. The lab's Snakefile is the
README's, in a directory of its own:

- as written (``github(...)`` at the tag), resolved offline from Snakemake's git cache filled with the tagged
  repository in advance: the whole DAG builds (dry run), and each module rule calls its wrapper from GitHub at the
  same tag;
- with the modules imported by path from the copy: the cheapest rules run for real, a module's rule (a synthetic
  CAN log through the module's own wrapper) and the lab's rule calling a wrapper through
  ``--wrapper-prefix file://<tmp>/catalog/`` and ``"v<version>/wrappers/sample_design"``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from packaging.requirements import Requirement
from testkit import REPO

pytestmark = pytest.mark.integration

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
REPOSITORY = PROJECT["urls"]["Repository"]
GITHUB_REPO = REPOSITORY.removeprefix("https://github.com/")
TAG = f"v{PROJECT['version']}"

SECTION = (REPO / "README.md").read_text().split("### 2. Reuse it\n", 1)[1].split("\n### ", 1)[0]
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", SECTION, re.S)
PIP_COMMAND = next(code for language, code in BLOCKS if language == "bash" and "pip install" in code)
LAB_SNAKEFILE = next(code for language, code in BLOCKS if language == "python")
RUN_COMMAND = next(code for language, code in BLOCKS if language == "bash" and "--wrapper-prefix" in code)
GITHUB_MODULE = re.compile(r'github\("(?P<repo>[^"]+)", path="(?P<path>[^"]+)", tag="(?P<tag>[^"]+)"\)')
WRAPPER_LINE = re.compile(r'^\s+wrapper:\n\s+"(?P<wrapper>[^"]+)"', re.M)

LAB_CONFIG = {
    "datasets": {
        "lab_can": {
            "synthetic": {
                "seed": 3,
                "format": "hcrl_csv",
                "num_ids": 25,
                "files": [
                    {"split": "train_01_attack_free", "name": "normal", "attack": "none", "duration_s": 0.5},
                    {"split": "test_01_dos", "name": "dos", "attack": "dos", "duration_s": 4.0},
                ],
            }
        }
    },
    "kd_gat": {"seeds": [3]},
}
CAN_LOG = "resources/preprocess/lab_can/train_01_attack_free/normal.csv"


# -- the README names this release ----------------------------------------------------------------------------------
def readme_requirement() -> Requirement:
    (line,) = [line for line in PIP_COMMAND.splitlines() if line.startswith("pip install ")]
    return Requirement(shlex.split(line)[2])


def test_readme_pins_this_release_everywhere() -> None:
    requirement = readme_requirement()
    assert (requirement.name, requirement.url) == (PROJECT["name"], f"git+{REPOSITORY}@{TAG}")
    modules = list(GITHUB_MODULE.finditer(LAB_SNAKEFILE))
    assert {m["path"] for m in modules} >= {"workflow/modules/kd_gat/Snakefile"}
    for module in modules:
        assert (module["repo"], module["tag"]) == (GITHUB_REPO, TAG)
        assert (REPO / module["path"]).is_file(), module["path"]
    wrappers = WRAPPER_LINE.findall(LAB_SNAKEFILE)
    assert wrappers and all(
        w.startswith(f"{TAG}/wrappers/") and (REPO / w.split("/", 1)[1]).is_dir() for w in wrappers
    )
    assert f"--wrapper-prefix {REPOSITORY}/raw/" in RUN_COMMAND
    assert "use rule * from kd_gat as lab_*" in LAB_SNAKEFILE


def test_wrapper_prefix_goes_in_front_of_every_wrapper_but_urls() -> None:
    # Why the README asks for snakemake-wrappers' own wrappers as full URLs next to --wrapper-prefix.
    from snakemake.wrapper import get_path

    prefix = f"{REPOSITORY}/raw/"
    ours = get_path(f"{TAG}/wrappers/sample_design", prefix=prefix).get_path_or_uri(secret_free=True)
    assert ours == f"{REPOSITORY}/raw/{TAG}/wrappers/sample_design"
    theirs = get_path("v7.2.0/bio/samtools/sort", prefix=prefix).get_path_or_uri(secret_free=True)
    assert theirs == f"{REPOSITORY}/raw/v7.2.0/bio/samtools/sort"  # not snakemake-wrappers any more
    full = "https://github.com/snakemake/snakemake-wrappers/raw/v7.2.0/bio/samtools/sort"
    assert get_path(full, prefix=prefix).get_path_or_uri(secret_free=True) == full


# -- a release, installed in a fresh virtualenv ---------------------------------------------------------------------
def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> dict[str, Path]:
    """<tmp>/catalog/<tag>/ = HEAD as a tagged git repository; <tmp>/venv with the library installed from it."""
    tmp = tmp_path_factory.mktemp("downstream")
    copy = tmp / "catalog" / TAG
    copy.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)
    git("init", "-q", "-b", "main", cwd=copy)
    git("add", "-A", cwd=copy)
    git("-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-q", "-m", "release", cwd=copy)
    git("tag", TAG, cwd=copy)

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # Dependencies (and pip, setuptools) from this venv; not its editable install: a .pth line adds a directory to
    # sys.path without running the .pth files inside it.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    local = str(readme_requirement()).replace(f"git+{REPOSITORY}@", f"git+file://{copy}@")
    install = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-cache-dir",
         "--no-build-isolation", "--ignore-installed", local],
        capture_output=True, text=True, timeout=600, env=clean_env(tmp),
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    subprocess.run(["rm", "-rf", str(copy / "src")], check=True)  # no checkout of the library anywhere
    return {"tmp": tmp, "copy": copy, "venv": venv, "site": site}


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["PATH"] = f"{tmp / 'venv' / 'bin'}:/usr/bin:/bin"
    env["XDG_CACHE_HOME"] = str(
        tmp / "cache"
    )  # Snakemake's source cache, including its clones of GitHub repos
    return env


def lab(release, snakefile_text: str, name: str) -> Path:
    folder = release["tmp"] / name
    (folder / "config").mkdir(parents=True)
    (folder / "config/config.yaml").write_text(yaml.safe_dump(LAB_CONFIG))
    (folder / "Snakefile").write_text(snakefile_text)
    return folder


def snakemake(release, folder: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(release["venv"] / "bin/python"), "-m", "snakemake", "--cores", "2", *args],
        cwd=folder, env=clean_env(release["tmp"]), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    return proc


def test_the_library_comes_from_the_release_not_a_checkout(release) -> None:
    probe = subprocess.run(
        [str(release["venv"] / "bin/python"), "-c",
         "import json, sys, kdgat, simcal; print(json.dumps([kdgat.__file__, simcal.__file__, sys.path]))"],
        env=clean_env(release["tmp"]), capture_output=True, text=True, check=True,
    )  # fmt: skip
    kdgat_file, simcal_file, path = json.loads(probe.stdout)
    assert Path(kdgat_file).is_relative_to(release["site"]) and Path(simcal_file).is_relative_to(
        release["site"]
    )
    assert str(REPO / "src") not in path and not (release["copy"] / "src").exists()


def test_lab_runs_modules_by_path_and_a_wrapper_by_version(release) -> None:
    by_path = GITHUB_MODULE.sub(lambda m: json.dumps(str(release["copy"] / m["path"])), LAB_SNAKEFILE)
    folder = lab(release, by_path, "lab_by_path")
    prefix = f"file://{release['tmp'] / 'catalog'}/"
    run = shlex.split(RUN_COMMAND.strip())[1:]
    run[run.index("--wrapper-prefix") + 1] = prefix
    dry = snakemake(release, folder, *run, "--dry-run")
    assert re.search(r"lab_train_dqn_student\s+1", dry.stdout), dry.stdout[-3000:]  # kd_gat's rules, renamed
    snakemake(release, folder, *run, "resources/design.csv", CAN_LOG)
    design = pd.read_csv(folder / "resources/design.csv")
    assert len(design) == 8 and design["beta"].between(0.1, 0.6).all()
    assert (folder / CAN_LOG).stat().st_size > 0
    assert "INFO kdgat." in next((folder / "logs").rglob("generate_can*/**/*.log")).read_text()


LIST_WRAPPERS = """
import json
from snakemake.api import SnakemakeApi
from snakemake.settings.types import OutputSettings, ResourceSettings, StorageSettings
from pathlib import Path

with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1), storage_settings=StorageSettings(), snakefile=Path("Snakefile")
    )._workflow
    print(json.dumps({rule.name: rule.wrapper for rule in workflow.rules if rule.wrapper}))
"""


def test_lab_imports_modules_from_github_at_the_tag(release) -> None:
    # What Snakemake would clone from GitHub: the tagged repository, put where Snakemake keeps its clones.
    clones = release["tmp"] / "cache/snakemake/snakemake/source-cache/snakemake-git-cache/github.com"
    clones.mkdir(parents=True, exist_ok=True)
    git("clone", "-q", "--bare", str(release["copy"]), str(clones / GITHUB_REPO), cwd=release["tmp"])
    folder = lab(release, LAB_SNAKEFILE, "lab_github")
    dry = snakemake(release, folder, *shlex.split(RUN_COMMAND.strip())[1:], "--dry-run")
    assert re.search(r"lab_train_vgae_teacher\s+1", dry.stdout), dry.stdout[-3000:]
    parsed = subprocess.run(
        [str(release["venv"] / "bin/python"), "-c", LIST_WRAPPERS],
        cwd=folder, env=clean_env(release["tmp"]), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert parsed.returncode == 0, parsed.stderr[-4000:]
    wrappers = json.loads(parsed.stdout.strip().splitlines()[-1])
    raw = f"https://raw.githubusercontent.com/{GITHUB_REPO}/{TAG}/wrappers/"
    module_rules = {name: uri for name, uri in wrappers.items() if name.startswith("lab_")}
    assert module_rules and all(uri.startswith(raw) for uri in module_rules.values()), module_rules
    assert all(
        (release["copy"] / "wrappers" / uri.removeprefix(raw)).is_dir() for uri in module_rules.values()
    )

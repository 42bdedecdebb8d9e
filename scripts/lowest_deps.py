"""The steps of scripts/check_lowest_deps.sh that read pyproject.toml.

`requirements`: torch's pin and, of the `workflow` extra, Snakemake's pin and the cluster-generic plugin's range
(what the lowest environment installs beside the library and the `test` extra).
`direct`: every requirement whose floor is checked: the library's, the `test` extra's and those of `requirements`.
`floors LOWEST`: LOWEST holds `name==version` lines, the lowest release each of `direct` allows on its own
(`uv pip compile --no-deps --resolution lowest`); prints each next to the version installed and exits 1 when one
differs: another pin keeps that floor from being installed, so pyproject.toml promises a version that cannot be
had with the others.
"""

import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

PROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
WORKFLOW_NAMES = ("snakemake", "snakemake-executor-plugin-cluster-generic")


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def requirements() -> list[str]:
    torch = [r for r in PROJECT["dependencies"] if _name(r) == "torch"]
    workflow = [r for r in PROJECT["optional-dependencies"]["workflow"] if _name(r) in WORKFLOW_NAMES]
    return torch + workflow


def direct() -> list[str]:
    beside = [r for r in requirements() if _name(r) != "torch"]
    return PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"] + beside


def floors(lowest_file: Path) -> list[str]:
    """Prints `name: lowest allowed L, installed V` per requirement of direct(); returns those where V != L."""
    lowest = dict(
        (_name(name), value)
        for name, value in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lowest_file.read_text(), re.MULTILINE)
    )
    raised = []
    for name in dict.fromkeys(_name(r) for r in direct()):
        if name not in lowest:
            raise SystemExit(
                f"{lowest_file} has no line for {name}: is it the output of `uv pip compile` of direct?"
            )
        installed = version(name)
        # torch's local tag (+cpu) names the build, not the version
        same = installed.split("+")[0] == lowest[name]
        print(f"# {name}: lowest allowed {lowest[name]}, installed {installed}{'' if same else '  <- ABOVE'}")
        if not same:
            raised.append(f"{name} (lowest allowed {lowest[name]}, installed {installed})")
    return raised


def main(argv: list[str]) -> int:
    if argv in (["requirements"], ["direct"]):
        print("\n".join(requirements() if argv[0] == "requirements" else direct()))
        return 0
    if len(argv) == 2 and argv[0] == "floors":
        raised = floors(Path(argv[1]))
        if raised:
            print(f"floors of pyproject.toml that its other pins keep from installing: {'; '.join(raised)}")
        return 1 if raised else 0
    print("usage: lowest_deps.py requirements|direct|floors LOWEST", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

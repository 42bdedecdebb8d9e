"""Where a CAN dataset's logs are: the HCRL/KD-GAT directory layout (train_*/ and test_NN_<scenario>/ folders, and
<split>_*/ folders of whole captures for a held-out split such as fusion).

Kept free of heavy imports: the preprocess module calls it while Snakemake parses the workflow."""

from __future__ import annotations

import functools
import hashlib
import itertools
import numbers
import os
import re
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path

from kdgat.files import source_digest, source_digests
from wrapper_rules import InputError

LOG_SUFFIXES = (".csv", ".txt", ".log")
NOT_CAPTURES = ("readme", "license", "licence")  # names of no log start so, any case: README.txt, LICENSE.txt
DEFAULT_EXCLUDE = ("suppress", "masquerade")
HELD_OUT_SPLITS = ("fusion",)  # the held-out splits preprocess.held_out may name (its schema)
VAL = "val"


class PreprocessError(ValueError, InputError):
    """A preprocess setting (``preprocess.*``, a build_graphs param) or a set of logs that cannot give the splits
    (a log given twice, no training logs, a split left without windows); the message names the key or the logs."""


# What a message calls a preprocess setting: its config key (preprocess.window_size) in the workflow and the kdgat
# command, the rule's param (params.window_size) in the build_graphs wrapper, whose user has no config key.
SETTING_PREFIX: ContextVar[str] = ContextVar("preprocess_setting_prefix", default="preprocess")


def setting_key(name: str) -> str:
    """A preprocess setting (``window_size``, ``held_out.fusion``) as the caller names it."""
    return f"{SETTING_PREFIX.get()}.{name}"


def settings_named(function):
    """``function`` takes ``setting_prefix`` ("preprocess", or "params" for a wrapper): its messages name the
    settings under it (setting_key)."""

    @functools.wraps(function)
    def call(*args, setting_prefix: str = "preprocess", **kwargs):
        token = SETTING_PREFIX.set(setting_prefix)
        try:
            return function(*args, **kwargs)
        finally:
            SETTING_PREFIX.reset(token)

    return call


def exclude_words(exclude: Iterable[str]) -> tuple[str, ...]:
    """``exclude`` as a tuple; an empty word is refused: every path contains it, so every log was left out."""
    if "" in (words := tuple(exclude)):
        raise PreprocessError(f"{setting_key('exclude')}[{words.index('')}]: an empty word drops every log")
    return words


def share_key(split: str) -> str:
    """The config key of a held-out split's share of each training capture."""
    return setting_key("val_fraction" if split == VAL else f"held_out.{split}")


def outputs_without_a_path(missing: list[str], held_out: Iterable[str], outputs: dict) -> str:
    """The refusal of the splits ``missing`` (held-out names among them) that no output path was given for.
    ``outputs`` holds a key for each output the caller can write, None where it gave no path: the build_graphs
    wrapper (setting prefix ``params``) writes one held-out split, fusion, as output.fusion, so a rule without
    output.fusion is told to declare it, and a held-out name the wrapper has no output for is refused by name."""
    held_out_key = setting_key("held_out")
    if SETTING_PREFIX.get() != "params":
        return (
            f"preprocess_dataset: no path for the outputs {missing} (give outputs or out_dir; each split "
            f"{held_out_key} names, {sorted(held_out)}, is an output of its own)"
        )
    no_output = [name for name in missing if name not in outputs]
    if no_output:
        return (
            f"{held_out_key} names the held-out splits {no_output}, which no output of the rule can take (its "
            f"outputs: {', '.join(f'output.{key}' for key in outputs)}): leave them out of {held_out_key}"
        )
    return (
        f"{held_out_key} names the held-out splits {missing}, written to "
        f"{' and '.join(f'output.{name}' for name in missing)}, which the rule does not declare: declare "
        f"{'them' if len(missing) > 1 else 'it'}, or leave {missing} out of {held_out_key}"
    )


def in_the_working_directory(path: str | os.PathLike) -> str:
    """For a message about a relative path: where it was looked up, the working directory (snakemake --directory),
    not beside the config file; "" for an absolute path."""
    return "" if Path(path).is_absolute() else f" (relative to the working directory {os.getcwd()})"


def held_out_blocks(fractions: dict[str, float], time_blocks: int) -> dict[str, int]:
    """Blocks per capture for each held-out split (``VAL`` or a ``preprocess.held_out`` name):
    ``round(fraction * time_blocks)``, at least one for a positive fraction, and at least one block left for
    training. Here rather than in kdgat.preprocess: the preprocess module checks the shares while Snakemake parses
    the workflow, before any job runs."""
    if time_blocks < 2:
        raise PreprocessError(f"{setting_key('time_blocks')} must be >= 2, got {time_blocks}")
    counts = {}
    for name, fraction in fractions.items():
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
            # a wrapper's params are not schema-checked: "0.2" failed later as "'>' not supported ..."
            raise PreprocessError(
                f"{share_key(name)} must be a number in [0, 1), got {type(fraction).__name__} {fraction!r}"
            )
        if not 0.0 <= float(fraction) < 1.0:
            raise PreprocessError(f"{share_key(name)} must be in [0, 1), got {fraction}")
        counts[name] = max(1, int(round(float(fraction) * time_blocks))) if fraction > 0 else 0
    if sum(counts.values()) >= time_blocks:
        taking = {name: fraction for name, fraction in fractions.items() if counts[name]}
        shares = " + ".join(f"{share_key(name)}={fraction:g}" for name, fraction in taking.items())
        blocks = " + ".join(str(counts[name]) for name in taking)
        raise PreprocessError(
            f"{shares} (sum {sum(map(float, taking.values())):g}) take {blocks} = {sum(counts.values())} of "
            f"{setting_key('time_blocks')}={time_blocks} blocks of every training capture (each positive share at "
            f"least one); at least one must stay for training: lower the shares or raise {setting_key('time_blocks')}"
        )
    return counts


def scenario_name(directory: str) -> str:
    """``test_01_dos`` -> ``dos``; a name without the ``test_NN_`` prefix is kept as it is."""
    return re.sub(r"^test_\d+_", "", directory) or directory


# The compressed logs (dos.csv.gz) the readers refuse, named with their decompressing command, never skipped.
COMPRESSED_SUFFIXES = {".gz": "gunzip", ".bz2": "bunzip2", ".xz": "unxz", ".zst": "unzstd", ".zip": "unzip"}


def _logs(directory: Path, exclude: tuple[str, ...], compressed: bool = False) -> list[Path]:
    """The CAN logs under ``directory`` (``*.csv``, ``*.txt``, ``*.log``, less NOT_CAPTURES: README.txt), or with
    ``compressed`` the compressed ones (``*.csv.gz`` and the like, archives such as ``dos.zip``), sorted. A log whose
    path relative to the dataset folder (``directory``'s parent: ``test_02_masquerade/attack.csv``) contains a word
    of ``exclude``, in any case, is left out, and so are hidden files and folders (``.ipynb_checkpoints/`` copies,
    macOS ``._dos.csv`` files), which are no captures of their own."""
    words = tuple(word.lower() for word in exclude)

    def is_log(path: Path) -> bool:
        if compressed:
            if path.suffix.lower() not in COMPRESSED_SUFFIXES:
                return False
            # dos.csv.gz, and an archive named for its capture (dos.zip, dos.tar.gz)
            return Path(path.stem).suffix.lower() in (*LOG_SUFFIXES, "", ".tar")
        return path.suffix.lower() in LOG_SUFFIXES and not path.name.lower().startswith(NOT_CAPTURES)

    def hidden(path: Path) -> bool:
        return any(part.startswith(".") for part in path.relative_to(directory).parts)

    def excluded(path: Path) -> bool:  # folder names count (see above)
        relative = path.relative_to(directory.parent).as_posix().lower()
        return any(word in relative for word in words)

    return sorted(
        p for p in directory.rglob("*") if p.is_file() and is_log(p) and not hidden(p) and not excluded(p)
    )


def compressed_logs(
    root: str | Path, splits: Iterable[str], exclude: Iterable[str] = DEFAULT_EXCLUDE
) -> list[Path]:
    """Compressed logs (``<name>.csv.gz`` and the like) under the ``<split>_*/`` folders of ``root``, for each split
    name (``train``, ``test``, a held-out split); paths containing a word of ``exclude`` are left out (see _logs)."""
    root, exclude = Path(root), exclude_words(exclude)
    # dict.fromkeys: a split named twice (preprocess.held_out's fusion and a known split) is searched once
    return sorted(
        p
        for split in dict.fromkeys(splits)
        for d in root.glob(f"{split}_*")
        if d.is_dir()
        for p in _logs(d, exclude, compressed=True)
    )


def held_out_captures(
    root: str | Path, names: Iterable[str], exclude: Iterable[str] = DEFAULT_EXCLUDE
) -> dict[str, list[Path]]:
    """{held-out split: the logs under its ``<name>_*/`` folders (fusion_01_dos/)}, for the names that have some."""
    root, exclude = Path(root), exclude_words(exclude)
    found = {
        name: [f for d in sorted(root.glob(f"{name}_*")) if d.is_dir() for f in _logs(d, exclude)]
        for name in names
    }
    return {name: files for name, files in found.items() if files}


def discover_layout(root: str | Path, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> tuple[list[Path], dict]:
    """Training files (``train_*/``) and test scenarios (``test_*/``) of a dataset laid out like HCRL/KD-GAT."""
    root, exclude = Path(root), exclude_words(exclude)
    if not root.is_dir():
        # A log file given where its dataset's folder belongs exists: "does not exist" would send the user looking.
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"dataset directory {root} {what}{in_the_working_directory(root)}")
    train = [f for d in sorted(root.glob("train_*")) if d.is_dir() for f in _logs(d, exclude)]
    test: dict[str, list[Path]] = {}
    for directory in sorted(root.glob("test_*")):
        if directory.is_dir():  # test_01_dos/ and test_02_dos/ are both scenario dos, as synthetic splits are
            test.setdefault(scenario_name(directory.name), []).extend(_logs(directory, exclude))
    test = {name: files for name, files in test.items() if files}
    # What counts as a log, for the messages below.
    logs = f"CAN logs ({', '.join('*' + suffix for suffix in LOG_SUFFIXES)}"
    logs += f"; paths containing {list(exclude)}, in any case, are left out)" if exclude else ")"
    if not train:
        raise FileNotFoundError(f"dataset directory {root} has no {logs} under train_*/")
    if not test:
        # Without test scenarios every model would be trained and evaluated, and only the summary would fail.
        raise FileNotFoundError(f"dataset directory {root} has no {logs} under test_NN_<scenario>/ folders")
    return train, test


def _normalized(path) -> str:
    """A log's path as given, without ./ and // (./data/a.csv is data/a.csv), as kd_gat.data_prefix is: Snakemake
    warns of a relative input path starting with ./ on every run; ``~`` is the home folder (Snakemake refuses an
    input path starting with ``~``, naming no config key). A URL (az://container/dos.csv) is left as it is."""
    return str(path) if "://" in str(path) else os.path.normpath(os.path.expanduser(str(path)))


def _refuse_unwritten(captures: dict, held_out: tuple[str, ...], given: str) -> None:
    """Whole captures of a held-out split that preprocess.held_out does not write are refused: nothing reads them."""
    unwritten = sorted(name for name in captures if name not in held_out)
    if unwritten:
        raise LayoutError(
            f"{given} hold whole captures of {unwritten}, but preprocess.held_out does not write "
            f"{'that split' if len(unwritten) == 1 else 'those splits'} (it writes {sorted(held_out) or 'none'}); "
            f"set preprocess.held_out.{unwritten[0]} (0 takes only these captures) or remove them"
        )


# How much of each end of a log its fingerprint reads (the whole log up to twice this).
FINGERPRINT_BYTES = 1 << 20


def log_fingerprint(path: str | Path) -> str:
    """``<size>:<digest>`` of a log, the digest over its first and last MiB: cheap whenever the workflow is planned,
    and the same for two captures only with the same size, first and last MiB. ``""`` for a log not on disk yet."""
    try:
        size = os.path.getsize(path)
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
            if size > FINGERPRINT_BYTES:
                handle.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                digest.update(handle.read())
    except FileNotFoundError:
        return ""
    return f"{size}:{digest.hexdigest()}"


def log_roles(
    train: Iterable[str | Path],
    test: dict[str, Iterable[str | Path]],
    whole: dict[str, Iterable[str | Path]],
    contents: bool = False,
) -> dict:
    """Which log plays which part, as paths relative to the folder that holds them all: ``{"train": [...],
    "test": {scenario: [...]}, <held-out split>: [...]}``. Snakemake's between-workflow cache keys a job on the
    contents of its inputs *sorted*, not on which input is which, so the preprocess rule passes this as a param:
    a log moved from training to test then changes the key, while the same layout elsewhere still shares it.
    ``contents``: add ``"contents": {path: log_fingerprint}``, so that two logs whose contents swap places under
    the same paths (test_01_dos/ and test_02_fuzzy/ renamed into each other's names) change the key too; for
    recorded logs only: a log another rule writes has no contents when the workflow is planned, and its key comes
    from the job that writes it."""
    train = list(train)
    test = {name: list(logs) for name, logs in test.items()}
    whole = {name: list(logs) for name, logs in whole.items()}
    every = [*train, *itertools.chain(*test.values(), *whole.values())]
    base = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in every]) if every else ""

    def relative(files: list) -> list[str]:
        return [os.path.relpath(os.path.abspath(f), base) for f in files]

    roles = {
        "train": relative(train),
        "test": {name: relative(logs) for name, logs in test.items()},
        **{name: relative(logs) for name, logs in whole.items()},
    }
    if contents:  # "contents" cannot be a split's name: preprocess.held_out takes HELD_OUT_SPLITS only
        roles["contents"] = {
            name: log_fingerprint(log) for name, log in zip(relative(every), every, strict=True)
        }
    return roles


# The library modules whose code decides what build_graphs writes (what its wrapper imports, transitively, less
# logging), relative to the kdgat package; a folder stands for the .py files in it.
PREPROCESS_CODE = (
    "can",
    "chain.py",
    "compiled.py",
    "files.py",
    "graph_store.py",
    "graphs.py",
    "layout.py",
    "preprocess.py",
    "preprocess_checks.py",
    "rule_items.py",
)


def preprocess_code_digests(package: str | Path | None = None) -> dict[str, str]:
    """``{file of PREPROCESS_CODE: digest}`` (of ``package``, the installed kdgat by default), build_graphs'
    library_code param. The between-workflow cache keys a job on its rule's wrapper, params and inputs, and on the
    conda environment only under ``--sdm conda``: without it, graphs built by an older library (a reader or graph
    bug fixed since) would be served to a newer one. Per file, so the dry run's reason names the files changed."""
    return source_digests(*_code_files(PREPROCESS_CODE, package))


def preprocess_code_digest(package: str | Path | None = None) -> str:
    """One digest of PREPROCESS_CODE's files: library_code's old form, which a user's rule may still pass."""
    return source_digest(*_code_files(PREPROCESS_CODE, package))


# The library modules whose code decides the logs generate_can writes, as PREPROCESS_CODE (its wrapper's imports).
SYNTHETIC_CODE = ("can", "compiled.py", "files.py", "rule_items.py", "synthetic.py")


def synthetic_code_digests(package: str | Path | None = None) -> dict[str, str]:
    """``{file of SYNTHETIC_CODE: digest}``, generate_can's library_code param: a build_graphs job's cache key holds
    the key of the job that wrote its logs, not their contents: else an older generator's logs would be served."""
    return source_digests(*_code_files(SYNTHETIC_CODE, package))


def synthetic_code_digest(package: str | Path | None = None) -> str:
    """One digest of the files of SYNTHETIC_CODE, as preprocess_code_digest."""
    return source_digest(*_code_files(SYNTHETIC_CODE, package))


# The library code that decides what training computes (epochs, losses, layers, the curriculum, the device, the
# graphs and models it reads), as in PREPROCESS_CODE: what the training wrappers import, transitively, less logging
# and tracking (an observer of the epoch loop). A resume checkpoint written by other code is not resumed
# (kdgat.training.loop.fingerprint), or an upgraded job would finish the old code's weights with the new code.
TRAINING_CODE = (
    "chain.py",
    "compiled.py",
    "curriculum.py",
    "distillation.py",
    "evaluation/__init__.py",
    "evaluation/metrics.py",
    "evaluation/thresholds.py",
    "files.py",
    "graph_store.py",
    "graphs.py",
    "inference.py",
    "layout.py",
    "model_store.py",
    "models",
    "presets.py",
    "rule_items.py",
    "runtime.py",
    "training",
)


def training_code_digests(package: str | Path | None = None) -> dict[str, str]:
    """``{file of TRAINING_CODE: digest}``, in every training checkpoint's fingerprint: a set-aside one names the file."""
    return source_digests(*_code_files(TRAINING_CODE, package))


def _code_files(names: Iterable[str], package: str | Path | None) -> tuple[Path, list[Path]]:
    package = Path(package) if package is not None else Path(__file__).parent
    paths = [package / name for name in names]
    return package, [f for p in paths for f in (sorted(p.glob("*.py")) if p.is_dir() else [p])]


# Where the preprocess module's generate_can rule writes a synthetic dataset's logs (relative to the workdir).
SYNTHETIC_ROOT = "resources/preprocess"


class LayoutError(ValueError, InputError):
    """A dataset's config entry does not give a usable set of logs; the message names the config key."""


def synthetic_log(dataset: str, split: str, name: str, root: str = SYNTHETIC_ROOT) -> str:
    """The path of one generated log of a synthetic dataset."""
    return f"{root}/{dataset}/{split}/{name}.csv"


def dataset_logs(
    dataset: str,
    spec: dict,
    held_out: Iterable[str] = (),
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    synthetic_root: str = SYNTHETIC_ROOT,
    path_name: str | None = None,
) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """(training logs, {scenario: test logs}, {held-out split: whole captures}) of ``datasets.<dataset>``, from
    exactly one of its ``synthetic.files``, ``path`` or ``files``; the workflow and the ``kdgat`` command both read
    a dataset's logs through this. ``held_out``: the split names of ``preprocess.held_out`` that take whole
    captures (``fusion_NN_<what>`` files or folders, ``files.fusion``); other such files are an error.
    ``path_name``: what a message calls the folder (default ``datasets.<dataset>.path``; the command's ``--path``)."""
    held_out, exclude = tuple(held_out), exclude_words(exclude)
    synthetic = (spec.get("synthetic") or {}).get("files") or []
    files = spec.get("files") or {}
    given = [
        key
        for key, present in (
            ("synthetic.files", bool(synthetic)),
            ("path", bool(spec.get("path"))),
            ("files", any(bool(value) for value in files.values())),
        )
        if present
    ]
    where = f"datasets.{dataset}"
    if len(given) > 1:
        raise LayoutError(
            f"{where}: give its logs in exactly one of synthetic.files, path or files; it has {given}"
        )
    whole: dict[str, list[str]] = {}
    if synthetic:
        train, test = [], {}
        written: dict[str, int] = {}
        for index, entry in enumerate(synthetic):
            split, log = entry["split"], synthetic_log(dataset, entry["split"], entry["name"], synthetic_root)
            if log in written:
                # Both would be written to one file: one of them would be lost (the workflow generates the first).
                raise LayoutError(
                    f"{where}.synthetic.files[{index}]: split {split!r} and name {entry['name']!r} are those of "
                    f"files[{written[log]}] too; each entry writes <split>/<name>.csv, so give it another name"
                )
            written[log] = index
            name = next((name for name in held_out if split.startswith(f"{name}_")), None)
            if split.startswith("train_"):
                train.append(log)
            elif name is not None:
                whole.setdefault(name, []).append(log)
            elif split.startswith("test_"):
                test.setdefault(scenario_name(split), []).append(log)
            else:
                raise LayoutError(
                    f"{where}.synthetic.files: split {split!r} is neither train_*, test_* nor a held-out split "
                    f"of preprocess.held_out ({sorted(held_out)})"
                )
    elif spec.get("path"):
        spec = {**spec, "path": os.path.expanduser(spec["path"])}  # ~/data/can: the home folder, as files are
        compressed = compressed_logs(spec["path"], ("train", "test", *held_out, *HELD_OUT_SPLITS), exclude)
        if compressed:
            shown = ", ".join(str(f.relative_to(spec["path"])) for f in compressed[:3])
            raise LayoutError(
                f"{path_name or where + '.path'}: {len(compressed)} compressed CAN log(s) ({shown}"
                f"{', ...' if len(compressed) > 3 else ''}), which the readers do not read: decompress them first "
                f"(e.g. {COMPRESSED_SUFFIXES[compressed[0].suffix.lower()]} {compressed[0].name})"
            )
        from kdgat.unread_files import warn_unread  # a warning only: not in PREPROCESS_CODE

        warn_unread(
            spec["path"], held_out + HELD_OUT_SPLITS, LOG_SUFFIXES, exclude, path_name or f"{where}.path"
        )
        try:
            found_train, found_test = discover_layout(spec["path"], exclude=exclude)
        except FileNotFoundError as error:
            raise LayoutError(
                f"{path_name or where + '.path'}: {error} (expected train_*/ and test_NN_<scenario>/ folders)"
            ) from None
        train = [str(f) for f in found_train]
        test = {name: [str(f) for f in logs] for name, logs in found_test.items()}
        captures = held_out_captures(spec["path"], dict.fromkeys((*held_out, *HELD_OUT_SPLITS)), exclude)
        _refuse_unwritten(captures, held_out, f"{path_name or where + '.path'}: <split>_*/ folders")
        whole = {name: [str(f) for f in logs] for name, logs in captures.items()}
    else:
        # as written, less a ./ or //, which Snakemake warns of for every input path that has one
        train = [_normalized(f) for f in files.get("train", [])]
        test = {name: [_normalized(f) for f in logs] for name, logs in dict(files.get("test", {})).items()}
        empty = [name for name, logs in test.items() if not logs]
        if empty and any(test.values()):  # with no scenario of logs at all: "no test scenarios" below
            # The workflow hands the preprocess step its scenarios by their logs: one without any would vanish.
            raise LayoutError(
                f"{where}.files.test.{empty[0]}: the test scenario has no logs; give at least one or remove it"
            )
        whole = {
            name: [_normalized(f) for f in files[name]]
            for name in dict.fromkeys((*held_out, *HELD_OUT_SPLITS))
            if files.get(name)
        }
        _refuse_unwritten(whole, held_out, f"{where}.files.<split>")
        listed = [("train", train), *((f"test.{name}", logs) for name, logs in test.items()), *whole.items()]
        for key, logs in listed:  # a folder would reach build_graphs as a log and fail there
            folder = next((index for index, log in enumerate(logs) if Path(log).is_dir()), None)
            if folder is not None:
                raise LayoutError(
                    f"{where}.files.{key}[{folder}]: {logs[folder]} is a folder, not a CAN log file (a folder of "
                    "logs in train_*/ and test_*/ folders goes in `path`)"
                )
    if not train:
        raise LayoutError(
            f"{where}: no training logs; give `synthetic.files`, a `path` with train_*/ folders, or `files.train`"
        )
    if not any(test.values()):
        # Without test scenarios every model would be trained and evaluated, and only the summary would fail.
        raise LayoutError(
            f"{where}: no test scenarios; give `synthetic.files` with test_NN_<scenario> splits, a `path` with "
            "test_NN_<scenario>/ folders, or `files.test`"
        )
    return train, test, whole

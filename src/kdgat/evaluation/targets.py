"""What the evaluation module evaluates: the datasets, variants and seeds its config names, checked at parse time.

The module can be used without the preprocess and kd_gat modules (``module evaluation:`` beside trained models),
so the schemas that check ``datasets`` and ``kd_gat.seeds`` there may never run: a mistake must stop the parse
naming the config key, not become a traceback, an empty run or a wrong set of jobs.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from typing import Any

from kdgat.chain import DEFAULT_SEEDS, VARIANTS

# The largest seed, as the kd_gat schema's kd_gat.seeds.items.maximum (numpy's generators take seeds below 2**32);
# .tests/unit/test_chain.py checks that the two agree.
MAX_SEED = 2**32 - 1


def configured_datasets(config: Mapping[str, Any]) -> list[str]:
    """The dataset names of ``config["datasets"]`` (a mapping of name to settings, or a list of names)."""
    datasets = config.get("datasets")
    if not datasets:
        raise ValueError(
            "config key 'datasets' is missing or empty: the evaluation module evaluates every dataset named there"
        )
    # A string is no list of names: list("tiny") would evaluate datasets "t", "i", "n", "y".
    if not isinstance(datasets, Mapping | list | tuple) or not all(
        isinstance(name, str) for name in datasets
    ):
        raise ValueError(
            f"config key 'datasets' must map each dataset name to its settings (or list the names); got {datasets!r}"
        )
    return list(datasets)


def kd_gat_section(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config["kd_gat"]`` ({} when absent): a ``kd_gat:`` key whose settings are all commented out is None, which
    the kd_gat schema refuses, but that schema does not run beside the evaluation module alone."""
    section = config.get("kd_gat", {})
    if not isinstance(section, Mapping):
        raise ValueError(
            f"config key 'kd_gat' must map its settings (variants, seeds, data_prefix, ...) to values; got {section!r}"
        )
    return section


def configured_data_prefix(config: Mapping[str, Any]) -> str:
    """``kd_gat.data_prefix`` (results/preprocess when absent), normalized (no ./, // or trailing slash): a
    non-empty path, as the kd_gat schema has it (an empty one would look the graphs up under /). Snakemake matches
    paths as written, so ./results/preprocess/x/train.pt was no output of the preprocess module (a missing input);
    one starting with ~ is refused, as Snakemake does not expand it."""
    prefix = kd_gat_section(config).get("data_prefix", "results/preprocess")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(
            "config key 'kd_gat.data_prefix' must be the directory holding the preprocess outputs, a non-empty path; "
            f"got {prefix!r}"
        )
    if prefix.startswith("~"):  # Snakemake stopped on its own "Using '~' ... is not allowed", naming no key
        raise ValueError(
            f"config key 'kd_gat.data_prefix' is {prefix!r}: a path starting with ~ is not expanded (Snakemake "
            "matches paths as written, and expanded it would be absolute, no output of a preprocess module); give "
            "the directory relative to the working directory (results/preprocess for the preprocess module's "
            "outputs) or, for graphs made outside the workflow, absolute (/home/me/graphs)"
        )
    normalized = posixpath.normpath(prefix).rstrip("/")
    if (
        normalized == "."
    ):  # <dataset>/train.pt would be written ./<dataset>/train.pt: matched by no rule either
        raise ValueError(
            f"config key 'kd_gat.data_prefix' is {prefix!r}, the working directory itself: name the directory "
            "holding the dataset folders (results/preprocess for the preprocess module's outputs)"
        )
    return normalized


def configured_variants(config: Mapping[str, Any]) -> list[str]:
    """``kd_gat.variants`` in the chain's order (all of them when absent)."""
    variants = kd_gat_section(config).get("variants", VARIANTS)
    if isinstance(variants, str) or not variants:
        raise ValueError(
            f"config key 'kd_gat.variants' must list the variants to evaluate, some of {list(VARIANTS)}; "
            f"got {variants!r}"
        )
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(
            f"config key 'kd_gat.variants' has unknown variants {unknown}; expected {list(VARIANTS)}"
        )
    return [v for v in VARIANTS if v in variants]


def configured_seeds(config: Mapping[str, Any]) -> list[int]:
    """``kd_gat.seeds`` as integers (its default when absent): a non-empty list of distinct whole numbers from 0
    to ``MAX_SEED``, as the kd_gat schema has them (the evaluation module used alone has no schema to check them)."""
    seeds = kd_gat_section(config).get("seeds", DEFAULT_SEEDS)
    expected = "a non-empty list of distinct integers, each the seed of one training"
    if not isinstance(seeds, list | tuple) or not seeds:
        raise ValueError(f"config key 'kd_gat.seeds' must be {expected}; got {seeds!r}")
    bad = [seed for seed in seeds if isinstance(seed, bool) or not re.fullmatch(r"\d+", str(seed))]
    if bad:
        raise ValueError(f"config key 'kd_gat.seeds' must be {expected}; {bad} are not")
    seeds = [int(seed) for seed in seeds]
    too_large = [seed for seed in seeds if seed > MAX_SEED]
    if too_large:
        raise ValueError(
            f"config key 'kd_gat.seeds' must be {expected} up to {MAX_SEED}; {too_large} are above"
        )
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ValueError(
            f"config key 'kd_gat.seeds' must be {expected}; {repeated} appear twice (one evaluation would count "
            "as two seeds)"
        )
    return seeds

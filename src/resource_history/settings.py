"""Typed settings of the learned resources (the `learned_resources` section of the workflow config)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from wrapper_rules import InputError

WHERE = "learned_resources"
# The most a learned request may ask for: 1 PB of memory (ten times the most memory a run may record, 100 TB,
# benchmarks.LARGEST), ten years of runtime. A scaled peak beyond is a margin or an overhead set far too large
# (margin 1e300 asked for mem_mb 3.8e303), refused naming it rather than handed to a scheduler.
MOST_MB = 10**9
MOST_MINUTES = 10 * 366 * 24 * 60
_SAID: set[str] = set()


def first_time(message: str) -> bool:
    """True the first time this process is given ``message``: a log line said once per Snakemake run, however
    many modules include the learned resources and however often Snakemake evaluates a job's resources."""
    if message in _SAID:
        return False
    _SAID.add(message)
    return True


class SettingsError(ValueError, InputError):
    """A `learned_resources` config value of the wrong type or range (the message names the key)."""


@dataclass(frozen=True)
class LearnedResourceSettings:
    """Defaults here equal the defaults of workflow/schemas/config.schema.yaml (checked by a unit test)."""

    enabled: bool = False
    margin: float = 1.3
    min_history: int = 1
    benchmark_roots: tuple[str, ...] = (".",)
    match_wildcards: tuple[str, ...] = ("dataset",)
    size_scaling: bool = True
    mem_overhead_mb: int = 900
    gpu_overhead_mb: int = 500
    min_runtime: int = 5

    @classmethod
    def from_config(cls, options: Mapping[str, Any] | None) -> LearnedResourceSettings:
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise SettingsError(
                f"{WHERE} must be a mapping of settings (e.g. {{enabled: true}}), got {type(options).__name__} "
                f"{options!r}"
            )
        options = dict(options)
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(options) - known, key=str)
        if unknown:
            raise SettingsError(f"{WHERE}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        for key in ("benchmark_roots", "match_wildcards"):
            if key in options:
                value = options[key]
                # A string is iterable too: "archive" would read as the roots a, r, c, ...
                if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
                    raise SettingsError(f"{WHERE}.{key} must be a list of strings, got {value!r}")
                options[key] = tuple(value)
        settings = cls(**options)
        settings.check()
        return settings

    def check(self) -> None:
        def need(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise SettingsError(f"{WHERE}.{key} must be {expected}, got {shown(getattr(self, key))}")

        need(isinstance(self.enabled, bool), "enabled", "true or false")
        need(isinstance(self.size_scaling, bool), "size_scaling", "true or false")
        # Not infinite: ceil(inf) would fail only when a job's resources are computed, far from the config.
        need(
            is_number(self.margin) and math.isfinite(self.margin) and self.margin >= 1.0,
            "margin",
            "a finite number >= 1",
        )
        need(is_integer(self.min_history) and self.min_history >= 1, "min_history", "an integer >= 1")
        for overhead in ("mem_overhead_mb", "gpu_overhead_mb"):
            value = getattr(self, overhead)
            # not past MOST_MB: a 400-digit integer overflowed to float in the scaling, naming no key
            need(
                is_integer(value) and 0 <= value <= MOST_MB,
                overhead,
                f"an integer >= 0 and <= {MOST_MB} (1 PB)",
            )
        need(
            is_integer(self.min_runtime) and self.min_runtime >= 1, "min_runtime", "an integer >= 1 (minutes)"
        )
        need(len(self.benchmark_roots) >= 1, "benchmark_roots", "a non-empty list of directories")

    def unmatched_wildcards(self, wildcard_names: Iterable[str]) -> list[str]:
        """One warning per name of `match_wildcards` that no rule of the workflow has as a wildcard
        (`wildcard_names`: every rule's): a misspelt name (`datset`) would silently widen every history to all
        wildcard values. Not an error: a name may belong to a rule a later module or a sweep adds."""
        known = sorted(set(wildcard_names))
        warnings = []
        for name in self.match_wildcards:
            if name in known:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            warnings.append(
                f"{WHERE}.match_wildcards: {name!r} is a wildcard of no rule of this workflow, so no history is "
                f"matched on it ({hint}the rules' wildcards: {', '.join(known) or 'none'})"
            )
        return warnings


def shown(value: Any) -> str:
    """A config value as a message shows it: its repr, a huge integer by its first digits and how many it has."""
    text = repr(value)
    return f"{text[:8]}... ({len(text)} digits)" if is_integer(value) and len(text) > 20 else text


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

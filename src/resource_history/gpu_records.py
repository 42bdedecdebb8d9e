"""GPU memory peaks that jobs record themselves: Snakemake's `benchmark:` files measure host memory only.

A GPU record is a JSON object file with the key ``gpu_peak_mem_mb``: the most GPU memory, in MB, the job's CUDA
caching allocator reserved (``torch.cuda.max_memory_reserved`` after resetting its peak at the job's start), or
``null`` when the job ran on the CPU, where nothing is measured. The kd_gat training stages write it into their
metrics.json (kdgat.training.stage.gpu_peak_mb).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from resource_history.benchmarks import LARGEST_MB, BenchmarkFileError, BenchmarkRun

GPU_PEAK_KEY = "gpu_peak_mem_mb"
KIND = "GPU record"


def read_gpu_record(path: str | Path) -> list[BenchmarkRun]:
    """The one run a GPU record holds, with ``gpu_peak_mb`` None when it ran on the CPU."""

    def bad(message: str) -> BenchmarkFileError:
        return BenchmarkFileError(path, message, kind=KIND)

    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise bad(f"cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise BenchmarkFileError(path, f"is not JSON ({error.msg})", line=error.lineno, kind=KIND) from None
    if not isinstance(record, dict):
        raise bad(f"is not a JSON object but a {type(record).__name__}")
    if GPU_PEAK_KEY not in record:
        raise bad(f"has no {GPU_PEAK_KEY!r} key (written before GPU peaks were recorded?)")
    peak = record[GPU_PEAK_KEY]
    if peak is not None and not is_megabytes(peak):
        shown = repr(peak) if len(repr(peak)) <= 40 else f"{repr(peak)[:40]}..."
        raise bad(f"{GPU_PEAK_KEY} {shown} is neither null (CPU) nor a finite number of MB >= 0")
    if peak is not None and peak > LARGEST_MB:
        raise bad(f"{GPU_PEAK_KEY} {peak!r} is more than any GPU holds (at most {LARGEST_MB:g} MB)")
    return [
        BenchmarkRun(
            path=str(path),
            line=None,
            seconds=None,
            max_rss_mb=None,
            input_size_mb=None,
            gpu_peak_mb=None if peak is None else float(peak),
        )
    ]


def is_megabytes(value) -> bool:
    """A finite number >= 0 (JSON also reads NaN, Infinity, and integers too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int beyond any float: math.isfinite cannot convert it
        return False

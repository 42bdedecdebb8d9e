"""Resources learned from benchmark history: a job's next `mem_mb` and `runtime` from what its rule's earlier
runs recorded in their Snakemake `benchmark:` files, and its `gpu_mem_mb` from the CUDA peak they recorded in a GPU
record (resource_history.gpu_records); a job that resumed from partial work marks its benchmark file
(resource_history.resumed) so that its partial time is not learned, and one that restored its outputs from
earlier results marks it so that nothing of it is. Pure Python; the workflow calls it from resource functions
(workflow/modules/learned_resources.smk).
"""

from resource_history.benchmarks import BenchmarkFileError, BenchmarkPattern, BenchmarkRun, read_benchmark
from resource_history.estimate import Estimate, ResourceHistory, SizeFit, size_fit
from resource_history.gpu_records import GPU_PEAK_KEY, read_gpu_record
from resource_history.resumed import (
    clear_mark,
    mark_if_resumed,
    mark_restored,
    mark_resumed,
    restored_reason,
    resumed_reason,
)
from resource_history.settings import LearnedResourceSettings, SettingsError, first_time

__all__ = [
    "BenchmarkFileError",
    "BenchmarkPattern",
    "BenchmarkRun",
    "Estimate",
    "GPU_PEAK_KEY",
    "LearnedResourceSettings",
    "ResourceHistory",
    "SettingsError",
    "SizeFit",
    "clear_mark",
    "first_time",
    "mark_if_resumed",
    "mark_restored",
    "mark_resumed",
    "read_benchmark",
    "read_gpu_record",
    "restored_reason",
    "resumed_reason",
    "size_fit",
]

"""Resources learned from benchmark history: a job's next `mem_mb` and `runtime` from what its rule's earlier
runs recorded in their Snakemake `benchmark:` files, and its `gpu_mem_mb` from the CUDA peak they recorded in a GPU
record (resource_history.gpu_records). Pure Python; the workflow calls it from resource functions
(workflow/modules/learned_resources.smk).
"""

from resource_history.benchmarks import BenchmarkFileError, BenchmarkPattern, BenchmarkRun, read_benchmark
from resource_history.estimate import Estimate, ResourceHistory, SizeFit, size_fit
from resource_history.gpu_records import GPU_PEAK_KEY, read_gpu_record
from resource_history.settings import LearnedResourceSettings, SettingsError

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
    "read_benchmark",
    "read_gpu_record",
    "size_fit",
]

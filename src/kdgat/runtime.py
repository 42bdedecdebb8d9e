"""Device choice, seeding, mixed precision and RNG state capture: the parts every training stage shares.

`python -m kdgat.runtime --check` runs the GPU check of `select_device` on its own (the SLURM preflight
starts it on a GPU node with srun) and prints what torch sees.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from wrapper_rules import InputError

# The values batch systems and container runtimes use for "no GPU here" (SLURM sets NoDevFiles when a GRES has no
# device files; the NVIDIA container runtime takes void/none; -1 and "" hide every GPU from CUDA).
NO_GPU_VALUES = {"", "-1", "nodevfiles", "none", "void"}
# Present only where the NVIDIA driver exposes GPUs to this process (host or a GPU container).
NVIDIA_CONTROL_DEVICE = Path("/dev/nvidiactl")
PYTORCH_INDEX = "https://download.pytorch.org/whl"
# The last torch release with CUDA 12.6 builds, the only builds that still carry Volta (sm_70) kernels.
LAST_TORCH_WITH_CU126 = "2.14"
# The newest GPU the cu126 builds have kernels for: they carry sm_50 to sm_90
# (torch.cuda.PYTORCH_RELEASES_CODE_CC["12.6"]; a test keeps the two equal).
NEWEST_CAPABILITY_OF_CU126 = (9, 0)
# The oldest NVIDIA driver (Linux, major version) a CUDA build runs on, by CUDA major version: NVIDIA, "CUDA
# Compatibility", Minor Version Compatibility, table "CUDA Toolkit 11.x, 12.x, and 13.x Driver Version Ranges"
# (docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html): 13.x >= 580, 12.x >= 525. The
# drivers the toolkits ship with (560.28 for 12.6, 580.65 for 13.0) are newer; the wheels need only the
# family's minimum.
MINIMUM_DRIVER = {11: 450, 12: 525, 13: 580}


class DeviceSettingError(ValueError, InputError):
    """A device setting that names no device torch knows; the message names the config key."""


class GPUUnusableError(RuntimeError, InputError):
    """The job holds a GPU (or asked for CUDA) but this torch build cannot run on it. The message names the GPU
    and says what to install or set: a wrapper ends on it with that one line and exit status 1, no traceback
    (there is no code to read, only the environment or the device setting to fix)."""


def held_gpus(environ=None) -> str | None:
    """The GPUs the batch system or container runtime gave this process, as `NAME=value`; None when none.

    SLURM sets CUDA_VISIBLE_DEVICES for a job with a GPU GRES; the NVIDIA container runtime (Kubernetes device
    plugin, docker --gpus) sets NVIDIA_VISIBLE_DEVICES. CUDA base images set NVIDIA_VISIBLE_DEVICES=all in every
    container, GPU or not, so `all` counts only where the driver's control device exists.
    """
    environ = os.environ if environ is None else environ
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        value = environ.get(name)
        if value is None or value.strip().lower() in NO_GPU_VALUES:
            continue
        if name == "NVIDIA_VISIBLE_DEVICES" and value.strip().lower() == "all":
            if not NVIDIA_CONTROL_DEVICE.exists():
                continue
        return f"{name}={value}"
    return None


def arch_runs_on(arch: str, capability: tuple[int, int]) -> bool:
    """Whether code compiled for `arch` (an entry of torch.cuda.get_arch_list()) runs on a GPU of `capability`.

    Binary code (sm_XY) runs on the same major version with an equal or higher minor; arch-specific code (sm_90a)
    only on exactly that version; PTX (compute_XY) is compiled by the driver for any GPU of XY or newer.
    """
    match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch)
    if not match:
        return False
    kind, major, minor, suffix = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
    if kind == "compute":
        return (major, minor) <= capability
    if suffix == "a":
        return (major, minor) == capability
    return major == capability[0] and minor <= capability[1]


def cuda_flavour_for(capability: tuple[int, int]) -> str:
    """The PyTorch wheel index that carries kernels for this GPU: cu126 for Volta (V100), else cu130."""
    if capability < (7, 5):
        return "cu126"
    return "cu130"


def pip_install(flavour: str) -> str:
    """The pip command that installs this torch release from the PyTorch wheel index `flavour` (cu126...)."""
    version = torch.__version__.split("+")[0]
    if flavour == "cu126" and tuple(int(p) for p in version.split(".")[:2]) > (2, 14):
        # No cu126 build of this release: the newest one that still has Volta kernels.
        return f"pip install 'torch=={LAST_TORCH_WITH_CU126}.*' --index-url {PYTORCH_INDEX}/cu126"
    return f"pip install torch=={version} --index-url {PYTORCH_INDEX}/{flavour}"


def install_command(capability: tuple[int, int] | None) -> str:
    """The pip command that installs a torch build able to run on a GPU of `capability` (both when unknown)."""
    if capability is None:
        return f"{install_command((7, 0))} for a V100 (sm_70), {install_command((8, 0))} for an A100/H100"
    return pip_install(cuda_flavour_for(capability))


def query_nvidia_smi(field: str) -> str | None:
    """The first visible GPU's ``field`` as nvidia-smi reports it (``--query-gpu``); None without nvidia-smi or
    an answer. Works with a CPU-only torch and without a usable driver library."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        return subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


def capability_from_nvidia_smi() -> tuple[int, int] | None:
    """The first visible GPU's compute capability from nvidia-smi; None if unknown."""
    match = re.match(r"\s*(\d+)\.(\d+)", query_nvidia_smi("compute_cap") or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def name_from_nvidia_smi() -> str | None:
    """The first visible GPU's name as nvidia-smi reports it (e.g. Tesla V100-SXM2-16GB); None if unknown."""
    lines = (query_nvidia_smi("name") or "").strip().splitlines()
    # nvidia-smi without a working driver prints its complaint ("NVIDIA-SMI has failed ...") on stdout
    return lines[0].strip() if lines and "NVIDIA-SMI" not in lines[0] else None


def gpu_name(index: int = 0) -> str | None:
    """CUDA device ``index``'s name: torch's where it can ask the GPU, else nvidia-smi's; None if unknown."""
    if torch.version.cuda is not None and torch.cuda.is_available():
        try:
            return torch.cuda.get_device_name(index)
        except (AssertionError, RuntimeError):  # torch's answers for an index it does not see
            return None
    return name_from_nvidia_smi()


def driver_from_nvidia_smi() -> str | None:
    """The NVIDIA driver version nvidia-smi reports (e.g. 535.104.05); None without nvidia-smi or answer."""
    match = re.match(r"\s*(\d+(?:\.\d+)*)", query_nvidia_smi("driver_version") or "")
    return match.group(1) if match else None


def driver_problem(build: str, capability: tuple[int, int] | None) -> str:
    """Why a CUDA build that has kernels for the GPU (or sees no GPU at all) cannot use CUDA, and the fix."""
    cuda = torch.version.cuda
    minimum = MINIMUM_DRIVER.get(int(cuda.split(".")[0]))
    needs = f"driver {minimum} or newer" if minimum else f"a driver released for CUDA {cuda} or later"
    seen = (
        f"the GPU has compute capability {capability[0]}.{capability[1]}, which the build has kernels for"
        if capability
        else "the GPU's compute capability is not visible"
    )
    driver = driver_from_nvidia_smi()
    if driver and minimum and int(driver.split(".")[0]) >= minimum:
        return (
            f"{build} cannot use CUDA here (torch.cuda.is_available() is False), although nvidia-smi reports "
            f"driver {driver}, new enough for CUDA {cuda} builds ({needs}); {seen}. Check that "
            f"CUDA_VISIBLE_DEVICES names a GPU that `nvidia-smi -L` lists and, in a container, that the "
            f"NVIDIA runtime mounts the driver's libcuda.so"
        )
    found = f"nvidia-smi reports driver {driver}" if driver else "no driver version is visible"
    fix = f"update the NVIDIA driver ({needs})"
    cu126_needs = MINIMUM_DRIVER[12]
    if minimum and minimum > cu126_needs and (capability is None or capability <= NEWEST_CAPABILITY_OF_CU126):
        # The CUDA 12.6 build runs on older drivers and still has kernels for this GPU.
        cu126 = pip_install("cu126")
        fix += f", or install the CUDA 12.6 build, which needs driver {cu126_needs} or newer: {cu126}"
    return (
        f"{build} cannot use CUDA here (torch.cuda.is_available() is False): the NVIDIA driver is missing or "
        f"older than CUDA {cuda} builds need ({needs}; {found}); {seen}. Check with `nvidia-smi` (its "
        f"header shows the Driver Version). Fix: {fix}"
    )


def cuda_problem(index: int = 0) -> str | None:
    """Why torch cannot run on CUDA device `index`, or None when it can."""
    build = f"torch {torch.__version__} (torch.version.cuda={torch.version.cuda})"
    if torch.version.cuda is None:
        capability = capability_from_nvidia_smi()
        seen = (
            f"the GPU has compute capability {capability[0]}.{capability[1]}"
            if capability
            else "its compute capability is not visible"
        )
        return f"{build} is a CPU-only build; {seen}. Install a CUDA build: {install_command(capability)}"
    available = torch.cuda.is_available()
    # Without a usable driver torch cannot ask the GPU; nvidia-smi can. The arch list is the build's own.
    capability = tuple(torch.cuda.get_device_capability(index)) if available else capability_from_nvidia_smi()
    arch_list = torch.cuda.get_arch_list()
    if capability and not any(arch_runs_on(arch, capability) for arch in arch_list):
        name = gpu_name(index)
        return (
            f"{build} has no kernels for this GPU: compute capability {capability[0]}.{capability[1]} "
            f"(sm_{capability[0]}{capability[1]}){f' of the {name}' if name else ''}, the build has "
            f"{' '.join(arch_list) or 'none'}. "
            f"Install a build that has them: {install_command(capability)}"
        )
    if not available:
        # The build fits the GPU (or the GPU is not visible at all): the driver is what is missing.
        return driver_problem(build, capability)
    return None


def cpu_name(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model (``cpuinfo``'s first `model name`, e.g. AMD EPYC 7763 64-Core Processor), else what the
    platform module reports, else `unknown CPU`."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device, threads: int | None = None) -> str:
    """The hardware a speed measured on ``device`` is a figure of: the GPU's model for CUDA (e.g. NVIDIA H100 80GB
    HBM3), the CPU's model and torch's thread count (``threads``, else torch's current count) for the CPU."""
    if device.type == "cuda":
        return gpu_name(device.index or 0) or "GPU of unknown model"
    if device.type == "cpu":
        return f"{cpu_name()}, {threads or torch.get_num_threads()} threads"
    return device.type


def torch_build() -> str:
    """The torch build that computes (and times) an evaluation: its version and CUDA version, e.g. 2.13.0+cu126
    CUDA 12.6; another build can give other speed figures and, through other kernels, other last digits."""
    return f"torch {torch.__version__} CUDA {torch.version.cuda}"


# Where a job's device is set, as each of its callers names it, for the messages of select_device: a wrapper user
# has neither config key, a workflow user neither param.
TRAINING_DEVICE = (
    "kd_gat.device in the workflow's config, params.settings.device of a training wrapper, "
    "--device of kdgat train"
)
EVALUATION_DEVICE = (
    "evaluation.device in the workflow's config, params.device of evaluate_detector, "
    "--device of kdgat evaluate"
)


def select_device(
    spec: str = "auto", setting: str = "config kd_gat.device / evaluation.device"
) -> torch.device:
    """`auto` picks CUDA when torch can use a GPU, else CPU; `cpu`, `cuda`, `cuda:1` are taken literally.

    A job that holds a GPU (held_gpus; where no variable names one, a GPU torch sees) must use it: with `auto`, a
    torch that cannot run on that GPU raises GPUUnusableError at once instead of training on the CPU. `cpu` runs
    on the CPU anywhere. A GPU index the job does not see (GPUUnusableError) or a device torch does not know
    (ValueError) fails naming the setting, as ``setting`` says where it is set.
    """
    if spec in (None, "", "auto"):
        held = held_gpus()
        if torch.version.cuda is not None and torch.cuda.is_available():
            problem = cuda_problem()
            if problem is None:
                return torch.device("cuda")
        elif held is None:
            return torch.device("cpu")
        else:
            problem = cuda_problem()
        raise GPUUnusableError(
            f"this job holds a GPU ({held or 'torch sees one'}) and the device is 'auto', but {problem}. "
            f"To run on the CPU on purpose, set device: cpu ({setting})."
        )
    expected = f"device {spec!r} ({setting}): expected auto, cpu, cuda or cuda:N"
    try:
        device = torch.device(spec)
    except RuntimeError as error:  # torch's message names no setting
        raise DeviceSettingError(f"{expected} ({error})") from None
    index = spec.partition(":")[2] if isinstance(spec, str) else ""
    # torch keeps the index in 8 bits: cuda:255 is cuda (GPU 0, without a word), cuda:128 cuda:-128; cuda:00 fails
    if device.type == "cuda" and index and (not index.isdigit() or str(device.index) != index):
        raise DeviceSettingError(f"{expected} with N from 0 to 127 (torch's device index)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GPUUnusableError(
                f"device {spec!r} requested ({setting}) but CUDA is not available: {cuda_problem()}"
            )
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:  # torch would fail on it with a bare "Invalid device id"
            raise GPUUnusableError(
                f"device {spec!r} requested ({setting}) but this job sees "
                f"{count} GPU{'s' if count != 1 else ''} (cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}); "
                f"a batch system numbers the GPUs it gives a job from 0 ({held_gpus() or 'no GPU held'})"
            )
        problem = cuda_problem(device.index or 0)
        if problem:
            raise GPUUnusableError(f"device {spec!r} requested but {problem}")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (third-party code may draw from the legacy global state)
    torch.manual_seed(seed)


def autocast(device: torch.device):
    """fp16 autocast on CUDA (mixed precision), a no-op on CPU where it would only slow things down."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda")


def rng_state(loader_generator: torch.Generator | None = None) -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def restore_rng_state(state: dict, loader_generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        # One state per GPU the writing process saw. A process that sees fewer (a checkpoint written on a node
        # with more GPUs visible) gets those of the GPUs both saw: set_rng_state_all would raise on the first GPU
        # it lacks, and the checkpoint would be set aside; one that sees more keeps its own for the others.
        for index, gpu_state in enumerate(list(state["cuda"])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, index)
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def check(out=sys.stdout) -> int:
    """Print what torch sees; 0 only when select_device("auto") picks a GPU here and a kernel runs on it."""
    print(f"torch {torch.__version__}, built with CUDA {torch.version.cuda}", file=out)
    print(f"torch.cuda.get_arch_list(): {torch.cuda.get_arch_list()}", file=out)
    print(f"GPUs held by this process: {held_gpus() or 'none'}", file=out)
    if torch.version.cuda is not None and torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            print(
                f"cuda:{index}: {torch.cuda.get_device_name(index)}, compute capability {major}.{minor}",
                file=out,
            )
    try:
        device = select_device("auto")
    except GPUUnusableError as error:
        print(f"FAIL: {error}", file=out)
        return 1
    if device.type != "cuda":
        print(
            "FAIL: no GPU is assigned to this process (CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES)",
            file=out,
        )
        return 1
    # A real kernel launch: a build without this GPU's architecture fails here with "no kernel image".
    value = (torch.ones(8, device=device) * 2).sum().item()
    if value != 16.0:
        print(f"FAIL: a test kernel on {device} returned {value}, expected 16.0", file=out)
        return 1
    print(f"OK: training with device auto would run on {device}", file=out)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="check that torch can train on this process's GPU"
    )
    if not parser.parse_args().check:
        parser.error("nothing to do: pass --check")
    sys.exit(check())

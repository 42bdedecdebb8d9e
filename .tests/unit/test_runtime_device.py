"""A job given a GPU uses it or stops at once: select_device against held GPUs, CUDA builds and architectures.

The test machine has the CPU wheel of torch and no GPU, so the CUDA side of torch is replaced function by function
(torch.version.cuda, torch.cuda.is_available, get_device_capability, get_arch_list) with what a CUDA build reports
on a V100 or an A100; the environment variables are the ones SLURM and the NVIDIA container runtime set. Where
the test is how nvidia-smi's answers are read, a script named nvidia-smi on PATH answers as the real one does.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings

import pytest
import torch
from testkit import REPO, pretend_cpu_wheel, wrapper_refusal

from kdgat import runtime
from kdgat.evaluation.run import evaluate_files
from kdgat.runtime import DeviceSettingError, GPUUnusableError, arch_runs_on, held_gpus, select_device
from kdgat.training import vgae as vgae_training
from kdgat.training.settings import StageSettings


def release_capabilities(version: str) -> set[int]:
    """The x86_64 compute capabilities torch itself lists for its CUDA ``version`` builds (torch/cuda/__init__.py):
    per processor type in torch 2.13, one set for all in earlier releases (2.11 on the GPU check's machine)."""
    codes = torch.cuda.PYTORCH_RELEASES_CODE_CC[version]
    return codes["x86_64"] if isinstance(codes, dict) else codes


BUILD_ARCHS = {
    flavour: [f"sm_{cc}" for cc in sorted(release_capabilities(version))]
    for flavour, version in {"cu126": "12.6", "cu130": "13.0"}.items()
}
VERSION = torch.__version__.split("+")[0]
V100, A100, H100, B200 = (7, 0), (8, 0), (9, 0), (10, 0)
# What torch.cuda.get_device_name and nvidia-smi call each.
GPU_NAMES = {
    V100: "Tesla V100-SXM2-16GB",
    A100: "NVIDIA A100-SXM4-40GB",
    H100: "NVIDIA H100 80GB HBM3",
    B200: "NVIDIA B200",
}
# The functions that ask nvidia-smi, before any test replaces them.
CAPABILITY_FROM_NVIDIA_SMI = runtime.capability_from_nvidia_smi
DRIVER_FROM_NVIDIA_SMI = runtime.driver_from_nvidia_smi
CU126_INSTALL = f"pip install torch=={VERSION} --index-url https://download.pytorch.org/whl/cu126"
CU130_INSTALL = f"pip install torch=={VERSION} --index-url https://download.pytorch.org/whl/cu130"


@pytest.fixture
def no_gpu_env(monkeypatch, tmp_path):
    """torch's CPU wheel on a machine that holds no GPU (whatever this one has); tests change it from there."""
    pretend_cpu_wheel(monkeypatch, tmp_path)
    return monkeypatch


def cuda_build(
    monkeypatch,
    flavour: str,
    capability: tuple[int, int] | None,
    available: bool = True,
    driver: str | None = None,
) -> None:
    """Make torch look like a CUDA build of `flavour` on a machine with one GPU of `capability`, whose
    nvidia-smi reports `driver`. The arch list is the build's own, there with or without a usable driver
    (torch 2.13's get_arch_list asks only whether torch was compiled with CUDA). Asked about a GPU index it does
    not have, it fails as torch does (get_device_properties: AssertionError "Invalid device id")."""

    def get_device_capability(index=0):
        if not 0 <= index < 1:
            raise AssertionError("Invalid device id")
        return capability

    monkeypatch.setattr(torch.version, "cuda", {"cu126": "12.6", "cu130": "13.0"}[flavour])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if available else 0)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: BUILD_ARCHS[flavour])
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(
        torch.cuda, "get_device_name", lambda index=0: GPU_NAMES[get_device_capability(index)]
    )
    monkeypatch.setattr(runtime, "capability_from_nvidia_smi", lambda: capability)
    monkeypatch.setattr(runtime, "driver_from_nvidia_smi", lambda: driver)
    monkeypatch.setattr(runtime, "name_from_nvidia_smi", lambda: GPU_NAMES.get(capability))


def refusal_holding_gpu(monkeypatch, visible: str = "0") -> str:
    """The message with which select_device("auto") refuses while the job holds GPU `visible` (as SLURM sets it)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(GPUUnusableError) as error:
        select_device("auto")
    return str(error.value)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, None),
        ({"CUDA_VISIBLE_DEVICES": "0"}, "CUDA_VISIBLE_DEVICES=0"),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, "CUDA_VISIBLE_DEVICES=0,1"),
        ({"CUDA_VISIBLE_DEVICES": ""}, None),
        ({"CUDA_VISIBLE_DEVICES": "-1"}, None),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, None),
        ({"NVIDIA_VISIBLE_DEVICES": "GPU-5f1c"}, "NVIDIA_VISIBLE_DEVICES=GPU-5f1c"),
        ({"NVIDIA_VISIBLE_DEVICES": "void"}, None),
        ({"NVIDIA_VISIBLE_DEVICES": "none"}, None),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, None),  # no /dev/nvidiactl here: a CUDA image on a CPU node
        # A SLURM job in a GPU container: CUDA_VISIBLE_DEVICES is what CUDA numbers the GPUs by, so it is named.
        ({"CUDA_VISIBLE_DEVICES": "3", "NVIDIA_VISIBLE_DEVICES": "GPU-5f1c"}, "CUDA_VISIBLE_DEVICES=3"),
        # A container given a GPU with CUDA hidden still holds it (device auto then stops, naming the variable).
        (
            {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "GPU-5f1c"},
            "NVIDIA_VISIBLE_DEVICES=GPU-5f1c",
        ),
    ],
)
def test_held_gpus_reads_what_slurm_and_the_container_runtime_set(variables, expected, monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "NVIDIA_CONTROL_DEVICE", tmp_path / "no-nvidiactl")  # a GPU machine has one
    assert held_gpus(variables) == expected


def test_nvidia_visible_devices_all_counts_where_the_driver_device_exists(tmp_path, monkeypatch):
    control = tmp_path / "nvidiactl"
    control.touch()
    monkeypatch.setattr(runtime, "NVIDIA_CONTROL_DEVICE", control)
    assert held_gpus({"NVIDIA_VISIBLE_DEVICES": "all"}) == "NVIDIA_VISIBLE_DEVICES=all"


@pytest.mark.parametrize(
    ("arch", "capability", "runs"),
    [
        ("sm_70", V100, True),
        ("sm_75", V100, False),
        ("sm_80", (8, 6), True),
        ("sm_86", A100, False),
        ("sm_90", H100, True),
        ("sm_90a", H100, True),
        ("sm_90a", (10, 0), False),
        ("sm_100f", (10, 3), True),
        ("sm_80", H100, False),  # binary code runs within its major version only
        ("sm_100a", (10, 3), False),  # arch-specific code: that exact version, not its family
        ("compute_70", A100, True),
        ("compute_80", A100, True),  # PTX of the GPU's own version
        ("compute_90", A100, False),
        ("not-an-arch", V100, False),
    ],
)
def test_arch_compatibility(arch, capability, runs):
    assert arch_runs_on(arch, capability) is runs


def test_only_the_cu126_builds_carry_volta_kernels():
    assert any(arch_runs_on(a, V100) for a in BUILD_ARCHS["cu126"])
    assert not any(arch_runs_on(a, V100) for a in BUILD_ARCHS["cu130"])
    for gpu in (A100, H100):
        assert any(arch_runs_on(a, gpu) for a in BUILD_ARCHS["cu130"])


def test_the_install_command_names_cu130_for_every_gpu_it_has_kernels_for_else_cu126():
    # cu126 ends with torch 2.14: only a GPU the cu130 builds have no kernels for (Volta) is sent there.
    cu130 = {divmod(cc, 10) for cc in release_capabilities("13.0")}
    for capability in sorted(cu130 | {divmod(cc, 10) for cc in release_capabilities("12.6")}):
        flavour = "cu130" if capability in cu130 else "cu126"
        assert runtime.install_command(capability).endswith(f"/whl/{flavour}"), capability


def test_the_last_torch_release_with_cu126_builds_is_pinned_as_it_is(monkeypatch):
    # It has a cu126 build of its own: the command installs that very release, not the newest of its series.
    release = f"{runtime.LAST_TORCH_WITH_CU126}.1"
    monkeypatch.setattr(torch, "__version__", f"{release}+cu130")
    expected = f"pip install torch=={release} --index-url https://download.pytorch.org/whl/cu126"
    assert runtime.install_command(V100) == expected


def test_cpu_wheel_on_a_slurm_gpu_job_stops_with_the_fix(no_gpu_env):
    message = refusal_holding_gpu(no_gpu_env)
    assert "CUDA_VISIBLE_DEVICES=0" in message
    assert f"torch {torch.__version__} (torch.version.cuda=None)" in message
    # The GPU's capability is unknown (no nvidia-smi): both commands, each with the GPUs it is for.
    assert f"{CU126_INSTALL} for a V100 (sm_70), {CU130_INSTALL} for an A100/H100" in message
    assert "device: cpu" in message


def fake_nvidia_smi(monkeypatch, tmp_path, capability: str | None, driver: str | None) -> None:
    """An nvidia-smi on PATH (and nothing else there) that answers --query-gpu as the real one does for two GPUs:
    one value a line, a header line unless the format says noheader. `capability` None: a driver older than the
    compute_cap field (470.x prints 'Field "compute_cap" is not a valid field to query.' and exits 2); `driver` None
    too: no driver loaded (nvidia-smi "has failed because it couldn't communicate with the NVIDIA driver")."""
    lines = {
        "compute_cap": capability and f"printf '%s\\n%s\\n' {capability} {capability}",
        "driver_version": driver and f"printf '%s\\n%s\\n' {driver} {driver}",
    }
    cases = []
    for field, answer in lines.items():
        if answer is None and driver is None:
            answer = 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9'
        elif answer is None:
            answer = f"echo 'Field \"{field}\" is not a valid field to query.'; exit 2"
        else:
            answer = f'[ "$2" = --format=csv,noheader ] || echo {field}; {answer}'
        cases.append(f"  --query-gpu={field}) {answer} ;;")
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir(parents=True)
    script.write_text('#!/bin/sh\ncase "$1" in\n' + "\n".join(cases) + "\n  *) exit 2 ;;\nesac\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(script.parent))
    monkeypatch.setattr(runtime, "capability_from_nvidia_smi", CAPABILITY_FROM_NVIDIA_SMI)
    monkeypatch.setattr(runtime, "driver_from_nvidia_smi", DRIVER_FROM_NVIDIA_SMI)


def test_the_capability_and_driver_are_read_from_nvidia_smi(no_gpu_env, tmp_path):
    # A CPU wheel in a container given a B200: only nvidia-smi knows which GPU it is.
    fake_nvidia_smi(no_gpu_env, tmp_path, "10.0", "580.65.06")
    no_gpu_env.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-5f1c")
    with pytest.raises(GPUUnusableError) as error:
        select_device("auto")
    assert f"the GPU has compute capability 10.0. Install a CUDA build: {CU130_INSTALL}. To run" in str(
        error.value
    )
    # A CUDA build that cannot reach the driver: the driver version is nvidia-smi's, whole.
    cuda_build(no_gpu_env, "cu130", None, available=False)
    fake_nvidia_smi(no_gpu_env, tmp_path / "old", "9.0", "535.104.05")
    message = refusal_holding_gpu(no_gpu_env)
    assert (
        "(driver 580 or newer; nvidia-smi reports driver 535.104.05); the GPU has compute capability 9.0"
        in message
    )


def test_what_nvidia_smi_cannot_tell_is_called_not_visible(no_gpu_env, tmp_path):
    # A driver older than the compute_cap field: the driver is known, the capability is not.
    cuda_build(no_gpu_env, "cu130", None, available=False)
    fake_nvidia_smi(no_gpu_env, tmp_path, None, "470.82.01")
    message = refusal_holding_gpu(no_gpu_env)
    assert "nvidia-smi reports driver 470.82.01); the GPU's compute capability is not visible" in message
    # No driver loaded: nvidia-smi fails, and neither is known.
    fake_nvidia_smi(no_gpu_env, tmp_path / "none", None, None)
    message = refusal_holding_gpu(no_gpu_env)
    assert "no driver version is visible); the GPU's compute capability is not visible" in message


def test_cpu_wheel_names_the_gpu_capability_nvidia_smi_reports(no_gpu_env):
    no_gpu_env.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-5f1c")
    no_gpu_env.setattr(runtime, "capability_from_nvidia_smi", lambda: V100)
    with pytest.raises(GPUUnusableError, match="compute capability 7.0") as error:
        select_device("auto")
    assert "whl/cu130" not in str(error.value)  # a V100 needs cu126, nothing else


def test_cu130_build_on_a_v100_stops_before_any_kernel(no_gpu_env):
    cuda_build(no_gpu_env, "cu130", V100)
    message = refusal_holding_gpu(no_gpu_env)
    assert "torch.version.cuda=13.0" in message and "compute capability 7.0 (sm_70)" in message
    assert "sm_75 sm_80" in message  # what the build has
    assert f"pip install torch=={VERSION} --index-url https://download.pytorch.org/whl/cu126" in message
    assert "whl/cu130" not in message  # the build it has already: no kernels for a V100
    # An explicit cuda device gets the same check.
    with pytest.raises(GPUUnusableError, match="sm_70"):
        select_device("cuda:0")


@pytest.mark.parametrize(("flavour", "capability"), [("cu126", V100), ("cu126", A100), ("cu130", H100)])
def test_a_build_with_the_gpus_architecture_trains_on_it(no_gpu_env, flavour, capability):
    cuda_build(no_gpu_env, flavour, capability)
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert select_device("auto") == torch.device("cuda")
    assert select_device("cuda") == torch.device("cuda")


@pytest.mark.parametrize("spec", ["cuda:1", "cuda:7"])
def test_a_gpu_index_the_job_does_not_have_names_the_config_key_and_the_gpus_it_has(no_gpu_env, spec):
    """A job holding one GPU sees it as cuda:0 (the batch system renumbers what it gives from 0); cuda:1 failed
    with torch's bare AssertionError("Invalid device id")."""
    cuda_build(no_gpu_env, "cu130", H100)
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(GPUUnusableError, match=rf"device '{spec}' requested \(config kd_gat\.device / evaluation"
                       r"\.device\) but this job sees 1 GPU \(cuda:0\)"):  # fmt: skip
        select_device(spec)
    with pytest.raises(
        GPUUnusableError, match=r"numbers the GPUs it gives a job from 0 \(CUDA_VISIBLE_DEVICES=3\)$"
    ):
        select_device(spec)
    assert select_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "CPU"])
def test_a_device_torch_does_not_know_names_the_config_key(spec):
    with pytest.raises(ValueError, match=rf"device '{spec}' \(config kd_gat\.device / evaluation\.device\): "
                       r"expected auto, cpu, cuda or cuda:N"):  # fmt: skip
        select_device(spec)


def test_cuda_build_without_a_usable_driver_names_the_build(no_gpu_env):
    # The AKS default: the cu130 image on an H100 node whose driver is older than CUDA 13 needs.
    cuda_build(no_gpu_env, "cu130", H100, available=False, driver="535.104.05")
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(GPUUnusableError, match=r"torch.version.cuda=13.0\) cannot use CUDA here") as error:
        select_device("auto")
    message = str(error.value)
    assert "compute capability 9.0, which the build has kernels for" in message
    needs = "older than CUDA 13.0 builds need (driver 580 or newer; nvidia-smi reports driver 535.104.05)"
    assert needs in message
    assert "Check with `nvidia-smi`" in message
    # The fix is the driver, or the build that runs on an older one; never the build already installed.
    assert "Fix: update the NVIDIA driver (driver 580 or newer)" in message
    assert f"or install the CUDA 12.6 build, which needs driver 525 or newer: {CU126_INSTALL}" in message
    assert "whl/cu130" not in message


def test_a_build_without_the_gpus_kernels_says_so_even_where_the_driver_is_too_old(no_gpu_env):
    # torch cannot ask the GPU without a usable driver; nvidia-smi's capability shows the build cannot run on it.
    cuda_build(no_gpu_env, "cu130", V100, available=False, driver="535.104.05")
    message = refusal_holding_gpu(no_gpu_env)
    assert "has no kernels for this GPU: compute capability 7.0 (sm_70)" in message
    assert "which the build has kernels for" not in message
    assert CU126_INSTALL in message


def test_device_cuda_where_torch_has_no_cuda_names_the_build_and_the_fix(no_gpu_env):
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(GPUUnusableError) as error:
            select_device(spec)
        message = str(error.value)
        requested = f"device '{spec}' requested (config kd_gat.device / evaluation.device)"
        assert f"{requested} but CUDA is not available" in message
        assert f"torch {torch.__version__} (torch.version.cuda=None) is a CPU-only build" in message
        assert "Install a CUDA build: pip install" in message


def two_gpus(monkeypatch, capabilities: list[tuple[int, int]]) -> None:
    """After cuda_build: the job holds one GPU of each of `capabilities`, cuda:0 the first."""

    def get_device_capability(index=0):
        if not 0 <= index < len(capabilities):
            raise AssertionError("Invalid device id")
        return capabilities[index]

    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: f"GPU {capabilities[index]}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")


def test_device_cuda_n_is_checked_against_gpu_n(no_gpu_env):
    cuda_build(no_gpu_env, "cu130", H100)
    two_gpus(no_gpu_env, [H100, V100])
    assert select_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(GPUUnusableError, match=r"device 'cuda:1' requested but .* compute capability 7\.0"):
        select_device("cuda:1")


def test_a_gpu_index_past_two_gpus_names_both(no_gpu_env):
    cuda_build(no_gpu_env, "cu130", H100)
    two_gpus(no_gpu_env, [H100, A100])
    with pytest.raises(GPUUnusableError) as error:
        select_device("cuda:2")
    assert str(error.value).endswith(
        "but this job sees 2 GPUs (cuda:0 to cuda:1); a batch system numbers the GPUs it gives a job from 0 "
        "(CUDA_VISIBLE_DEVICES=0,1)"
    )
    assert select_device("cuda:1") == torch.device("cuda", 1)


def test_check_lists_every_gpu_torch_sees(no_gpu_env):
    cuda_build(no_gpu_env, "cu130", V100)
    two_gpus(no_gpu_env, [V100, A100])
    out = io.StringIO()
    assert runtime.check(out) == 1  # cuda:0, which device auto takes, is a V100 the cu130 build cannot run on
    shown = out.getvalue()
    for index, (major, minor) in enumerate([V100, A100]):
        assert f"cuda:{index}: GPU {(major, minor)}, compute capability {major}.{minor}" in shown
    assert "FAIL: this job holds a GPU (CUDA_VISIBLE_DEVICES=0,1)" in shown


def test_cuda_build_on_a_node_without_driver_or_nvidia_smi_blames_the_driver(no_gpu_env):
    cuda_build(no_gpu_env, "cu130", None, available=False)
    message = refusal_holding_gpu(no_gpu_env)
    assert "the NVIDIA driver is missing or older than CUDA 13.0 builds need" in message
    assert "no driver version is visible); the GPU's compute capability is not visible" in message
    assert "update the NVIDIA driver (driver 580 or newer), or install the CUDA 12.6 build" in message


@pytest.mark.parametrize(
    ("flavour", "capability", "minimum"),
    [
        ("cu126", V100, 525),  # already the build with the lowest driver minimum
        ("cu130", (10, 0), 580),  # a B200: the cu126 build has no kernels for it
    ],
)
def test_when_only_a_newer_driver_helps_no_install_command_is_offered(
    no_gpu_env, flavour, capability, minimum
):
    cuda_build(no_gpu_env, flavour, capability, available=False, driver="470.82.01")
    message = refusal_holding_gpu(no_gpu_env)
    assert message.count(f"Fix: update the NVIDIA driver (driver {minimum} or newer). To run on the CPU") == 1
    assert "pip install" not in message


def test_a_driver_new_enough_that_still_shows_no_gpu_points_at_the_device_setup(no_gpu_env):
    cuda_build(no_gpu_env, "cu130", H100, available=False, driver="580.65.06")
    message = refusal_holding_gpu(no_gpu_env, "3")
    assert f"torch {torch.__version__} (torch.version.cuda=13.0) cannot use CUDA here" in message
    assert "nvidia-smi reports driver 580.65.06, new enough for CUDA 13.0 builds" in message
    assert "the GPU has compute capability 9.0, which the build has kernels for" in message
    assert "CUDA_VISIBLE_DEVICES names a GPU that `nvidia-smi -L` lists" in message
    assert "update the NVIDIA driver" not in message and "pip install" not in message


def test_a_cuda_release_newer_than_the_driver_table_still_gets_its_message(no_gpu_env):
    # A torch built with a CUDA major MINIMUM_DRIVER does not list yet: no minimum to compare the driver with.
    cuda_build(no_gpu_env, "cu130", H100, available=False, driver="590.10.01")
    no_gpu_env.setattr(torch.version, "cuda", "14.0")
    message = refusal_holding_gpu(no_gpu_env)
    assert (
        "older than CUDA 14.0 builds need (a driver released for CUDA 14.0 or later; nvidia-smi reports "
        "driver 590.10.01)" in message
    )
    assert (
        "Fix: update the NVIDIA driver (a driver released for CUDA 14.0 or later). To run on the CPU"
        in message
    )


def test_the_cu126_kernel_range_is_torchs_own():
    newest = max(release_capabilities("12.6"))
    assert runtime.NEWEST_CAPABILITY_OF_CU126 == divmod(newest, 10)


def test_a_cu126_build_on_a_gpu_newer_than_its_kernels_is_sent_to_cu130(no_gpu_env):
    cuda_build(no_gpu_env, "cu126", B200)
    message = refusal_holding_gpu(no_gpu_env)
    assert "has no kernels for this GPU: compute capability 10.0 (sm_100)" in message
    assert f"Install a build that has them: {CU130_INSTALL}." in message
    assert "whl/cu126" not in message


def test_past_the_last_cu126_release_only_volta_is_sent_back_to_it(monkeypatch):
    # torch 2.15 has no cu126 build: a V100 needs the 2.14 pin, an A100 or H100 the same release from cu130.
    monkeypatch.setattr(torch, "__version__", "2.15.0+cpu")
    cu130 = "pip install torch==2.15.0 --index-url https://download.pytorch.org/whl/cu130"
    assert runtime.install_command(A100) == runtime.install_command(H100) == cu130
    assert runtime.install_command(V100).startswith("pip install 'torch==2.14.*' ")


def test_newer_torch_without_cu126_builds_points_to_the_last_one(no_gpu_env):
    no_gpu_env.setattr(torch, "__version__", "2.15.0+cu130")
    cuda_build(no_gpu_env, "cu130", V100)
    with pytest.raises(GPUUnusableError) as error:
        select_device("auto")
    assert "pip install 'torch==2.14.*' --index-url https://download.pytorch.org/whl/cu126" in str(
        error.value
    )


def test_auto_on_a_workstation_uses_the_gpu_torch_sees_or_stops(no_gpu_env):
    # No CUDA_VISIBLE_DEVICES or NVIDIA_VISIBLE_DEVICES: every GPU of the machine is the process's.
    cuda_build(no_gpu_env, "cu130", H100)
    assert select_device("auto") == torch.device("cuda")
    cuda_build(no_gpu_env, "cu130", V100)
    with pytest.raises(GPUUnusableError, match=r"^this job holds a GPU \(torch sees one\) and the device is 'auto', "
                       r"but torch .* has no kernels for this GPU: compute capability 7\.0"):  # fmt: skip
        select_device("auto")
    # Without a usable driver torch sees no GPU, and nothing is held: the CPU, as on a laptop.
    cuda_build(no_gpu_env, "cu130", V100, available=False, driver="535.104.05")
    assert select_device("auto") == torch.device("cpu")


def test_explicit_cpu_runs_on_cpu_even_while_holding_a_gpu(no_gpu_env):
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert select_device("cpu") == torch.device("cpu")
    cuda_build(no_gpu_env, "cu130", V100)
    assert select_device("cpu") == torch.device("cpu")


def test_no_gpu_held_and_no_cuda_means_cpu(no_gpu_env):
    assert select_device("auto") == torch.device("cpu")
    assert select_device(None) == torch.device("cpu")


def test_mixed_precision_is_fp16_autocast_on_cuda_and_nothing_on_the_cpu():
    # runtime.autocast: "fp16 autocast on CUDA (mixed precision), a no-op on CPU"; the README's "CUDA (with mixed
    # precision)". Built, not entered: this machine may have no GPU (torch then warns that it disables it).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        on_cuda = runtime.autocast(torch.device("cuda"))
    assert isinstance(on_cuda, torch.autocast)
    assert (on_cuda.device, on_cuda.fast_dtype) == ("cuda", torch.float16)
    assert isinstance(runtime.autocast(torch.device("cpu")), contextlib.nullcontext)


def test_the_gradient_scaler_runs_only_with_a_cuda_device_even_where_torch_sees_a_gpu(monkeypatch):
    # The scaler goes with fp16 autocast, which runs on CUDA only: a job with device cpu on a GPU node
    # (select_device("cpu")) trains in fp32 and needs no loss scaling.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node, whatever this machine is
    assert not runtime.grad_scaler(torch.device("cpu")).is_enabled()
    assert runtime.grad_scaler(torch.device("cuda")).is_enabled()


def test_training_with_device_auto_stops_on_a_gpu_it_cannot_use(no_gpu_env, tmp_path):
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    section = {"teacher_preset": "demo_teacher", "student_preset": "demo_student", "device": "auto"}
    settings = StageSettings.from_config(section, "vgae", "student")
    missing = tmp_path / "not-there.pt"
    # The job stops on the GPU before it reads a byte of data: the graph files here do not even exist.
    with pytest.raises(GPUUnusableError, match="CUDA_VISIBLE_DEVICES=0"):
        vgae_training.run(
            train=missing,
            val=missing,
            metadata=missing,
            settings=settings,
            outputs={name: tmp_path / name for name in ("model", "metrics", "history")},
        )


@pytest.mark.parametrize("wrapper", ["train_vgae", "evaluate_detector"])
def test_a_wrapper_given_a_gpu_its_torch_cannot_run_ends_on_the_one_line_naming_the_gpu_and_the_builds_archs(
    no_gpu_env, tmp_path, capsys, wrapper
):
    # GPUUnusableError was a RuntimeError: the wrappers logged it as a bug, with a traceback above the message that
    # already says what to install. The job stops on the GPU before it reads an input.
    cuda_build(no_gpu_env, "cu130", V100)
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")  # what SLURM sets for a job holding a GPU
    empty = tmp_path / "empty.pt"  # the evaluation refuses a missing input before it chooses the device
    empty.touch()
    if wrapper == "train_vgae":
        settings = StageSettings.from_config({"device": "auto"}, "vgae", "teacher").as_dict()
        inputs, params, outputs = (
            dict.fromkeys(("train", "val", "metadata"), empty),
            {"settings": settings},
            None,
        )
    else:
        inputs = dict.fromkeys(("vgae", "gat", "dqn", "val", "test"), empty)
        params = {"dataset": "hcrl_sa", "variant": "teacher", "device": "auto"}
        outputs = {name: f"{name}.{suffix}" for name, suffix in
                   (("metrics", "json"), ("scores", "parquet"), ("roc", "svg"), ("pr", "svg"), ("confusion", "svg"))}  # fmt: skip
    message = wrapper_refusal(wrapper, tmp_path, capsys, inputs, params, outputs)
    assert message.startswith(
        "this job holds a GPU (CUDA_VISIBLE_DEVICES=0) and the device is 'auto', but torch "
    )
    assert (
        f"has no kernels for this GPU: compute capability 7.0 (sm_70) of the {GPU_NAMES[V100]}, the build has "
        f"{' '.join(BUILD_ARCHS['cu130'])}. Install a build that has them: {CU126_INSTALL}"
    ) in message


def evaluate_empty_files(tmp_path, device: str) -> None:
    """evaluate_files on five empty input files: no model or graph can be loaded from them."""
    inputs = {}
    for name in ("vgae", "gat", "dqn", "val", "test"):
        inputs[name] = tmp_path / f"{name}.pt"
        inputs[name].touch()
    suffixes = {"metrics": ".json", "scores": ".parquet", "roc": ".svg", "pr": ".svg", "confusion": ".svg"}
    evaluate_files(
        **inputs,
        outputs={name: tmp_path / "out" / f"{name}{suffix}" for name, suffix in suffixes.items()},
        dataset="hcrl_sa",
        variant="teacher",
        device=device,
    )


def test_evaluation_with_device_auto_stops_on_a_gpu_it_cannot_use(no_gpu_env, tmp_path):
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    # The GPU error comes before any model or graph is loaded: loading these empty files would fail otherwise.
    with pytest.raises(GPUUnusableError, match="CUDA_VISIBLE_DEVICES=0") as error:
        evaluate_empty_files(tmp_path, "auto")
    assert "evaluation.device" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_evaluation_with_device_cpu_runs_on_the_cpu_while_holding_a_gpu(no_gpu_env, tmp_path, caplog):
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    caplog.set_level("INFO", logger="kdgat")
    # Past the device choice, on the CPU: it goes on to load the models and fails only on the empty file.
    with pytest.raises(ValueError, match="cannot load the vgae model"):
        evaluate_empty_files(tmp_path, "cpu")
    assert "evaluating hcrl_sa/teacher (no seed) on cpu" in caplog.text


def run_check(**env):
    base = {
        k: v for k, v in os.environ.items() if k not in {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"}
    }
    return subprocess.run(
        [sys.executable, "-m", "kdgat.runtime", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=base | env,
    )


def gpu_computing(monkeypatch, result: float | None = None) -> None:
    """After cuda_build on a GPU the build can use: tensors made for CUDA are computed on the CPU, the same
    numbers a working GPU gives, or filled with `result` (a GPU that computes wrongly)."""
    ones = torch.ones

    def ones_on(*size, device=None, **kwargs):
        return ones(*size, **kwargs) if result is None else torch.full(size, result / 2 / size[0])

    monkeypatch.setattr(torch, "ones", ones_on)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H100 80GB HBM3")


def test_check_passes_on_a_gpu_the_build_can_use(no_gpu_env):
    cuda_build(no_gpu_env, "cu130", H100)
    gpu_computing(no_gpu_env)
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    out = io.StringIO()
    assert runtime.check(out) == 0
    shown = out.getvalue()
    assert "GPUs held by this process: CUDA_VISIBLE_DEVICES=0" in shown
    assert "cuda:0: NVIDIA H100 80GB HBM3, compute capability 9.0" in shown
    assert shown.endswith("OK: training with device auto would run on cuda\n")


def test_check_fails_on_a_gpu_whose_test_kernel_computes_wrongly(no_gpu_env):
    cuda_build(no_gpu_env, "cu130", H100)
    gpu_computing(no_gpu_env, result=0.0)
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    out = io.StringIO()
    assert runtime.check(out) == 1
    assert out.getvalue().endswith("FAIL: a test kernel on cuda returned 0.0, expected 16.0\n")


def test_check_fails_on_a_held_gpu_the_cpu_wheel_cannot_use(no_gpu_env):
    no_gpu_env.setenv("CUDA_VISIBLE_DEVICES", "0")
    out = io.StringIO()
    assert runtime.check(out) == 1
    shown = out.getvalue()
    assert "torch.cuda.get_arch_list(): []" in shown
    assert "FAIL: this job holds a GPU (CUDA_VISIBLE_DEVICES=0)" in shown
    assert "--index-url https://download.pytorch.org/whl/cu126" in shown


def test_check_command_prints_the_arch_list_and_fails_without_a_gpu():
    # The command itself (python -m kdgat.runtime --check) with every GPU hidden: the same on any machine.
    hidden = run_check(CUDA_VISIBLE_DEVICES="")
    assert hidden.returncode == 1, hidden.stdout + hidden.stderr
    assert f"torch.cuda.get_arch_list(): {torch.cuda.get_arch_list()}" in hidden.stdout
    assert "FAIL: no GPU is assigned to this process" in hidden.stdout


def test_device_name_is_the_gpu_model_or_the_cpu_model_and_its_threads(tmp_path, monkeypatch):
    """What the result stash's key holds of the hardware (docs/evaluation.md): CUDA's device `index` names its GPU
    model (`cuda` alone is device 0), the CPU its model from /proc/cpuinfo and torch's thread count."""
    models = {0: "NVIDIA A100-SXM4-40GB", 1: "Tesla V100-SXM2-16GB"}
    monkeypatch.setattr(runtime, "gpu_name", lambda index=0: models.get(index))
    assert runtime.device_name(torch.device("cuda")) == models[0]
    assert runtime.device_name(torch.device("cuda:1")) == models[1]
    assert runtime.device_name(torch.device("cuda:2")) == "GPU of unknown model"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\n"
    )
    assert runtime.cpu_name(cpuinfo) == "AMD EPYC 7763 64-Core Processor"
    assert runtime.cpu_name(tmp_path / "missing")  # the platform's answer, never empty
    monkeypatch.setattr(runtime, "cpu_name", lambda: "AMD EPYC 7763 64-Core Processor")
    assert runtime.device_name(torch.device("cpu"), 8) == "AMD EPYC 7763 64-Core Processor, 8 threads"
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert runtime.device_name(torch.device("cpu")) == "AMD EPYC 7763 64-Core Processor, 3 threads"


@pytest.mark.parametrize(
    ("wrapper", "where"),
    [
        ("train_vgae", "params.settings.device of a training wrapper"),
        ("evaluate_detector", "params.device of evaluate_detector"),
    ],
)
def test_a_wrappers_device_mistake_names_the_wrappers_param_beside_the_config_key(
    no_gpu_env, tmp_path, capsys, wrapper, where
):
    # The message named "config kd_gat.device / evaluation.device" alone: a wrapper user has no such config, and
    # had to guess that it means params.settings.device (training) or params.device (evaluate_detector).
    empty = tmp_path / "empty.pt"  # the evaluation refuses a missing input before it chooses the device
    empty.touch()
    if wrapper == "train_vgae":
        settings = StageSettings.from_config({}, "vgae", "teacher").as_dict() | {"device": "gpu"}
        inputs, params, outputs = (
            dict.fromkeys(("train", "val", "metadata"), empty),
            {"settings": settings},
            None,
        )
        config_key = "kd_gat.device in the workflow's config"
    else:
        inputs = dict.fromkeys(("vgae", "gat", "dqn", "val", "test"), empty)
        params = {"dataset": "d", "variant": "teacher", "device": "gpu"}
        outputs = {name: f"{name}.{suffix}" for name, suffix in
                   (("metrics", "json"), ("scores", "parquet"), ("roc", "svg"), ("pr", "svg"), ("confusion", "svg"))}  # fmt: skip
        config_key = "evaluation.device in the workflow's config"
    message = wrapper_refusal(wrapper, tmp_path, capsys, inputs, params, outputs)
    assert message.startswith(f"device 'gpu' ({config_key}, {where}, --device of kdgat "), message
    assert "expected auto, cpu, cuda or cuda:N" in message


@pytest.mark.parametrize("spec", ["cuda:128", "cuda:255", "cuda:1000"])
def test_a_gpu_index_torch_reads_as_another_is_refused_naming_the_setting(no_gpu_env, spec):
    """The schemas' pattern cuda(:[0-9]+)? takes any index, but torch keeps a device index in 8 bits: cuda:255 was
    torch.device("cuda"), index None, and the job ran on GPU 0 without a word; cuda:128 was cuda:-128, past the
    index check (-128 >= count is false), failing later in torch naming no setting. select_device refuses them, and
    the schemas' pattern too (test_kdgat_cli.py)."""
    cuda_build(no_gpu_env, "cu130", H100)
    two_gpus(no_gpu_env, [H100, A100])
    with pytest.raises(DeviceSettingError) as refused:
        select_device(spec)
    assert str(refused.value) == (
        f"device {spec!r} (config kd_gat.device / evaluation.device): expected auto, cpu, cuda or cuda:N with N "
        "from 0 to 127 (torch's device index)"
    )
    assert select_device("cuda:1") == torch.device("cuda", 1)

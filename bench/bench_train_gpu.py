"""KD-GAT training and evaluation on a GPU against the CPU, through the command users run (``python -m kdgat``).

What runs: config/config.yaml's synth_hcrl dataset, generated and preprocessed here; then, once with
``--device auto`` (which must pick CUDA) and once with ``--device cpu``, both with the one torch thread a
workflow job gets (kd_gat.resources.threads), the chains (VGAE -> GAT -> DQN) of one seed and their evaluation:
  - ``demo``: the demo's data, presets and epochs (config/config.yaml); teacher, student_kd and student;
  - ``original``: the original KD-GAT sizes (presets teacher and student) on the same dataset with every capture
    10 times as long (~10x the graphs), a few epochs each; teacher and student_kd.
The CPU side runs next to the CUDA side (separate processes, one thread each; the CUDA chains one after another).
Before them, ``python -m kdgat.runtime --check`` (the SLURM preflight's GPU check) must pass, and
``select_device`` in a fresh process must pick or refuse as a job needs (device_choices: ``auto`` with and
without a GPU, a GPU held that torch cannot see, ``cuda`` without one, a GPU index past those seen, ``cpu`` on a
GPU node); after them, the
resume paths on CUDA: a run killed after its first epoch (KDGAT_KILL_AFTER_EPOCH) resumed on CUDA, a CPU
checkpoint resumed on CUDA (a job requeued onto a GPU node) and a CUDA checkpoint resumed on the CPU.

Figures: the median over epochs of each stage's training throughput (history.csv ``graphs_per_s``, which for the
DQN counts fusion windows: STAGE_UNITS) on CUDA against the CPU in the same run:
  BENCH gpu_<suite>_<variant>_<stage> value=<cuda><unit> baseline=<cpu><unit> ratio=<cuda/cpu> goal=info
with unit graphs/s for the VGAE and GAT, windows/s for the DQN; before each suite's lines,
  # gpu_<suite>: value on <CUDA side's hardware>, baseline on <CPU side's hardware>; <torch build>
the hardware as each side's evaluations record it in metrics.json (``hardware``, kdgat.runtime.device_name, the
same function: an evaluation that records another is a failure), and the torch build as they record it.
No goal: the demo's models are small enough that a GPU need not win. Exit 1 when the check or a step fails, when
a job that ran with ``auto`` did not run on CUDA, or when a resume did not resume. Without a usable CUDA device the script
prints a SKIP line and exits 0 (``make bench`` on a machine without a GPU); ``--cpu-trial`` runs it anyway with the
CPU on both sides (to try the script itself).

``--out FILE`` writes every figure and check as JSON, anew after each suite and check (atomically);
``--keep DIR`` keeps the work folder (logs, models).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import torch
import yaml

from kdgat.files import write_json
from kdgat.runtime import device_name, torch_build

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "config.yaml"
DATASET = "synth_hcrl"
SEED = 42
THREADS = 1  # kd_gat.resources.threads: what a workflow job gets
VARIANTS = ("teacher", "student_kd", "student")
STAGES = ("vgae", "gat", "dqn")
# What each stage's history.csv graphs_per_s counts: window graphs, or for the DQN fusion windows (the VGAE's and
# GAT's outputs on a window, one step of an episode).
STAGE_UNITS = {"vgae": "graphs/s", "gat": "graphs/s", "dqn": "windows/s"}
# The original KD-GAT sizes need no more epochs than it takes to measure a steady throughput.
SUITES = {
    "demo": {"scale": 1, "variants": VARIANTS, "sets": []},
    "original": {
        "scale": 10,
        "variants": ("teacher", "student_kd"),
        "sets": [
            "teacher_preset=teacher",
            "student_preset=student",
            "training.vgae.epochs=3",
            "training.gat.epochs=3",
            "training.dqn.epochs=8",
        ],
    },
}


class StepFailed(RuntimeError):
    pass


def hardware(device: str) -> str:
    """What a job run with ``--device device`` and THREADS threads measures on, as its evaluation's metrics.json
    records it (``hardware``, the same function): the GPU's model, or the CPU's model and the thread count."""
    return device_name(torch.device(device), THREADS)


def with_source(extra: dict | None = None) -> dict:
    """This process's environment with the repository's src/ importable (the package need not be installed)."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), **(extra or {})}


def kdgat(argv: list[str], log: Path, env: dict | None = None, expect: int = 0) -> float:
    """Run ``python -m kdgat *argv``, its output appended to ``log``; the wall seconds. Raises unless it exits
    with ``expect`` (-9: killed by SIGKILL)."""
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ kdgat {' '.join(argv)}\n")
        out.flush()
        code = subprocess.run(
            [sys.executable, "-m", "kdgat", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=with_source(env),
            cwd=REPO,
        ).returncode
    if code != expect:
        raise StepFailed(f"kdgat {' '.join(argv[:2])} exited with {code}, expected {expect}; see {log}")
    return time.perf_counter() - started


def prepare_data(work: Path, scale: int, log: Path) -> Path:
    """The dataset's captures, each ``scale`` times as long, generated and preprocessed under ``work``."""
    from kdgat.synthetic import generate_dataset

    options = yaml.safe_load(CONFIG.read_text())["datasets"][DATASET]["synthetic"]
    for entry in options["files"]:
        entry["duration_s"] = float(entry["duration_s"]) * scale
    raw, data = work / f"raw_x{scale}", work / f"data_x{scale}"
    generate_dataset(options, raw)
    kdgat(
        ["preprocess", "--config", str(CONFIG), "--dataset", DATASET, "--path", str(raw), "--out", str(data)],
        log,
    )
    return data


def training_argv(
    stage: str, variant: str, data: Path, chain: Path, device: str, sets: list[str]
) -> list[str]:
    argv = ["train", stage, "--config", str(CONFIG), "--variant", variant, "--seed", str(SEED)]
    argv += ["--data", str(data), "--chain", str(chain), "--device", device, "--threads", str(THREADS)]
    for assignment in sets:
        argv += ["--set", assignment]
    return argv


def run_chain(data: Path, chain: Path, device: str, suite: dict, log: Path) -> dict:
    """Train each variant's three stages and evaluate each variant; what each job recorded."""
    jobs: dict = {}
    sets = suite["sets"]
    for variant in suite["variants"]:
        for stage in STAGES:
            seconds = kdgat(training_argv(stage, variant, data, chain, device, sets), log)
            folder = chain / f"seed_{SEED}" / variant / stage
            metrics = json.loads((folder / "metrics.json").read_text())
            history = pd.read_csv(folder / "history.csv")
            jobs[f"{variant}/{stage}"] = {
                "wall_s": round(seconds, 2),
                "device": metrics["device"],
                "epochs_run": metrics["epochs_run"],
                "median_graphs_per_s": float(history["graphs_per_s"].median()),
                "median_epoch_s": float(history["seconds"].median()),
                "gpu_peak_mem_mb": metrics.get("gpu_peak_mem_mb"),
                "num_parameters": metrics["num_parameters"],
                "best_val_loss": metrics["best_val_loss"],
                "last_train_loss": float(history["train_loss"].iloc[-1]) if "train_loss" in history else None,
            }
            if not math.isfinite(metrics["best_val_loss"]):
                raise StepFailed(f"{folder}: best validation loss {metrics['best_val_loss']} (AMP overflow?)")
        out = chain.parent / f"evaluation_{chain.name}" / variant
        seconds = kdgat(
            [
                "evaluate", "--config", str(CONFIG), "--dataset", DATASET, "--variant", variant,
                "--seed", str(SEED), "--chain", str(chain), "--data", str(data), "--out", str(out),
                "--device", device, "--threads", str(THREADS), "--stash-dir", str(out / "stash"),
            ],
            log,
        )  # fmt: skip
        document = json.loads((out / "metrics.json").read_text())
        pooled = document["test_pooled"]
        jobs[f"{variant}/evaluate"] = {
            "wall_s": round(seconds, 2),
            "device": document["device"],
            "hardware": document["hardware"],
            "f1_pooled": {model: pooled[model]["f1"] for model in ("vgae", "gat", "fusion")},
        }
    return jobs


def checkpoint_resume(data: Path, work: Path, log: Path, first: dict, second: dict, name: str) -> dict:
    """A GAT job killed after its first epoch with environment ``first``, rerun with ``second``: the rerun
    must resume (metrics.json resumed_from_epoch 1) on the device ``second`` gives."""
    chain = work / f"resume_{name}"
    source = work / "chains" / "demo_cuda" / f"seed_{SEED}" / "teacher" / "vgae"
    if not (source / "model.pt").exists():  # --suites original, or none: the GAT's VGAE trained here
        kdgat(training_argv("vgae", "teacher", data, source.parents[2], "auto", []), log)
    (chain / f"seed_{SEED}" / "teacher").mkdir(parents=True)
    shutil.copytree(source, chain / f"seed_{SEED}" / "teacher" / "vgae")
    argv = training_argv("gat", "teacher", data, chain, "auto", ["training.gat.epochs=4"])
    kdgat(argv, log, {**first, "KDGAT_KILL_AFTER_EPOCH": "1"}, expect=-9)
    kdgat(argv, log, second)
    metrics = json.loads((chain / f"seed_{SEED}" / "teacher" / "gat" / "metrics.json").read_text())
    return {"resumed_from_epoch": metrics["resumed_from_epoch"], "device": metrics["device"]}


# A job's view of the GPUs: none at all, and one held (the container runtime's variable) that torch cannot see.
# NO_GPU is the CPU side's and a CPU checkpoint's: the NVIDIA runtime's variable too, else a GPU container's
# NVIDIA_VISIBLE_DEVICES=all counts as a held GPU and `auto` refuses the CPU.
NO_GPU = {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
HELD_BUT_HIDDEN = {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "0"}


def device_choices(expected: str) -> dict:
    """``select_device`` in a fresh process, the way a job calls it: what it picks or why it refuses, with the
    outcome each case must have. ``expected``: what ``auto`` picks with the process's own GPUs (cuda or cpu)."""
    beyond = f"cuda:{torch.cuda.device_count()}"  # one past the GPUs this process sees (cuda:0 without CUDA)
    cases = {
        "auto": ("auto", {}, expected),
        "auto_without_gpu": ("auto", NO_GPU, "cpu"),
        "auto_holding_a_gpu_torch_cannot_see": ("auto", HELD_BUT_HIDDEN, "GPUUnusableError"),
        "cuda_without_gpu": ("cuda", NO_GPU, "GPUUnusableError"),
        "cuda_index_beyond_the_gpus_seen": (beyond, {}, "GPUUnusableError"),
        "cpu_holding_a_gpu": ("cpu", {"CUDA_VISIBLE_DEVICES": "0"}, "cpu"),
    }
    program = (
        "import sys\nfrom kdgat.runtime import GPUUnusableError, select_device\n"
        "try:\n    print(select_device(sys.argv[1]).type)\n"
        "except GPUUnusableError as error:\n    print('GPUUnusableError:', error)\n"
    )
    results = {}
    for name, (spec, env, want) in cases.items():
        done = subprocess.run(
            [sys.executable, "-c", program, spec], capture_output=True, text=True, env=with_source(env)
        )
        said = (done.stdout.strip().splitlines() or [done.stderr.strip()[-500:]])[-1]
        results[name] = {"spec": spec, "env": env, "expected": want, "said": said}
        results[name]["ok"] = done.returncode == 0 and said.split(":")[0] == want
    return results


def throughput_line(suite: str, variant: str, stage: str, value: float, baseline: float) -> str:
    """The BENCH line of one stage: CUDA's throughput against the CPU's, in the unit the stage counts."""
    unit = STAGE_UNITS[stage]
    return (
        f"BENCH gpu_{suite}_{variant}_{stage} value={value:.0f}{unit} baseline={baseline:.0f}{unit} "
        f"ratio={value / baseline:.2f} goal=info"
    )


def measured_on_line(sides_hardware: dict) -> str:
    """What the BENCH lines after it were measured on: value on the CUDA side's hardware, baseline on the CPU's."""
    return f"value on {sides_hardware['cuda']}, baseline on {sides_hardware['cpu']}; {torch_build()}"


def hardware_disagreements(suite: str, sides: dict, sides_hardware: dict) -> list[str]:
    """A failure for each evaluation whose metrics.json records other hardware than its side's line says."""
    return [
        f"{suite} {side} {job}: metrics.json records hardware {job_record['hardware']!r}, the bench "
        f"{sides_hardware[side]!r}"
        for side, jobs in sides.items()
        for job, job_record in jobs.items()
        if job.endswith("/evaluate") and job_record["hardware"] != sides_hardware[side]
    ]


def save(report: dict, path: Path | None) -> None:
    """Write the report so far (after each suite and check: a run cut by a time limit keeps what it measured)."""
    if path:
        write_json(report, path, sort_keys=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="write every figure and check here as JSON")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    parser.add_argument(
        "--suites", nargs="*", default=list(SUITES), choices=list(SUITES), help="default: all"
    )
    parser.add_argument("--no-resume", action="store_true", help="skip the resume checks")
    parser.add_argument(
        "--cpu-trial",
        action="store_true",
        help="without CUDA, run with the CPU on both sides (tries the script)",
    )
    args = parser.parse_args()
    cuda = torch.version.cuda is not None and torch.cuda.is_available()
    if not cuda and not args.cpu_trial:
        print("SKIP bench_train_gpu: torch cannot use a GPU here (python -m kdgat.runtime --check says why)")
        return 0
    expected = "cuda" if cuda else "cpu"
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_train_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "kdgat.log"
    # Each side's hardware as its evaluations' metrics.json must record it (checked below), not named by hand.
    sides_hardware = {"cuda": hardware(expected), "cpu": hardware("cpu")}
    report: dict = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_build": torch_build(),
        "hardware": sides_hardware,
        "threads": THREADS,
        "suites": {},
        "checks": {},
        "failures": [],
    }
    if cuda:
        # The check the SLURM preflight runs on a GPU node, here where it must pass.
        check = subprocess.run(
            [sys.executable, "-m", "kdgat.runtime", "--check"],
            capture_output=True,
            text=True,
            env=with_source(),
        )
        report["checks"]["runtime_check"] = check.stdout.strip().splitlines()
        if check.returncode != 0:
            report["failures"].append(
                f"python -m kdgat.runtime --check exited {check.returncode}: {check.stdout}"
            )
    # Before minutes of training: the device each kind of job gets, or the refusal it must get.
    report["checks"]["device_choice"] = device_choices(expected)
    for name, case in report["checks"]["device_choice"].items():
        if not case["ok"]:
            report["failures"].append(
                f"device choice {name}: expected {case['expected']}, got {case['said']}"
            )
    save(report, args.out)
    try:
        scales = {SUITES[suite]["scale"] for suite in args.suites} | ({1} if not args.no_resume else set())
        data_of_scale = {scale: prepare_data(work, scale, log) for scale in sorted(scales)}
        datas = {suite: data_of_scale[SUITES[suite]["scale"]] for suite in args.suites}

        def chain(suite: str, side: str) -> dict:
            device = "auto" if side == "cuda" else "cpu"
            folder = work / "chains" / f"{suite}_{side}"
            return run_chain(datas[suite], folder, device, SUITES[suite], work / f"kdgat_{suite}_{side}.log")

        def cuda_side() -> dict:
            return {suite: chain(suite, "cuda") for suite in args.suites}

        with ThreadPoolExecutor(max_workers=1 + len(args.suites)) as pool:
            on_cpu = {suite: pool.submit(chain, suite, "cpu") for suite in args.suites}
            on_cuda = cuda_side()
            sides_of = {
                suite: {"cuda": on_cuda[suite], "cpu": on_cpu[suite].result()} for suite in args.suites
            }
        for suite, sides in sides_of.items():
            report["suites"][suite] = sides
            save(report, args.out)
            print(f"# gpu_{suite}: {measured_on_line(sides_hardware)}", flush=True)
            report["failures"] += hardware_disagreements(suite, sides, sides_hardware)
            for job, cuda_job in sides["cuda"].items():
                if not str(cuda_job["device"]).startswith(expected):
                    report["failures"].append(f"{suite} {job} ran on {cuda_job['device']} with device auto")
                if job.endswith("/evaluate"):
                    continue
                variant, stage = job.split("/")
                value, baseline = cuda_job["median_graphs_per_s"], sides["cpu"][job]["median_graphs_per_s"]
                print(throughput_line(suite, variant, stage, value, baseline), flush=True)
        if not args.no_resume:
            gpu = {}  # the process's own environment: the GPU visible
            for name, first, second in (
                ("cuda_to_cuda", gpu, gpu),
                ("cpu_to_cuda", NO_GPU, gpu),
                ("cuda_to_cpu", gpu, NO_GPU),
            ):
                result = checkpoint_resume(data_of_scale[1], work, log, first, second, name)
                report["checks"][name] = result
                save(report, args.out)
                want = "cpu" if second is NO_GPU else expected
                if result["resumed_from_epoch"] != 1 or not result["device"].startswith(want):
                    report["failures"].append(
                        f"resume {name}: {result}, expected resumed_from_epoch 1 on {want}"
                    )
    except StepFailed as error:
        report["failures"].append(str(error))
    except Exception:  # noqa: BLE001 (a lent GPU's minutes are scarce: keep what ran and say where it broke)
        report["failures"].append(f"the script itself failed:\n{traceback.format_exc()}")
    save(report, args.out)
    for failure in report["failures"]:
        print(f"FAIL {failure}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

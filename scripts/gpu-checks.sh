#!/usr/bin/env bash
# The checks that need a real GPU, as one call on a machine with an NVIDIA GPU and a CUDA build of torch
# (profiles/slurm/README.md, "On a real GPU"). Installs nothing: it runs with the machine's python3, torch and
# torch-geometric, whatever their versions (recorded in machine.txt). Everything lands in $OUT
# (default /tmp/gpu-checks), written as each step ends, so a call cut by its time limit keeps what ran:
#   machine.txt  nvidia-smi, torch and torch-geometric versions, torch's arch list, the GPU's compute capability
#   pytest.log   the unit tests that touch the device, with CUDA usable (device auto picks the GPU there)
#   bench.log    bench/bench_train_gpu.py --suites demo: the device choices, the runtime check, the demo's chains
#   gpu.json     on CUDA against the CPU, the resume checks across devices (gpu.json: every figure and check)
#   chains.tgz   every job's metrics.json, history.csv and log (no models)
# Usage: bash scripts/gpu-checks.sh [seconds for the tests, default 110] [seconds for the benchmark, default 420]
set -u
out=${OUT:-/tmp/gpu-checks}
work=${GPU_CHECKS_WORK:-/tmp/gpu-checks-work}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

{
    nvidia-smi
    nproc
    env | grep -E '^(CUDA|NVIDIA)_VISIBLE_DEVICES=' || echo "no CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES"
    "$python" - <<'EOF'
import torch, torch_geometric
print("torch", torch.__version__, "cuda", torch.version.cuda, "torch_geometric", torch_geometric.__version__)
print("arch list", torch.cuda.get_arch_list())
if torch.cuda.is_available():
    print("cuda:0", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
EOF
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

# The files whose code picks or uses the device: select_device, the three trainings, inference, evaluation.
tests=()
for name in runtime_device training inference evaluation kdgat_cli dqn distillation fusion models curriculum; do
    tests+=(".tests/unit/test_$name.py")
done
PYTHONPATH=src:.tests timeout "${1:-110}" "$python" -m pytest -q -p no:cacheprovider -n 8 "${tests[@]}" \
    > "$out/pytest.log" 2>&1
echo "pytest exit $?" >> "$out/pytest.log"
tail -n 30 "$out/pytest.log"

rm -rf "$work"
PYTHONPATH=src timeout "${2:-420}" "$python" bench/bench_train_gpu.py --suites demo --keep "$work" \
    --out "$out/gpu.json" > "$out/bench.log" 2>&1
echo "bench exit $?" >> "$out/bench.log"
tail -n 30 "$out/bench.log"
[ -d "$work" ] && (cd "$work" && find . \( -name metrics.json -o -name history.csv -o -name '*.log' \) -not -path '*/stash/*' -print0 |
    tar czf "$out/chains.tgz" --null -T -)

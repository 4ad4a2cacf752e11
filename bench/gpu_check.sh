#!/usr/bin/env bash
# The checks to run the day a CUDA machine is lent: the gpu-marked tests, the training and sweep benchmarks on CUDA
# and the full-MNIST exercise-2 epoch time, each under its own time limit so that the whole script ends within
# 8 minutes (150 + 45 + 75 + 120 + 60 s). Prints one `name: value` line per figure, `<step>_exit: N` per step,
# and `gpu_check_s: N` at the end.
#
#     bench/gpu_check.sh                                    # from the repository root
#     ABLATION_LAB_DATA=/path/to/mnist bench/gpu_check.sh   # full MNIST elsewhere than ../shared/data/mnist
#
# Needs a torch build with CUDA in .venv (requirements.txt pins the CPU wheel; install the CUDA wheel of the same
# version on the GPU machine). Without a CUDA device it says so and exits with status 2, running nothing.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    torch_build=$("$PY" -c 'import torch; print("torch", torch.__version__)' 2>&1)
    echo "gpu_check: no CUDA device is visible to torch (${torch_build}); nothing was run." >&2
    echo "Run it on a machine with an NVIDIA GPU and a CUDA build of torch in .venv." >&2
    exit 2
fi
export ABLATION_LAB_DATA=${ABLATION_LAB_DATA:-../shared/data/mnist}
started=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

"$PY" -c 'import torch; print("gpu_device:", torch.cuda.get_device_name(0).replace(" ", "_"))'
"$PY" -c 'import torch; print("torch_version:", torch.__version__)'

# step NAME SECONDS COMMAND...: run it under a time limit, print its `name: value` lines prefixed with NAME.
step() {
    local name=$1 limit=$2
    shift 2
    timeout "$limit" "$@" >"$log" 2>&1
    local rc=$?
    grep -E '^[A-Za-z0-9_]+: [^ ]+$' "$log" | sed "s/^/${name}_/"
    if [ "$rc" -ne 0 ]; then
        echo "--- ${name}: exit ${rc} (124: over its ${limit} s limit); its last lines:" >&2
        tail -n 15 "$log" >&2
    fi
    echo "${name}_exit: ${rc}"
}

step gpu_tests 150 "$PY" -m pytest -q -p no:randomly -m gpu --timeout 140
echo "gpu_tests_summary: $(grep -E '(passed|failed|skipped|deselected|error)' "$log" | tail -n 1 | tr -s ' ,' '_')"
step train_bench 45 "$PY" bench/train_throughput.py --quick --device cuda
step sweep_bench 75 "$PY" bench/sweep_throughput.py --quick --repeats 1 --device cuda
step mnist_bench 120 "$PY" bench/train_throughput.py --mnist --device cuda --fraction 0.25 --repeats 1
step mnist_epoch 60 "$PY" - <<'EOF'
# One full-MNIST epoch of the exercise-2 CNN (the reference's settings, batch 10) through the engine on CUDA.
import time
from engine.config import RunConfig
from engine.sinks import MemorySink
from engine.tasks import load_task_data
from engine.train import train_stack
config = RunConfig(task="mnist", dataset="full", model="cnn", channels=(20, 20, 20), activation="tanh",
                   loss="cross_entropy", optimizer="sgd", lr=0.025, batch_size=10, epochs=1)
load_task_data(config)
sink = MemorySink()
start = time.perf_counter()
train_stack([config], [sink], device="cuda")
print(f"ex2_epoch_s: {time.perf_counter() - start:.2f}")
print(f"ex2_val_accuracy: {sink.epochs[-1][1]['val_accuracy']:.4f}")
EOF
echo "gpu_check_s: $(( $(date +%s) - started ))"

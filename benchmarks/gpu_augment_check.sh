#!/usr/bin/env bash
# The GPU augmentation's check on one GPU, in one run (about 6 minutes on an
# H100/H200, start-up not counted):
#
#   1. environment, then the CUDA tests of tests/test_gpu_augment.py (same
#      numbers as on the CPU, no host sync, side stream = serial batches);
#   2. build 1p-frac L = 1,000 at 512 px;
#   3. benchmarks/augment_bench.py on the device: kernels and ms per batch of
#      GpuAugment alone, this tree beside BASELINE (a folder holding an older
#      trainer/, made here with `git archive`, since the device copy of the
#      repository has no git history);
#   4. `fractrain bench`: vit_tiny eager (model, gpu, gpu-serial, cpu),
#      vit_tiny compiled (model, gpu, gpu-serial), vit_base eager (model, gpu,
#      gpu-serial, cpu).
#
# Prepare once on the development machine (the folder is git-ignored):
#   mkdir -p .whl/baseline-98d3ee1 && git archive 98d3ee1 trainer | tar -x -C .whl/baseline-98d3ee1
# Settings can be overridden from the environment; with tiny values the
# same script runs on a CPU, e.g.
#   DEVICE=cpu L=16 SIZE=64 INPUT=32 BATCH=8 BASE_MODEL=vit_tiny AUG_CONFIGS='8x64->32' \
#   MODEL_ARGS="--model-arg patch_size=8 --model-arg depth=2" BENCH_STEPS=2 BENCH_WARMUP=1 \
#   BENCH_WINDOWS=1 WORKERS=0 COMPILE=0 benchmarks/gpu_augment_check.sh
# Everything printed also goes to $OUT/gpu_augment_check.log when $OUT is set.
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
L=${L:-1000}
SIZE=${SIZE:-512}
INPUT=${INPUT:-224}
BATCH=${BATCH:-256}
BASE_MODEL=${BASE_MODEL:-vit_base}
MODEL_ARGS=${MODEL_ARGS:-}
BASELINE=${BASELINE:-.whl/baseline-98d3ee1}
AUG_CONFIGS=${AUG_CONFIGS:-256x512->224,256x64->32}
BENCH_STEPS=${BENCH_STEPS:-20}
BENCH_WARMUP=${BENCH_WARMUP:-10}
BENCH_WINDOWS=${BENCH_WINDOWS:-3}
COMPILE=${COMPILE:-1}
NPROC=$(nproc)
WORKERS=${WORKERS:-$(( NPROC > 3 ? NPROC - 2 : 1 ))}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_augment_check.XXXXXX")}
mkdir -p "$WORK"
if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/gpu_augment_check.log") 2>&1
fi
export PYTHONUNBUFFERED=1
read -r -a MARGS <<< "$MODEL_ARGS"
failed=()

stage() {  # stage NAME SECONDS COMMAND...: run under a time limit, go on after a failure
    local name=$1 limit=$2 start=$SECONDS rc=0
    shift 2
    echo "=== $name (limit ${limit} s)"
    timeout --kill-after=20 "$limit" "$@" || rc=$?
    if (( rc == 0 )); then
        echo "=== $name: ok in $(( SECONDS - start )) s"
    else
        echo "=== $name: FAILED with exit status $rc after $(( SECONDS - start )) s"
        failed+=("$name")
    fi
}

stage environment 60 "$PY" -c '
import torch, timm
print("torch", torch.__version__, "timm", timm.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "", "cpus", __import__("os").cpu_count())'
stage cuda-tests 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_augment.py -k cuda
stage build 180 "$PY" -m fracbuild.cli render --L "$L" --size "$SIZE" --out "$WORK/shards" --workers "$NPROC" \
    --no-progress --json
baseline=()
[[ -d "$BASELINE/trainer" ]] && baseline=(--baseline "$BASELINE")
stage augment-bench 120 "$PY" benchmarks/augment_bench.py --device "$DEVICE" --configs "$AUG_CONFIGS" "${baseline[@]}"

bench() {  # bench NAME LIMIT ARGS...
    local name=$1 limit=$2
    shift 2
    stage "$name" "$limit" "$PY" -m fractrain bench --shards "$WORK/shards" --device "$DEVICE" \
        --batch-size "$BATCH" --input-size "$INPUT" --steps "$BENCH_STEPS" --warmup "$BENCH_WARMUP" \
        --windows "$BENCH_WINDOWS" --workers "$WORKERS" "$@"
}
bench bench-vit_tiny 180 --model vit_tiny --paths model,gpu,gpu-serial,cpu "${MARGS[@]}"
if [[ $COMPILE == 1 ]]; then
    bench bench-vit_tiny-compiled 300 --model vit_tiny --compile --paths model,gpu,gpu-serial "${MARGS[@]}"
fi
bench bench-base 180 --model "$BASE_MODEL" --paths model,gpu,gpu-serial,cpu "${MARGS[@]}"

if (( ${#failed[@]} )); then
    echo "gpu_augment_check: FAILED stages: ${failed[*]}"
    exit 1
fi
echo "gpu_augment_check: all stages passed"

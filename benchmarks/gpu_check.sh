#!/usr/bin/env bash
# GPU check of fractrain, in one run (about 9 minutes on one H100/H200 with
# every stage; pick some with STAGES):
#
#   environment;
#   1. build 1p-frac L = 1,000 at 512 px (the paper's size; rendering takes
#      seconds on 16 cores, so nothing is gained at 256);
#   2. bench: `fractrain bench` of vit_tiny compiled (model-bound, GPU
#      augment with and without its side stream), vit_base eager (model-bound,
#      GPU augment), vit_tiny eager (model-bound, GPU augment with and without
#      its side stream, CPU augment), all with
#      --gpu-augment-mode GPU_MODE (default: fractrain's, graph on CUDA), and vit_tiny compiled
#      with the op-by-op layout against it, and with the
#      steps on a high-priority CUDA stream (--high-priority-step), and with
#      the crop resized from its windows' taps (--gpu-resize taps; the
#      default on CUDA is tf32x2, TF32 matrix products);
#   augment-bench: benchmarks/augment_bench.py on the device, GpuAugment
#      alone (kernels and ms per batch; the resize methods AUG_RESIZE,
#      default tf32x2,taps; eager and fused), beside BASELINE when that folder
#      holds an older trainer/ (the device copy of the repository has no git
#      history; make it with
#      `mkdir -p .whl/baseline-98d3ee1 && git archive 98d3ee1 trainer | tar -x -C .whl/baseline-98d3ee1`);
#   host-bench: benchmarks/host_bench.py, the training thread's host time per
#      batch of the device path (plans drawn inline or by 2 workers) on this
#      machine's CPU: compare with the model step's time;
#   cuda-tests (runs before the timed stages: timings of wrong batches mean
#      nothing): the CUDA tests of the GPU augmentation (test_gpu_augment*.py,
#      test_staging.py; CUDA_TESTS, a pytest -k expression, default "cuda":
#      same numbers as on the CPU, fused = eager, no host sync, side stream
#      and plan workers = serial batches, graph mode = op-by-op);
#   3. pre-train vit_tiny for about PRETRAIN_SECONDS (a --steps budget sized
#      from the measured images/s): images/s, loss at start and end, peak GPU
#      memory;
#   4. fine-tune that checkpoint and a scratch model (same recipe, the
#      paper's fine-tuning defaults but no random crop of the 8x8 digits, a
#      short fixed budget) on scikit-learn's digits; print both accuracies.
#      After ~2 minutes of pre-training the loss is still near ln(1000), so
#      expect the two to be close: this checks the path, not the paper.
#
# Needs: python with torch, timm, numpy, numba, pillow, click, fsspec, tqdm,
# tensorboard, scikit-learn, webdataset and jsonschema importable, and this
# repository importable as fracbuild/fractrain (installed, or PYTHONPATH).
# Everything printed also goes to $OUT/gpu_check.log when $OUT is set.
#
# Every setting below can be overridden from the environment; with tiny
# values the same script runs on a CPU (this is how it is tested), e.g.
#   DEVICE=cpu L=16 SIZE=64 INPUT=32 BATCH=8 BASE_MODEL=vit_tiny \
#   MODEL_ARGS="--model-arg patch_size=8 --model-arg depth=2" PRETRAIN_STEPS=4 \
#   FT_EPOCHS=1 BENCH_STEPS=2 BENCH_WARMUP=1 BENCH_WINDOWS=1 WORKERS=0 benchmarks/gpu_check.sh
# KEEP_GOING=1 runs the remaining stages after a failed one (exit status 1 at the end).
# BENCHES picks the bench stage's runs (vit_tiny-compiled, base, vit_tiny); PROFILE_STEPS=N
# adds `fractrain bench --profile-steps N` (where each step's device time goes; with
# KEEP_TRACES=1 the chrome traces under $OUT/bench-NAME/); HOST_PROFILE_STEPS=N adds
# --host-profile-steps N (where the training thread's time goes, by cProfile).
# STAGES (comma-separated, default all): environment, cuda-tests, build, augment-bench, host-bench,
# bench, pretrain, finetune; e.g. issue #6's check:
#   STAGES=environment,cuda-tests,build,bench KEEP_GOING=1 benchmarks/gpu_check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
L=${L:-1000}
SIZE=${SIZE:-512}
INPUT=${INPUT:-224}
BATCH=${BATCH:-256}
BASE_MODEL=${BASE_MODEL:-vit_base}
MODEL_ARGS=${MODEL_ARGS:-}
PRETRAIN_SECONDS=${PRETRAIN_SECONDS:-150}
PRETRAIN_STEPS=${PRETRAIN_STEPS:-}          # default: sized from the bench to last PRETRAIN_SECONDS
FT_EPOCHS=${FT_EPOCHS:-15}
FT_INPUT=${FT_INPUT:-$INPUT}
# Digits are 8x8: RandomResizedCrop down to 8 % of that leaves no digit, so
# the crop is off for both fine-tunes (everything else is the paper's recipe).
FT_ARGS=${FT_ARGS:---aug-off crop}
BENCH_STEPS=${BENCH_STEPS:-40}
BENCH_WARMUP=${BENCH_WARMUP:-20}  # the fused augmentation compiles its variants in the first steps
BENCH_WINDOWS=${BENCH_WINDOWS:-5}  # the paths' windows take turns; the median of each path's
BENCHES=${BENCHES:-vit_tiny-compiled,base,vit_tiny,vit_tiny-compiled-taps,vit_tiny-compiled-op-by-op,vit_tiny-compiled-priority}  # which of the bench stage's runs
GPU_MODE=${GPU_MODE:-}  # empty: fractrain's default (graph on CUDA, op-by-op on the CPU)
PROFILE_STEPS=${PROFILE_STEPS:-0}  # > 0: each bench also profiles that many steps per path (summaries in the log)
HOST_PROFILE_STEPS=${HOST_PROFILE_STEPS:-0}  # > 0: each bench also runs that many steps per path under cProfile
KEEP_TRACES=${KEEP_TRACES:-0}  # 1: with PROFILE_STEPS, keep the chrome traces under $OUT/bench-NAME/
NPROC=$(nproc)
WORKERS=${WORKERS:-$(( NPROC > 3 ? NPROC - 2 : 1 ))}
KEEP_GOING=${KEEP_GOING:-0}
STAGES=${STAGES:-environment,cuda-tests,build,augment-bench,host-bench,bench,pretrain,finetune}
BASELINE=${BASELINE:-.whl/baseline-98d3ee1}
AUG_CONFIGS=${AUG_CONFIGS:-256x${SIZE}->${INPUT}}
AUG_RESIZE=${AUG_RESIZE:-tf32x2,taps}  # augment-bench: the resize methods timed side by side
AUG_ONLY=${AUG_ONLY:-static fused|static\$}  # augment-bench: the variants timed and profiled (a regex; the graph mode runs "static fused")
AUG_FUSE=${AUG_FUSE:-1}  # 0: augment-bench times the eager versions only (no compiling)
CUDA_TESTS=${CUDA_TESTS:-cuda}  # pytest -k expression of the cuda-tests stage
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$WORK"

if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/gpu_check.log") 2>&1
fi

export PYTHONUNBUFFERED=1
FT=("$PY" -m fractrain)
FB=("$PY" -m fracbuild.cli)
read -r -a MARGS <<< "$MODEL_ARGS"
read -r -a FTARGS <<< "$FT_ARGS"
failed=()

wanted() {  # wanted GROUP: is this group of stages in STAGES?
    [[ ",$STAGES," == *",$1,"* ]]
}

# stage NAME SECONDS COMMAND...: run COMMAND under a time limit; report on stderr.
stage() {
    local name=$1 limit=$2 start=$SECONDS rc=0
    shift 2
    echo "=== $name (limit ${limit} s)" >&2
    timeout --kill-after=20 "$limit" "$@" || rc=$?
    if (( rc == 0 )); then
        echo "=== $name: ok in $(( SECONDS - start )) s" >&2
        return 0
    fi
    echo "=== $name: FAILED with exit status $rc after $(( SECONDS - start )) s$( (( rc == 124 )) && echo ' (time limit)')" >&2
    failed+=("$name")
    if [[ $KEEP_GOING != 1 ]]; then
        exit "$rc"
    fi
    return 0
}

# json FILE KEY: one value from a JSON file ('' when absent or null).
json() {
    "$PY" -c 'import json,sys
try:
    v = json.load(open(sys.argv[1])).get(sys.argv[2])
except Exception:
    v = None
print("" if v is None else v)' "$1" "$2"
}

echo "gpu_check: work folder $WORK; device $DEVICE; L=$L at ${SIZE}px; input ${INPUT}px; batch $BATCH; workers $WORKERS"
if wanted environment; then
    stage environment 120 "$PY" -c '
import torch, timm, fractrain, fracbuild
print("torch", torch.__version__, "timm", timm.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from fractrain.inputs.defaults import gpu_augment_class
print("GPU augmentation available:", gpu_augment_class() is not None)'
fi
# Correctness first: the timings below mean little if these fail.
if wanted cuda-tests; then
    stage cuda-tests 420 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_augment.py \
        tests/test_gpu_augment_static.py tests/test_staging.py -k "$CUDA_TESTS"
fi
# Every later stage needs the data set.
if wanted build || wanted augment-bench || wanted bench || wanted pretrain || wanted finetune; then
    stage build 240 "${FB[@]}" render --L "$L" --size "$SIZE" --out "$WORK/shards" --workers "$NPROC" --no-progress --json
fi
bench() {  # bench NAME LIMIT ARGS...
    local name=$1 limit=$2 profile=()
    shift 2
    [[ ",$BENCHES," == *",${name#bench-},"* ]] || return 0
    (( PROFILE_STEPS > 0 )) && profile=(--profile-steps "$PROFILE_STEPS")
    (( HOST_PROFILE_STEPS > 0 )) && profile+=(--host-profile-steps "$HOST_PROFILE_STEPS")
    # Chrome traces too (2-4 files per bench: mind the device tool's 8 files back from $OUT).
    [[ $KEEP_TRACES == 1 ]] && profile+=(--trace-dir "${OUT:-$WORK}/$name")
    stage "$name" "$limit" "${FT[@]}" bench --shards "$WORK/shards" --device "$DEVICE" --batch-size "$BATCH" \
        --input-size "$INPUT" --steps "$BENCH_STEPS" --warmup "$BENCH_WARMUP" --windows "$BENCH_WINDOWS" \
        --workers "$WORKERS" --json "${profile[@]}" "$@" > "$WORK/$name.json" || true
    [[ -s "$WORK/$name.json" ]] && cat "$WORK/$name.json"
    return 0
}
# The figures of issue #6 first (compiled vit_tiny, vit_base), in case the
# device time runs out; the side stream's effect and the CPU path once each.
if wanted bench; then
    # GPU_MODE: the --gpu-augment-mode of these (empty: fractrain's default).
    MODE=()
    [[ -n $GPU_MODE ]] && MODE=(--gpu-augment-mode "$GPU_MODE")
    bench bench-vit_tiny-compiled 360 --model vit_tiny --compile --paths model,gpu,gpu-serial \
        "${MODE[@]}" "${MARGS[@]}"
    bench bench-base 240 --model "$BASE_MODEL" --paths model,gpu "${MODE[@]}" "${MARGS[@]}"
    bench bench-vit_tiny 240 --model vit_tiny --paths model,gpu,gpu-serial,cpu "${MODE[@]}" \
        "${MARGS[@]}"
    # Against the op-by-op layout.
    bench bench-vit_tiny-compiled-op-by-op 360 --model vit_tiny --compile --paths model,gpu \
        --gpu-augment-mode op-by-op "${MARGS[@]}"
    # The crop's resize from its windows' taps instead of TF32 matrix products (the default).
    bench bench-vit_tiny-compiled-taps 360 --model vit_tiny --compile --paths model,gpu \
        "${MODE[@]}" --gpu-resize taps "${MARGS[@]}"
    # The steps on a high-priority stream (the augmentation fills the model's idle SMs).
    bench bench-vit_tiny-compiled-priority 360 --model vit_tiny --compile --paths model,gpu \
        "${MODE[@]}" --high-priority-step "${MARGS[@]}"
fi
if wanted augment-bench; then
    baseline=() fuse=()
    [[ -d "$BASELINE/trainer" ]] && baseline=(--baseline "$BASELINE")
    [[ $AUG_FUSE == 1 ]] && fuse=(--fuse)
    stage augment-bench 300 "$PY" benchmarks/augment_bench.py --device "$DEVICE" --configs "$AUG_CONFIGS" \
        --resize-precision "$AUG_RESIZE" --static "${fuse[@]}" "${baseline[@]}" --only "$AUG_ONLY" --profile
fi
if wanted host-bench; then
    stage host-bench 120 "$PY" benchmarks/host_bench.py --planners 0,2 --batch "$BATCH"
fi


if wanted pretrain || wanted finetune; then
    if [[ -z "$PRETRAIN_STEPS" ]]; then
        rate=""
        [[ -s "$WORK/bench-vit_tiny.json" ]] && rate=$(json "$WORK/bench-vit_tiny.json" gpu_augment_images_per_s)
        [[ -z "$rate" && -s "$WORK/bench-vit_tiny.json" ]] && rate=$(json "$WORK/bench-vit_tiny.json" cpu_augment_images_per_s)
        [[ -z "$rate" ]] && rate=1000
        PRETRAIN_STEPS=$("$PY" -c "print(max(10, int($PRETRAIN_SECONDS * $rate / $BATCH)))")
    fi
    echo "pre-training vit_tiny for $PRETRAIN_STEPS steps of $BATCH (about ${PRETRAIN_SECONDS} s at the measured rate)"
    stage pretrain $(( PRETRAIN_SECONDS * 2 + 180 )) "${FT[@]}" --shards "$WORK/shards" --model vit_tiny "${MARGS[@]}" \
        --input-size "$INPUT" --batch-size "$BATCH" --steps "$PRETRAIN_STEPS" --device "$DEVICE" --workers "$WORKERS" \
        --log-every 100 --ckpt-every 1000000 --no-progress --out "$WORK/runs/pretrain"
fi

if wanted finetune; then
    stage digits 120 "$PY" benchmarks/train_bench.py digits --out "$WORK/digits" --size 32

    # The paper's fine-tuning recipe (SGD 0.01, ImageNet statistics, DeiT
    # augmentation), with a short budget; the scratch model is the same
    # architecture (taken from the checkpoint) with random weights.
    finetune() {  # finetune NAME ARGS...
        local name=$1
        shift
        stage "$name" 300 "${FT[@]}" finetune --init "$WORK/runs/pretrain/final.pt" "$@" \
            --train "$WORK/digits/train" --val "$WORK/digits/val" --input-size "$FT_INPUT" --epochs "$FT_EPOCHS" \
            --warmup-epochs 2 --crop-pct 1 --device "$DEVICE" --workers "$WORKERS" --no-progress "${FTARGS[@]}" \
            --out "$WORK/runs/$name"
    }
    finetune finetune-1p-frac
    finetune finetune-scratch --scratch
fi

echo
echo "=== results"
for name in bench-vit_tiny bench-vit_tiny-compiled bench-vit_tiny-compiled-taps bench-vit_tiny-compiled-op-by-op bench-vit_tiny-compiled-priority bench-base; do
    [[ -s "$WORK/$name.json" ]] && "$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("{:<34} {} | model {} img/s | gpu-augment {} (serial {}) | cpu-augment {} | gpu/model {} (serial {}) "
      "cpu/model {} gpu/cpu {} | peak {} GB".format(
          sys.argv[2], r["model"] + (" compiled" if r["compile"] else "") + " " + str(r.get("gpu_augment_mode")) + " resize " + str(r.get("gpu_resize")),
          r["model_images_per_s"],
          r["gpu_augment_images_per_s"], r.get("gpu_serial_augment_images_per_s"), r["cpu_augment_images_per_s"],
          r["gpu_vs_model"], r.get("gpu_serial_vs_model"), r["cpu_vs_model"], r["gpu_vs_cpu"],
          r["peak_gpu_memory_gb"]))' "$WORK/$name.json" "$name"
done
runs=()
for name in pretrain finetune-1p-frac finetune-scratch; do
    [[ -f "$WORK/runs/$name/summary.json" ]] && runs+=("$WORK/runs/$name")
done
if (( ${#runs[@]} )); then
    "$PY" benchmarks/train_bench.py report "${runs[@]}"
fi
for name in finetune-1p-frac finetune-scratch; do
    if [[ -f "$WORK/runs/$name/summary.json" ]]; then
        echo "$name: best top-1 $(json "$WORK/runs/$name/summary.json" best_top1)" \
             "top-5 $(json "$WORK/runs/$name/summary.json" best_top5) after $FT_EPOCHS epochs on digits"
    fi
done
if (( ${#failed[@]} )); then
    echo "gpu_check: FAILED stages: ${failed[*]}"
    exit 1
fi
echo "gpu_check: all stages passed"

#!/usr/bin/env bash
# Does 1p-frac pre-training help downstream, at a size a CPU can run? (about
# 10 minutes on 2 cores for one fine-tuning seed; see benchmarks/RESULTS.md)
#
#   1. build 1p-frac with L = 64 classes at 64 px; scikit-learn's digits as
#      ImageFolder trees (32 px);
#   2. pre-train a small ViT (32 px input, patch 4, depth 4, width 96) on it
#      for PRE_STEPS steps with flips only (at this size and budget the full
#      recipe keeps the loss at ln L: see "Learning signal" in RESULTS.md);
#   3. fine-tune that checkpoint and the same architecture from scratch on
#      digits with the same recipe and budget (flips only, FT_EPOCHS epochs),
#      once per seed in SEEDS; print both best top-1 accuracies per seed.
#
# Settings can be overridden from the environment. Needs the project
# installed with its train extra and scikit-learn (make test installs both).
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
L=${L:-64}
PRE_STEPS=${PRE_STEPS:-1500}
FT_EPOCHS=${FT_EPOCHS:-15}
SEEDS=${SEEDS:-0}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/transfer_check.XXXXXX")}
MODEL=(--model vit_tiny --input-size 32 --model-arg patch_size=4 --model-arg depth=4 --model-arg embed_dim=96
       --model-arg num_heads=3)
LIGHT=crop,mixup,cutmix,randaugment,erasing,color-jitter  # everything but the flips (jitter too: timm turns it on without RandAugment)
export PYTHONUNBUFFERED=1

echo "transfer_check: work folder $WORK; L=$L; $PRE_STEPS pre-training steps; $FT_EPOCHS fine-tuning epochs; seeds $SEEDS"
"$PY" -m fracbuild.cli render --L "$L" --size 64 --out "$WORK/shards" --no-progress > /dev/null
"$PY" benchmarks/train_bench.py digits --out "$WORK/digits" --size 32 > /dev/null
"$PY" -m fractrain --recipe exact-epochs --shards "$WORK/shards" "${MODEL[@]}" -b 64 --steps "$PRE_STEPS" --lr 1e-3 --lr-base-batch 0 \
    --device cpu --workers 0 --augment gpu --aug-off "$LIGHT" --no-progress --log-every 500 --out "$WORK/pre"

for seed in ${SEEDS//,/ }; do
    for init in 1p-frac scratch; do
        extra=()
        [[ $init == scratch ]] && extra=(--scratch)
        "$PY" -m fractrain finetune --recipe exact-epochs-finetune --init "$WORK/pre/final.pt" "${extra[@]}" --train "$WORK/digits/train" \
            --val "$WORK/digits/val" --input-size 32 --epochs "$FT_EPOCHS" --warmup-epochs 2 --crop-pct 1 \
            --device cpu --workers 0 --aug-off "$LIGHT" --seed "$seed" --no-progress \
            --out "$WORK/finetune-$init-s$seed" > /dev/null
    done
done
"$PY" benchmarks/train_bench.py report "$WORK/pre" "$WORK"/finetune-*
for seed in ${SEEDS//,/ }; do
    "$PY" -c '
import json, sys
work, seed = sys.argv[1], sys.argv[2]
pre, scratch = (json.load(open(f"{work}/finetune-{i}-s{seed}/summary.json"))["best_top1"] for i in ("1p-frac", "scratch"))
print(f"seed {seed}: digits best top-1, 1p-frac pre-trained {pre:.3f} vs scratch {scratch:.3f}")' \
        "$WORK" "$seed"
done

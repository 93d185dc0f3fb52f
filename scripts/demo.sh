#!/usr/bin/env bash
# The whole CAKES pipeline on a small synthetic dataset, on the CPU, through main.py:
# cost-priority search (-sr --reweight), prune, retrain the pruned network (started from the
# supernet's kept channels), evaluate. Everything goes to demo_out/. Prints every command it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY="$PWD/.venv/bin/python"
OUT=demo_out
rm -rf "$OUT" && mkdir -p "$OUT"
cd "$OUT"

run() { echo; echo "+ $*"; "$@"; }

# Small clips keep it to minutes on two cores: 4 frames of 64x64 instead of 8 of 224x224.
COMMON=(--root_path data --dataset somethingv1 --type I3D --arch resnet50 --num_segments 4 --input_size 64
        -b 8 -j 2 -p 10 --pretrained none --seed 0 --channels_last)
SUPERNET=search/checkpoint/I3D_somethingv1_resnet50_segment4__checkpoint.pth.tar
PRUNED=retrain/checkpoint/I3D_somethingv1_resnet50_segment4__best.pth.tar

run "$PY" ../scripts/make_synthetic_data.py data --train 160 --val 48
run "$PY" ../main.py "${COMMON[@]}" --checkpoint_dir search --op_code conv1_2_3d --search -sr --s 0.0001 \
    --reweight --epochs 6 --lr 0.02 --warm 1 --lr_steps 5 --eval-freq 3
run "$PY" ../main.py "${COMMON[@]}" --checkpoint_dir search --op_code conv1_2_3d --search --prune \
    --prune_model_path "$SUPERNET"
run "$PY" ../main.py "${COMMON[@]}" --checkpoint_dir retrain --op_code conv1_2_3d --conv_config conv_config.txt \
    --finetune "$SUPERNET" --epochs 3 --lr 0.01 --warm 0 --lr_steps 2
run "$PY" ../main.py "${COMMON[@]}" --checkpoint_dir retrain --op_code conv1_2_3d --conv_config conv_config.txt \
    --resume "$PRUNED" --evaluate | tee evaluate.log
echo
echo "Demo done in ${SECONDS}s. Final evaluation of the pruned, retrained network:"
grep '^Testing Results' evaluate.log
echo "(chance is 50%: the two classes differ only in the direction of motion; outputs are in $OUT/)"

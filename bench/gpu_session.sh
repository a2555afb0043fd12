#!/usr/bin/env bash
# One prepared run on a lent GPU machine (device time is scarce: 15 minutes a session, so
# everything goes into one call): trainings side by side on the one GPU, then the
# inference benchmark, the end-to-end pipeline benchmark and the CUDA test there.
#
#   OUT=out/gpu DATA=.devdata/dmiai2023 BUDGET=240 bash bench/gpu_session.sh
#
# RUNS entries are name:fold:crop:batch:lr:dropout:weight_decay:p_control (5 folds, seed 0).
# The network is small, so one training leaves the GPU mostly idle; the crop loaders need
# the CPU cores (WORKERS per run). What comes back is at most 8 files, so artifacts travel
# two to a tar and the logs in one.
set -u
OUT=${OUT:-out/gpu}
DATA=${DATA:-../shared/data/dmiai2023}
BUDGET=${BUDGET:-240}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-2}
PY=${PY:-python3}
RUNS=${RUNS:-"a1:1:192:16:2e-3:0:1e-4:0.25 a2:2:192:16:2e-3:0:1e-4:0.25 a3:3:192:16:2e-3:0:1e-4:0.25 a4:4:192:16:2e-3:0:1e-4:0.25 r0:0:192:16:2e-3:0.1:1e-2:0.35 r1:1:192:16:2e-3:0.1:1e-2:0.35"}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
LOGS=/tmp/gpu-logs
mkdir -p "$OUT" "$LOGS"
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ]; then  # packages the GPU image lacks (monai, the service's), as wheels
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl >"$LOGS/pip.log" 2>&1
    export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-}
fi
{
    nvidia-smi -L 2>&1
    $PY -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)"
    nproc
} >"$LOGS/misc.log" 2>&1

train() {  # name fold crop batch lr dropout weight_decay p_control
    $PY -m cli train --data "$DATA" --out "/tmp/train-$1" --device "$DEVICE" --fold "$2" \
        --crop-size "$3" --batch-size "$4" --lr "$5" --dropout "$6" --weight-decay "$7" \
        --p-control "$8" --workers "$WORKERS" --epochs 500 --steps-per-epoch 500 \
        --time-budget "$BUDGET" --seed 0 ${LIMIT:+--limit $LIMIT} >"$LOGS/train-$1.log" 2>&1
    mkdir -p "/tmp/art/$1" && cp /tmp/train-"$1"/attention-unet-*/* "/tmp/art/$1/"
}
for r in $RUNS; do
    IFS=: read -r name fold crop batch lr dropout wd pctrl <<<"$r"
    train "$name" "$fold" "$crop" "$batch" "$lr" "$dropout" "$wd" "$pctrl" &
done
wait
i=0
set -- /tmp/art/*/
while [ $# -gt 0 ]; do  # two artifacts (2 x 8 MB) per tar: under the 16 MiB a file
    i=$((i + 1))
    tar -C /tmp/art -cf "$OUT/artifacts-$i.tar" "$(basename "$1")" ${2:+"$(basename "$2")"}
    shift; [ $# -gt 0 ] && shift
done
[ -n "${SKIP_BENCH:-}" ] && { tar -C "$LOGS" -cf "$OUT/logs.tar" .; exit 0; }

# the released artifact (model/artifacts), as on the CPU
timeout 150 $PY -m bench.inference --device "$DEVICE" --data "$DATA" --n 128 --seed-n 16 --batch-sizes 8 32 128 --json >"$OUT/bench-inference.json" 2>>"$LOGS/misc.log"
timeout 150 $PY -m bench.pipeline --data "$DATA" --n 200 --chunk-size 32 --json \
    >"$OUT/bench-pipeline.json" 2>"$LOGS/pipeline.log"
timeout 60 $PY -m pytest -p no:cacheprovider --confcutdir=tests/model -q \
    tests/model/test_predictor.py >>"$LOGS/misc.log" 2>&1
tar -C "$LOGS" -cf "$OUT/logs.tar" .
tail -n 2 "$LOGS"/train-*.log "$LOGS/misc.log" "$LOGS/pipeline.log"

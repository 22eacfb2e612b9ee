#!/usr/bin/env bash
# Runs ON THE DEVICE (the GPU machine), after benchmarks/gpu/stage.sh here. Phases:
#   bash benchmarks/gpu/session.sh all SECONDS     # train SECONDS, then bench: the whole GPU part in ONE `run`
#                                                  # call (a task gets 15 minutes of device time, the machine's
#                                                  # start included; benchmarks/README.md)
#   bash benchmarks/gpu/session.sh train SECONDS   # paper recipe: PCNet, SCN, PCNet without DPC, PCNet with
#                                                  # multi-class patch labels, and PCNet as packaged (BatchNorm in
#                                                  # the 4x head, our --guide and 3 head blocks), in parallel, for
#                                                  # SECONDS of wall
#   bash benchmarks/gpu/session.sh bench [SECTIONS] [SIZES]   # benchmarks/bench_gpu.py
#   bash benchmarks/gpu/session.sh precision [BSDS_IMAGES]     # benchmarks/bench_precision.py, BSDS500 val
# Outputs under $OUT: one RUN.tar per training run (best and last weights as float16, log.csv, curves.png, the
# log), results-gpu.json (written after each section), session.log.
set -uo pipefail
PY=${PYTHON:-python3}  # the device's python3 holds its PyTorch (there may be no plain `python`)
export PYTHONPATH="$PWD/src:$PWD/benchmarks:/tmp/site" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
[ -e ../shared ] || ln -s "$PWD/gpu/shared" ../shared  # the datasets' default paths are ../shared/...
# what the image lacks, beside (not into) its environment: /tmp/site comes after ours on PYTHONPATH
ls gpu/wheels/*.whl > /dev/null 2>&1 && $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site gpu/wheels/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
phase=${1:?all SECONDS, train SECONDS, bench or precision}
mkdir -p runs

train() {
    local seconds=$1
    # DEVICE and TRAIN_EXTRA (appended, so they override) are for a dry run on a CPU, e.g. DEVICE=cpu
    # TRAIN_EXTRA="--crop 128 --patch 128 --global-resize 192 --batch-size 2 --checkpoint-every 2 --val-images 1"
    # shellcheck disable=SC2206
    local common=(--data bsds500:train --val bsds500:val --device "${DEVICE:-cuda}" --loader-workers 3
                  --checkpoint-every 100 --val-every 500 -q ${TRAIN_EXTRA:-})
    declare -A runs=([pcnet]="pcnet" [scn]="scn" [pcnet-no-dpc]="pcnet --no-dpc"
                     [pcnet-multiclass]="pcnet --multiclass-patch" [pcnet-ours]="pcnet --head-norm --guide --head-blocks 3")
    local pids=() name d w
    for name in "${!runs[@]}"; do
        # SIGINT makes a run write last.pt and stop; KILL 60 s later if it has not ended
        # shellcheck disable=SC2086
        timeout -s INT -k 60 "$seconds" $PY -m uhrseg train ${runs[$name]} "${common[@]}" --out "runs/gpu-$name" \
            > "runs/gpu-$name.log" 2>&1 &
        pids+=($!)
    done
    # the PIDs, not a bare `wait`: that would also wait for the `tee` of the process substitution above
    wait "${pids[@]}"
    for name in "${!runs[@]}"; do
        d="runs/gpu-$name"
        mkdir -p "runs/pack/$name"
        for w in best last; do
            [ -f "$d/$w.pt" ] && $PY -c "from uhrseg.models import export_weights as e; e('$d/$w.pt', 'runs/pack/$name/$w.pt')"
        done
        cp "$d/log.csv" "$d/curves.png" "runs/gpu-$name.log" "runs/pack/$name/" 2>/dev/null
        tail -n 3 "$d/log.csv" 2>/dev/null
        tar -cf "$OUT/$name.tar" -C runs/pack "$name"
    done
}

bench() {
    $PY benchmarks/bench_gpu.py --device "${DEVICE:-cuda}" --sections "${1:-correctness,tiling,half,sizes}" \
        --sizes "${2:-1K,2.5K,5K,10K,20K}" --out "$OUT/results-gpu.json"
}

case $phase in
all)
    # the 10K / 20K mosaics of the sizes section are made on the CPU while the GPU trains
    $PY -c "from bench_superpixels import prepare_images; prepare_images()" > runs/prepare-images.log 2>&1 &
    prep=$!
    train "${2:?seconds of training}"
    wait "$prep" || echo "session.sh: making the mosaics failed (runs/prepare-images.log); bench makes them"
    date
    bench "${3:-}" "${4:-}"
    ;;
train)
    train "${2:?seconds of training}"
    ;;
bench)
    bench "${2:-}" "${3:-}"
    ;;
precision)
    # BR / BP / ASA at fp32, bf16 and fp16 on the staged BSDS500 val images (the drone and DeepGlobe sets are not
    # staged), and the network's time per precision on the 5K photograph
    $PY benchmarks/bench_precision.py --device "${DEVICE:-cuda}" --datasets bsds500 --bsds-images "${2:-50}" \
        --methods pcnet,scn --out "$OUT/results-precision-gpu.json"
    ;;
*)
    echo "session.sh: unknown phase $phase" >&2
    exit 2
    ;;
esac
ls -la "$OUT"

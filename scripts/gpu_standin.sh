#!/usr/bin/env bash
# The stand-in study on a GPU (issue 14; docs/standin.md), sized for one 15-minute device slot.
#
#   bash scripts/gpu_standin.sh study [MINUTES_PER_VARIANT=2] [extra study_standin.py flags, which win]
#       the four variants, MINUTES each of training wall time at 256² (2 checkpoints), measured on the GPU
#       (quality vs Telea/NS, steerability, backfire-s as the reference); the tables, the plot and each
#       variant's last fp16 EMA generator go to $OUT
#   bash scripts/gpu_standin.sh train VARIANT [MINUTES=9] [extra train_inpainter.py flags, which win]
#       one variant, MINUTES of wall-clock training at 256², bf16 autocast, the EMA generator exported in
#       fp16; the export, summary and logs go to $OUT
#
# Needs, in the ignored folder .standin/ carried from the CPU machine (≈ 45 MiB; the code is ≈ 11 MiB,
# the device takes 64 MiB a call):
#   python scripts/prepare_data.py .standin/data256 --photos PHOTOS --train-side 256 --webp-quality 92 \
#       --train-crops 6000 --max-mib 36     # lossy WebP: ~4× the crops of lossless in the same MiB
#   python scripts/export_inception_stem.py .standin/inception-stem.pt     # perceptual loss / stem encoder
#   cp -r SAMPLES .standin/samples                                          # scripts/make_sample_set.py's set
# Device call: run(command="bash scripts/gpu_standin.sh study 2", carry=[".standin"], timeout_s=600).
# FID needs the full Inception file (87 MB, too big to carry): on the device the study reports no FID.
# CPU smoke test of the same code paths (tiny settings; the workers, the export, the measurement):
#   OUT=/tmp/out bash scripts/gpu_standin.sh train lama-stem 1.5 --device cpu --ngf 8 --n-blocks 1 --batch 2 \
#       --workers 2 --data DATA128
#   OUT=/tmp/out bash scripts/gpu_standin.sh study 0.1 --device cpu --measure-device cpu --ngf 8 --n-blocks 1 \
#       --batch 2 --variants lama-stem --reference '' --images 1 --quality-images 2 --data DATA128
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: gpu_standin.sh study [MINUTES] [flags] | train VARIANT [MINUTES] [flags]}
shift
OUT=${OUT:-/tmp/standin-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
[ -f .standin/inception-stem.pt ] && export BACKFIRE_INCEPTION_WEIGHTS=$PWD/.standin/inception-stem.pt
PY=${PYTHON:-python3}
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' || true

if [ "$MODE" = study ]; then
    MINUTES=${1:-2}
    [ $# -ge 1 ] && shift
    WORK=${WORK:-/tmp/standin-work}
    set +e
    $PY benchmarks/study_standin.py --data .standin/data256 --samples .standin/samples --work "$WORK" \
        --out "$OUT/standin" --budget-wall-min "$MINUTES" --checkpoints 2 --device cuda --measure-device cuda \
        --ngf 32 --n-blocks 6 --batch 32 --lr 1e-3 --ema-decay 0.999 --warmup-steps 200 --threads 8 \
        --images 4 --crop 256 --quality-images 60 --sign-steps 10 "$@" 2>&1 | tee "$OUT/study.log"
    status=${PIPESTATUS[0]}
    set -e
    for d in "$WORK"/*/; do
        last=$(ls "$d"generator-*.safetensors 2>/dev/null | sort | tail -n 1)
        [ -n "$last" ] && cp "$last" "$OUT/$(basename "$d")-$(basename "$last")"
    done
elif [ "$MODE" = train ]; then
    VARIANT=${1:?usage: gpu_standin.sh train VARIANT [MINUTES] [flags]}
    MINUTES=${2:-9}
    shift $(( $# >= 2 ? 2 : 1 ))
    RUN=${RUN:-/tmp/standin-run-$VARIANT}
    # batch 32 at 256²; checkpoints every 500 steps; --resume continues a RUN folder still there
    set +e
    $PY scripts/train_inpainter.py --data .standin/data256 --out "$RUN" --variant "$VARIANT" \
        --ngf 32 --n-blocks 6 --batch 32 --lr 1e-3 --ema-decay 0.999 --warmup-steps 200 \
        --val-every 1000 --ckpt-every 500 --log-every 50 --time-limit-min "$MINUTES" --resume "$@" \
        2>&1 | tee "$OUT/train.log"
    status=${PIPESTATUS[0]}
    set -e
    for f in generator_ema.safetensors summary.json train_log.csv config.json; do
        [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"
    done
else
    echo "gpu_standin.sh: unknown mode $MODE (study or train)" >&2
    exit 2
fi
ls -la "$OUT"
exit "$status"

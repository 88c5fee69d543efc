#!/usr/bin/env bash
# One prepared training run of a stand-in variant on a GPU (issue 14; docs/standin.md), sized for a
# 15-minute device slot: MINUTES (default 9) of wall-clock training at 256², bf16 autocast, the EMA
# generator exported in fp16 — and that export, the run's summary and its log copied to $OUT.
#
#   bash scripts/gpu_standin.sh VARIANT [MINUTES] [extra train_inpainter.py flags, which win]
#
# Needs, carried from the CPU machine in the ignored folder .standin/ (≤ ~45 MiB with the code):
#   python scripts/prepare_data.py .standin/data256 --photos PHOTOS --train-side 256 --webp-quality 92 \
#       --train-crops 6000 --max-mib 40     # lossy WebP: ~4× the crops of lossless in the same MiB
#   python scripts/export_inception_stem.py .standin/inception-stem.pt     # perceptual loss / stem encoder
#   (.standin/ is in .gitignore)
# Device call: run(command="bash scripts/gpu_standin.sh lama-stem 9", carry=[".standin"], timeout_s=600).
# CPU smoke test of the same code path (tiny settings, the workers and the export; no CUDA):
#   OUT=/tmp/out bash scripts/gpu_standin.sh lama-stem 0.3 --device cpu --ngf 8 --n-blocks 1 --batch 2 \
#       --workers 2 --data DATA128
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${1:?usage: gpu_standin.sh VARIANT [MINUTES] [flags]}
MINUTES=${2:-9}
shift $(( $# >= 2 ? 2 : 1 ))
OUT=${OUT:-/tmp/standin-out}
RUN=${RUN:-/tmp/standin-run-$VARIANT}
mkdir -p "$OUT" "$RUN"
export PYTHONUNBUFFERED=1
[ -f .standin/inception-stem.pt ] && export BACKFIRE_INCEPTION_WEIGHTS=$PWD/.standin/inception-stem.pt
PY=${PYTHON:-python3}
$PY - <<'EOF' || true
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
# The variant's loss and architecture; shared size and optimisation as in the pilot (docs/standin.md),
# batch 32 at 256²; checkpoints every 500 steps; --resume continues a RUN folder that is still there.
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
ls -la "$OUT"
exit "$status"

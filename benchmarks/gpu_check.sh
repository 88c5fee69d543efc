#!/usr/bin/env bash
# The CUDA path checked and timed in one run (≤ 8 minutes on one H200): correctness against the CPU, recipe
# paper against the big-LaMa architecture at 512² and 1024² (one photo and batched, eager vs tuned), MAT and
# MI-GAN at 512², peak memory. Writes $OUT/gpu_table.md (or ./gpu_table.md) for docs/benchmarks.md.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --toy      # the same on the CPU at toy sizes (how it was tested)
#
# The GPU machine's python3 holds PyTorch, numpy, Pillow, safetensors and tqdm: all the check imports; the
# package runs from the working tree (no install). It stops itself after 480 s.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python="${PYTHON:-$(command -v python3 || command -v python)}"  # PYTHON=... picks another (a venv)
if [[ "${1:-}" != "--toy" ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu_smi.txt"
fi
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
timeout 480 "$python" benchmarks/gpu_check.py "$@" --out "$out/gpu_table.md" 2>&1 | tee "$out/gpu_check.log"

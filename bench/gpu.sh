#!/usr/bin/env bash
# The CUDA check, ready for a machine with a GPU (under 5 minutes): from the repository root,
#   bench/gpu.sh
# It builds .venv if needed (make install), then prints one table each:
#   1. bench/gpu_check.py: bf16 vs fp32 losses over 50 steps, torch.compile, training examples/s,
#      and a 2-process DDP step over NCCL when 2 GPUs exist;
#   2. bench/train.py --device cuda: this project's loop against prefix expansion, peak GPU memory;
#   3. bench/features.py --device cuda: text and image encoding throughput with bf16 autocast.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1
[ -x .venv/bin/python ] || make install
PY=.venv/bin/python
$PY -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible"; print(torch.cuda.get_device_name(0))'
timeout 180 $PY bench/gpu_check.py --device cuda
timeout 60 $PY bench/train.py --device cuda --users 20000 --items 5000
timeout 60 $PY bench/features.py --device cuda --texts 2048 --images 256 --batch-size 128

#!/usr/bin/env bash
# GPU check in one go on a single-GPU machine with no network (e.g. an H100): full Melbourne history,
# bf16-mixed on cuda. Prints the figures and writes build/bench/gpu_check.json (see benchmarks/gpu_check.py).
#   bash benchmarks/gpu_check.sh [--data DIR] [--target-val-loss X] [--max-epochs N]
# PYTHON overrides the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
export PYTHONWARNINGS=ignore
exec "$PYTHON" benchmarks/gpu_check.py "$@"

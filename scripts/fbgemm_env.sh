#!/usr/bin/env bash
# Make the virtualenv that `screc bench quant` runs FBGEMM's CPU TBE in (runs/fbgemm-venv by default).
#
# fbgemm-gpu-cpu 1.9.0 (IntNBitTableBatchedEmbeddingBagsCodegen) loads with torch 2.14.1, not with the
# torch 2.13.0 of the project's torch extra, so it lives in its own environment; bench quant calls its
# python in a subprocess on the same .npy files. Usage: scripts/fbgemm_env.sh [VENV_DIR]
set -euo pipefail
venv="${1:-runs/fbgemm-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet numpy 'torch==2.14.1' 'fbgemm-gpu-cpu==1.9.0'
"$venv/bin/python" - <<'PY'
import torch, fbgemm_gpu  # noqa: F401  (loading fbgemm_gpu registers torch.ops.fbgemm)
from fbgemm_gpu.split_table_batched_embeddings_ops_inference import IntNBitTableBatchedEmbeddingBagsCodegen  # noqa: F401
print("fbgemm env ok: torch", torch.__version__, "fbgemm_gpu", getattr(fbgemm_gpu, "__version__", "?"))
PY

"""FBGEMM's CPU inference TBE on the data files ``screc bench quant`` wrote: the reference side, run as a script.

    runs/fbgemm-venv/bin/python bench/fbgemm_tbe.py DATA_DIR

It runs in the virtualenv made by ``scripts/fbgemm_env.sh`` (``fbgemm-gpu-cpu``
1.9.0 loads with torch 2.14.1, not the project's torch), so it imports nothing
from this project: only NumPy, torch and ``fbgemm_gpu``.

``DATA_DIR/config.json`` names the tables (count, rows, dim), the formats and
the batches; ``t<T>_<format>.npy`` hold each table's rows in screc's fused
row layout (emulator/store/quant.py: int8 with float32 scale and bias after the
codes, int4 with float16 ones), ``indices_<b>.npy`` and ``offsets.npy`` the
batches in TBE order (table-major, ``offsets`` of length tables * bags + 1).
Each format becomes one ``IntNBitTableBatchedEmbeddingBagsCodegen`` over all
the tables (HOST placement, SUM pooling, float32 output, one thread). Its rows
are converted to the TBE's own layout: the codes, with the scale and bias as
float16 *before* them (4 bytes; so FBGEMM's int8 table carries our float32
scale and bias rounded to float16).

Protocol on stdin/stdout, one JSON object a line: after loading and one
untimed forward per format (whose batch-0 output is saved as
``out_<format>.npy``) it prints ``{"ready": ...}``; then for each line
``run SECONDS`` it times passes (every batch once) of each format in turn, at
least 2 and for at least SECONDS each, and prints ``{"times": {format: [s, ...]}}``;
``quit`` ends it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def _load(data: Path, cfg: dict):
    import torch
    from fbgemm_gpu.split_embedding_configs import SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
    from fbgemm_gpu.split_table_batched_embeddings_ops_inference import IntNBitTableBatchedEmbeddingBagsCodegen

    types = {"fp32": SparseType.FP32, "fp16": SparseType.FP16, "int8": SparseType.INT8, "int4": SparseType.INT4}
    dim = cfg["dim"]
    data_bytes = {"fp32": 4 * dim, "fp16": 2 * dim, "int8": dim, "int4": (dim + 1) // 2}
    mods = {}
    for fmt in cfg["formats"]:
        specs = [(f"t{t}", cfg["rows"], dim, types[fmt], EmbeddingLocation.HOST) for t in range(cfg["tables"])]
        emb = IntNBitTableBatchedEmbeddingBagsCodegen(specs, pooling_mode=PoolingMode.SUM, device="cpu",
                                                      output_dtype=SparseType.FP32)
        emb.initialize_weights()
        for t, (w, scale, bias) in enumerate(emb.split_embedding_weights_with_scale_bias(split_scale_bias_mode=2)):
            rows = np.load(data / f"t{t}_{fmt}.npy", mmap_mode="c")  # writable view: torch warns on read-only
            nb = data_bytes[fmt]
            w.copy_(torch.from_numpy(np.ascontiguousarray(rows[:, :nb])))
            if fmt in ("int8", "int4"):
                sb = np.ascontiguousarray(rows[:, nb:])
                wide = sb.view(np.float32) if fmt == "int8" else sb.view(np.float16)
                scale.copy_(torch.from_numpy(wide[:, :1].astype(np.float16)))
                bias.copy_(torch.from_numpy(wide[:, 1:2].astype(np.float16)))
        mods[fmt] = emb
    return mods


def main(argv: list[str]) -> int:
    import torch

    data = Path(argv[1])
    cfg = json.loads((data / "config.json").read_text())
    torch.set_num_threads(1)
    mods = _load(data, cfg)
    batches = [(torch.from_numpy(np.load(data / f"indices_{b}.npy")), torch.from_numpy(np.load(data / "offsets.npy")))
               for b in range(cfg["batches"])]
    with torch.inference_mode():
        for fmt, emb in mods.items():
            for idx, off in batches:
                out = emb(idx, off)
            np.save(data / f"out_{fmt}.npy", emb(*batches[0]).numpy())
    import fbgemm_gpu

    print(json.dumps({"ready": True, "torch": torch.__version__, "fbgemm_gpu": getattr(fbgemm_gpu, "__version__", "?"),
                      "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        seconds = float(cmd[1])
        times = {}
        with torch.inference_mode():
            for fmt, emb in mods.items():
                times[fmt] = []
                start = time.perf_counter()
                while len(times[fmt]) < 2 or time.perf_counter() - start < seconds:
                    t0 = time.perf_counter()
                    for idx, off in batches:
                        out = emb(idx, off)
                    times[fmt].append(time.perf_counter() - t0)
        del out
        print(json.dumps({"times": times}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

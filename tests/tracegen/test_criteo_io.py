"""Criteo-layout text into a spec plus a trace: hashing tokens to rows, batching, bad lines."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from tests.conftest import one_line_error, run_cli
from tracegen.criteo_io import NUM_CATEGORICAL, import_criteo, token_row
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader


def _lines(n: int, seed: int = 0, vocab: int = 40) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        # a skewed vocabulary per feature: token k with weight 1/(k+1); one in ten tokens missing
        cats = ["" if rng.random() < 0.1 else "%08x" % int(vocab ** rng.random()) for _ in range(NUM_CATEGORICAL)]
        dense = [str(rng.randrange(100)) if rng.random() < 0.8 else "" for _ in range(13)]
        out.append("\t".join([str(rng.randrange(2))] + dense + cats))
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_import_hashes_tokens_to_rows(tmp_path, gz):
    lines = _lines(1000)
    src = tmp_path / ("c.txt.gz" if gz else "c.txt")
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(src, "wt") as f:
            f.write(text)
    else:
        src.write_text(text)
    trace_id, spec, counts = import_criteo(src, tmp_path / "c.h5", rows=997, batch_size=128, dim=8)
    # 1000 samples = 7 batches of 128 (896) + 104 dropped
    assert counts == {"samples": 1000, "batches": 7, "dropped": 104}
    assert spec.num_tables == 26 and all(t.rows == 997 and t.dim == 8 and t.pooling.mean == 1 for t in spec.tables)
    with TraceReader(tmp_path / "c.h5") as r:
        assert r.trace_id == trace_id and r.num_batches == 7 and r.batch_size == 128
        b = r.batch(1)
        assert b.offsets.tolist() == list(range(26 * 128 + 1))  # one lookup per table per sample
        for k in (0, 13, 25):
            idx, _ = b.table(k)
            fields = [lines[128 + i].split("\t")[14 + k].encode() for i in range(128)]
            assert idx.tolist() == [token_row(f, k, 997) for f in fields]
    assert not list(tmp_path.glob(".screc-criteo-*"))


def test_hash_is_stable_and_per_feature():
    assert token_row(b"68fd1e64", 0, 1 << 20) == token_row(b"68fd1e64", 0, 1 << 20)
    rows = {token_row(b"68fd1e64", k, 1 << 20) for k in range(26)}
    assert len(rows) >= 25  # the feature number changes the row
    spread = np.bincount([token_row(b"%08x" % i, 3, 16) for i in range(16_000)], minlength=16)
    assert spread.min() > 850 and spread.max() < 1150  # about 1000 per row


def test_skew_is_estimated_from_the_file(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(_lines(4000, vocab=3000)) + "\n")
    _, spec, _ = import_criteo(src, tmp_path / "c.h5", rows=1 << 16, batch_size=1000)
    assert all(0.2 < t.zipf_alpha < 2.0 for t in spec.tables)


@pytest.mark.parametrize("text, problem", [
    ("1\t2\t3\n", "line 1: 3 tab-separated fields"),
    ("\n".join(_lines(2)) + "\nx" + "\t" * 39 + "\n", "line 3: label"),
    ("", "no samples"),
])
def test_bad_files(tmp_path, text, problem):
    src = tmp_path / "bad.txt"
    src.write_text(text)
    with pytest.raises(InputError, match=problem):
        import_criteo(src, tmp_path / "x.h5", rows=100, batch_size=1)
    assert not (tmp_path / "x.h5").exists()


def test_cli(tmp_path, capsys):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(_lines(300)) + "\n")
    code, out, err = run_cli(["trace", "import-criteo", str(src), "--rows", "5000", "--batch-size", "100", "-o",
                              str(tmp_path / "c.h5")], capsys)
    assert code == 0, err
    assert "300 samples, 3 batches of 100" in out
    spec = json.loads((tmp_path / "c.spec.json").read_text())
    assert len(spec["tables"]) == 26 and spec["batch_size"] == 100
    code, _, err = run_cli(["trace", "import-criteo", str(src), "--batch-size", "1000", "-o",
                            str(tmp_path / "d.h5")], capsys)
    assert code == 2 and one_line_error(err) and "fewer than one batch" in err
    code, _, err = run_cli(["trace", "import-criteo", str(src), "--model", "tiny", "-o", str(tmp_path / "e.h5")],
                           capsys)
    assert code == 2 and one_line_error(err) and "26" in err

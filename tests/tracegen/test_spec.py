import json

import pytest

from tracegen.errors import InputError
from tracegen.spec import ModelSpec, PoolingSpec, TableSpec, load_spec_file

from tests.conftest import small_spec


def test_json_round_trip():
    spec = small_spec()
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_sizes():
    spec = small_spec()
    # a: 10 rows * 4 dims * 4 bytes = 160; b: 5 * 2 * 2 (fp16) = 20
    assert spec.total_bytes == 180
    assert spec.table("b").row_bytes == 4


def test_scaled_keeps_at_least_one_row():
    spec = small_spec().scaled(0.01)
    assert [t.rows for t in spec.tables] == [1, 1]
    with pytest.raises(ValueError):
        small_spec().scaled(0)


@pytest.mark.parametrize("bad", [dict(rows=0), dict(dim=0), dict(dtype="int8"), dict(name="a/b"), dict(zipf_alpha=-1)])
def test_table_validation(bad):
    kw = dict(name="a", rows=10, dim=4) | bad
    with pytest.raises(ValueError):
        TableSpec(**kw)


def test_pooling_validation():
    with pytest.raises(ValueError):
        PoolingSpec(kind="weird")
    with pytest.raises(ValueError):
        PoolingSpec(kind="uniform", min=5, max=2)
    assert PoolingSpec(kind="uniform", min=2, max=6).mean_lookups == 4.0


def test_load_json_and_toml(tmp_path):
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"name": "m", "batch_size": 8, "tables": [{"name": "x", "rows": 100, "dim": 8, "pooling": 3}]}))
    spec = load_spec_file(j)
    assert spec.batch_size == 8 and spec.tables[0].pooling == PoolingSpec.fixed(3)
    t = tmp_path / "m.toml"
    t.write_text('name = "m"\nbatch_size = 8\n[[tables]]\nname = "x"\nrows = 100\ndim = 8\n'
                 '[tables.pooling]\nkind = "poisson"\nmean = 4.0\nmin = 1\nmax = 20\n')
    assert load_spec_file(t).tables[0].pooling.kind == "poisson"


@pytest.mark.parametrize("content", ["{not json", '{"tables": [{"rows": -1, "dim": 4}]}', '[1, 2]', ""])
def test_bad_spec_files_raise_input_error(tmp_path, content):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(InputError) as e:
        load_spec_file(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_spec_file(tmp_path / "nope.json")

"""emulator.jsondoc: versioned JSON documents round-trip; every bad file is one InputError naming it."""

import json

import pytest

from emulator.jsondoc import load_json_doc, save_json_doc
from tracegen.errors import InputError


def _load(path, parse=dict):
    return load_json_doc(path, "widget", "screc-widget", (1, 2), parse)


def test_round_trip_and_atomic_write(tmp_path):
    p = tmp_path / "w.json"
    save_json_doc(p, {"format": "screc-widget", "version": 2, "b": [1, 2], "a": 0.5})
    assert p.read_text().startswith('{\n  "a": 0.5') and p.read_text().endswith("}\n")  # sorted, indent 2
    assert _load(p) == {"format": "screc-widget", "version": 2, "b": [1, 2], "a": 0.5}
    assert [q.name for q in tmp_path.iterdir()] == ["w.json"]  # no temporary left


@pytest.mark.parametrize("content, message", [
    (None, "widget file not found"),
    ("{", "not a JSON widget (JSONDecodeError)"),
    ('{"format": "other", "version": 1}', "not a screc widget (format field missing or wrong)"),
    ("[1]", "not a screc widget"),
    ('{"format": "screc-widget", "version": 3}', "widget version 3 is not supported (expected one of (1, 2))"),
    ('{"format": "screc-widget", "version": 1}', "bad widget: 'size'"),
])
def test_bad_documents_are_one_line_errors_naming_the_file(tmp_path, content, message):
    p = tmp_path / "w.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(InputError) as e:
        _load(p, parse=lambda d: d["size"])
    assert message in str(e.value) and "w.json" in str(e.value) and "\n" not in str(e.value)


def test_a_directory_is_named_as_one(tmp_path):
    with pytest.raises(InputError, match="is a directory, not a widget file"):
        _load(tmp_path)


def test_single_version_message(tmp_path):
    p = tmp_path / "w.json"
    p.write_text(json.dumps({"format": "screc-widget", "version": 9}))
    with pytest.raises(InputError, match=r"version 9 is not supported \(expected 1\)"):
        load_json_doc(p, "widget", "screc-widget", (1,), dict)

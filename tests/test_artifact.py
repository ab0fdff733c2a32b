"""Artifacts: what a folder is, manifests, and staging that never leaves a half-written output."""

import json

import pytest

from deploykit.artifact import load_artifact, staging, write_manifest
from deploykit.errors import UserError


def test_staging_replaces_the_output_only_on_success(tmp_path):
    out = tmp_path / "out"
    with staging(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with staging(out) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("crash mid-write")
    assert (out / "a.txt").read_text() == "first"  # the old complete output survives
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_manifest_round_trip(tmp_path):
    write_manifest(tmp_path, stage="prune", format="pytorch", parent=None, config={"ffn": 0.5}, metrics={"a": 1})
    art = load_artifact(tmp_path)
    assert (art.stage, art.format, art.metrics) == ("prune", "pytorch", {"a": 1})
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["hash"] and "torch" in m["versions"] and m["parent"] is None


def test_plain_folders_and_onnx_files(tmp_path, tiny_bert):
    assert load_artifact(tiny_bert).format == "pytorch"
    f = tmp_path / "m.onnx"
    f.write_bytes(b"")
    art = load_artifact(f)
    assert art.format == "onnx" and art.onnx_path == f


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "artifact not found"),
    (lambda p: p.mkdir(), "not a model folder"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text("{oops")), "manifest is not valid JSON"),
])
def test_bad_artifacts(tmp_path, make, message):
    p = tmp_path / "a"
    make(p)
    with pytest.raises(UserError, match=message):
        load_artifact(p)

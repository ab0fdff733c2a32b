"""The OpenVINO + NNCF peer (`deploykit.quant.ov_peer`) on tiny BERT: an OpenVINO IR with NNCF's INT8
FakeQuantize nodes, run by deploykit's `openvino` runtime like any other row."""

import importlib.util

import numpy as np
import pytest

from deploykit.quant.ov_peer import CALIBRATION_ROWS, calibration_rows, openvino_nncf_peer

HAS_PEER = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))
needs_peer = pytest.mark.skipif(not HAS_PEER, reason="needs openvino and nncf (pip install 'deploykit[openvino]')")
TEXTS = [f"a {w} film about {v} people" for w in ("fine", "dull", "long", "short", "bright") for v in ("old", "young")]


def test_calibration_rows_are_300_seeded_training_rows():
    rows = calibration_rows(1000, seed=3)
    assert len(rows) == CALIBRATION_ROWS == 300 and rows == sorted(set(rows)) and rows == calibration_rows(1000, 3)
    assert rows != calibration_rows(1000, 4) and calibration_rows(20) == list(range(20))


@needs_peer
def test_peer_is_an_int8_ir_that_deploykit_load_runs_on_openvino(tiny_bert, tmp_path, monkeypatch):
    import openvino as ov

    import deploykit.hardware as hw
    from deploykit.errors import UserError
    from deploykit.predictor import load

    art = openvino_nncf_peer(tiny_bert, tmp_path / "peer", TEXTS, max_length=32)
    assert art.manifest["stage"] == "peer" and art.format == "openvino" and art.manifest["ir_file"] == "model.xml"
    assert (art.path / "model.bin").is_file() and (art.path / "tokenizer.json").is_file()
    assert art.metrics["calibration_rows"] == len(TEXTS)
    ops = [op.get_type_name() for op in ov.Core().read_model(str(art.path / "model.xml")).get_ops()]
    assert ops.count("FakeQuantize") >= 12  # NNCF's INT8: activations and weights of every linear layer
    # NNCF's default weights use all 8 bits: a CPU without VNNI saturates them (deploykit/quant/fit.py)
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx2")
    with pytest.raises(UserError, match="saturate here.*overflow_fix=nncf.OverflowFix.ENABLE"):
        load(art.path)
    monkeypatch.setattr(hw, "quant_preset", lambda: "avx512_vnni")
    peer, teacher = load(art.path), load(tiny_bert)
    assert peer.runtime == "openvino"
    got, want = peer.logits(TEXTS), teacher.logits(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 2) and got.dtype == np.float32
    assert np.abs(got - want).max() < 0.25 * max(1.0, float(np.abs(want).max()))  # INT8, not another model


@needs_peer
@pytest.mark.parametrize("quiet", [False, True])
def test_nncf_progress_bars_stay_off_stdout_and_go_under_quiet(tiny_bert, tmp_path, capfd, monkeypatch, quiet):
    from deploykit import console

    monkeypatch.setitem(console._quiet, "on", quiet)
    capfd.readouterr()
    openvino_nncf_peer(tiny_bert, tmp_path / "peer", TEXTS, max_length=32)
    out, err = capfd.readouterr()
    assert "Statistics collection" not in out  # stdout is for a command's result (bench's table)
    assert ("Statistics collection" in err) is (not quiet)


def test_a_pytorch_folder_is_required(tmp_path):
    from deploykit.errors import UserError

    if not HAS_PEER:
        with pytest.raises(UserError, match="pip install 'deploykit\\[openvino\\]'"):
            openvino_nncf_peer(tmp_path, tmp_path / "out", TEXTS)
        return
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(b"")
    with pytest.raises(UserError, match="starts from a PyTorch model folder, not onnx"):
        openvino_nncf_peer(tmp_path / "m", tmp_path / "out", TEXTS)


def test_an_ir_folder_is_read_by_openvino_alone():
    from deploykit.runtimes import plan

    assert plan("openvino", "cpu", ["ort"]) == (["openvino"], None)
    assert plan("openvino", "edge", None) == (["openvino"], None)
    assert plan("openvino", "gpu", None)[1] == "openvino runs on target cpu or edge, not gpu"


@needs_peer
def test_the_peer_build_sends_no_telemetry_and_restores_the_environment(monkeypatch):
    import os
    import subprocess
    import sys

    # in a fresh process: nncf decides at import, and inside pytest it always stubs its telemetry itself
    probe = ("from deploykit.quant.ov_peer import telemetry_off\n"
             "from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker\n"
             "with telemetry_off():\n"
             "    import nncf\n"
             "    from nncf.telemetry.wrapper import NNCFTelemetryStub, telemetry\n"
             "    print(isinstance(telemetry, NNCFTelemetryStub),\n"
             "          OptInChecker().check(False, disable_in_ci=True) == ConsentCheckResult.DECLINED)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "NNCF_DEV")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]
    from deploykit.quant.ov_peer import telemetry_off

    monkeypatch.setenv("CI", "false")
    monkeypatch.delenv("NNCF_CI", raising=False)
    with telemetry_off():
        assert os.environ["CI"] == "true" and os.environ["NNCF_CI"] == "1"
    assert os.environ["CI"] == "false" and "NNCF_CI" not in os.environ

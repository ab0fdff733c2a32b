"""The standard-recipe baseline (`deploykit.quant.baseline.standard_baseline`) on tiny BERT: a plain export
quantized the way Optimum's avx512_vnni dynamic preset does it, in Optimum's folder layout."""

import onnx
from tiny_onnx import ort_logits

from deploykit.onnx.ops import op_counts
from deploykit.quant.baseline import standard_baseline


def test_standard_baseline_is_optimum_avx512_vnni_dynamic(tiny_bert, tmp_path, caplog):
    art = standard_baseline(tiny_bert, tmp_path / "baseline")
    # ORT's advice to pre-process (which the preset skips on purpose) printed in the middle of every bench
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    graph = onnx.load(str(art.onnx_path))
    counts = op_counts(graph)
    # plain export: no fused ops; every weight MatMul (Q, K, V, out, FFN x2 per layer, pooler, classifier)
    assert counts["Attention"] == 0 and counts["SkipLayerNormalization"] == 0
    assert counts["MatMulInteger"] == 2 * 6 + 2 and art.metrics["quantized_ops"]["quantized_matmuls"] == 14
    assert art.manifest["stage"] == "baseline" and art.manifest["config"]["reduce_range"] is False
    assert art.manifest["config"]["op_types_to_quantize"] == ["MatMul", "Add"]
    assert (art.path / "config.json").is_file() and (art.path / "tokenizer.json").is_file()
    assert ort_logits(art.onnx_path, ["a fine film"]).shape == (1, 2)

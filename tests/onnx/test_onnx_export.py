"""The export engine called directly (`deploykit.onnx.export.export_onnx`), as the quantize stage, the
standard baseline and TensorRT builds call it: a loaded model, the function's own defaults, the folder."""

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from deploykit.onnx.export import export_onnx

TEXTS = ["a fine film", "bad", "the plot was quite boring and the acting was really dreadful , sadly",
         "wonderful story"]


def test_export_onnx_is_reusable_on_a_loaded_model(tiny_bert, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)  # sdpa by default; export switches
    report = export_onnx(model, AutoTokenizer.from_pretrained(tiny_bert), tmp_path, texts=TEXTS)
    assert report["fused_ops"]["Attention"] == 2 and report["parity_rows"] == len(TEXTS) + 1
    assert report["rewrite"] == {"remove_padding": False, "trim_last_layer": False}  # the function's defaults
    assert (tmp_path / "config.json").is_file() and (tmp_path / "tokenizer.json").is_file()


def test_a_folder_whose_weights_lack_the_head_is_refused_not_exported_with_a_random_one(tiny_bert, tmp_path):
    import pytest
    from safetensors.torch import load_file, save_file

    from deploykit.errors import UserError

    weights = load_file(tiny_bert / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, tiny_bert / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(UserError, match="lacks 2 of the model's weights"):
        export_onnx(tiny_bert, AutoTokenizer.from_pretrained(tiny_bert), tmp_path / "out", texts=TEXTS)
    assert not (tmp_path / "out" / "model.onnx").exists()

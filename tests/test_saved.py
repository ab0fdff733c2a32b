"""A finished PyTorch folder loads with every weight from its safetensors, or is refused in one line
(deploykit/saved.py): from_pretrained would fill what is missing at random and the model would answer from it."""

import json

import pytest
from conftest import make_tiny_model

import deploykit
from deploykit.errors import UserError
from deploykit.saved import load_saved


def _drop_weights(folder, prefix: str) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith(prefix)}, folder / "model.safetensors",
              metadata={"format": "pt"})


def test_a_whole_folder_loads_in_eval_mode(tmp_path):
    model = load_saved(make_tiny_model(tmp_path / "m"), "classification")
    assert not model.training and model.config.num_labels == 2


def test_weights_without_the_classifier_head_are_refused_not_answered_at_random(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    _drop_weights(folder, "classifier.")
    with pytest.raises(UserError, match=r"model\.safetensors lacks 2 of the model's weights \(e\.g\. classifier\.bias\)"):
        load_saved(folder, "classification")
    with pytest.raises(UserError, match="lacks 2 of the model's weights"):  # deploykit.load / predict / serve
        deploykit.load(folder, runtime="torch")


def test_weights_holding_nan_are_refused_not_answered_with_nan(tmp_path):
    # a diverged training's folder: `deploykit predict` printed "0  nan" for every text, exit 0
    from safetensors.torch import load_file, save_file

    folder = make_tiny_model(tmp_path / "m")
    weights = load_file(folder / "model.safetensors")
    weights["classifier.bias"][:] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"model\.safetensors holds NaN or inf in 1 of its \d+ weight tensors \(e\.g\. "
                                        r"classifier\.bias\): the model would answer NaN"):
        load_saved(folder, "classification")
    with pytest.raises(UserError, match="holds NaN or inf"):  # deploykit.load / predict / serve
        deploykit.load(folder, runtime="torch")


def test_a_config_json_edited_to_another_label_count_is_refused(tmp_path, capfd):
    folder = make_tiny_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "a", "1": "b", "2": "c"}, {"a": 0, "b": 1, "c": 2}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"config\.json gives classifier\.\w+ another shape than model\.safetensors") as err:
        load_saved(folder, "classification")
    assert "\n" not in str(err.value) and "LOAD REPORT" not in capfd.readouterr().err  # one line, no table


def test_truncated_weights_and_a_pickle_only_folder_are_one_line(tmp_path):
    folder = make_tiny_model(tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"model\.safetensors is not a readable safetensors file"):
        load_saved(folder, "classification")
    weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded: safetensors only")
    with pytest.raises(UserError, match=r"holds PyTorch pickle weights \(pytorch_model.bin\) and no model.safetensors"):
        load_saved(folder, "classification")

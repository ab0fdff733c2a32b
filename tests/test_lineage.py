"""deploykit/lineage.py: what a model folder says about how it was trained, read through its manifests."""

from pathlib import Path

import pytest

from deploykit.artifact import Artifact
from deploykit.config import build_recipe
from deploykit.errors import UserError
from deploykit.lineage import fit_columns, trained_columns


def model(text="premise", pair="hypothesis") -> Artifact:
    return Artifact(Path("/models/nli"), {"stage": "finetune", "config": {"data": {"text_column": text,
                                                                                  "text_pair_column": pair}}})


def recipe(**data):
    return build_recipe({"data": {"path": "rows.tsv", **data}, "quantize": {}})


def test_unset_columns_come_from_the_model():
    # `deploykit quantize --from nli --data rows.tsv`: calibrated and gated on pairs, not on the premises alone
    fitted = fit_columns(recipe(), model()).data
    assert (fitted.text_column, fitted.text_pair_column) == ("premise", "hypothesis")
    single = fit_columns(recipe(), model(text="review", pair=None)).data
    assert (single.text_column, single.text_pair_column) == ("review", None)
    named = fit_columns(recipe(text_column="a", text_pair_column="b"), model()).data  # the file's own names win
    assert (named.text_column, named.text_pair_column) == ("a", "b")
    assert trained_columns(Artifact(Path("/raw"), {})) == (None, None)
    assert fit_columns(recipe(), Artifact(Path("/raw"), {})).data.text_column == "sentence"  # the folder says nothing


def test_columns_that_contradict_the_model_are_refused():
    with pytest.raises(UserError, match="data.text_pair_column is null, but /models/nli was trained on sentence pairs"):
        fit_columns(recipe(text_pair_column=None), model())
    with pytest.raises(UserError, match="/models/nli was trained on single texts .* drop data.text_pair_column"):
        fit_columns(recipe(text_pair_column="b"), model(pair=None))

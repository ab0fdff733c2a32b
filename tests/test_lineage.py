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


def test_a_stage_command_on_a_pair_model_reads_pairs_without_being_told(tiny_chain, tmp_path):
    # `deploykit quantize --from nli --data pairs/`: the stage section made by the command line once wrote the
    # default text_column back as if given, and the run read a `sentence` column the file lacks
    import json
    import shutil

    from typer.testing import CliRunner

    from deploykit.cli import app

    nli = shutil.copytree(tiny_chain["finetune"], tmp_path / "nli")
    manifest = json.loads((nli / "manifest.json").read_text())
    manifest["config"]["data"].update(text_column="premise", text_pair_column="hypothesis")
    (nli / "manifest.json").write_text(json.dumps(manifest))
    rows = tmp_path / "pairs"
    rows.mkdir()
    for split in ("train", "dev", "test"):
        (rows / f"{split}.tsv").write_text("premise\thypothesis\tlabel\n" + "".join(
            f"a good film {i}\tit was {'fine' if i % 2 else 'awful'}\t{i % 2}\n" for i in range(16)))
    done = CliRunner().invoke(app, ["quantize", "--from", str(nli), "--data", str(rows), "--out",
                                    str(tmp_path / "q"), "-q"])  # no flag that makes the quantize section
    assert done.exit_code == 0, done.output
    columns = json.loads((tmp_path / "q" / "manifest.json").read_text())["columns"]
    assert columns == {"text_column": "premise", "text_pair_column": "hypothesis"}
    half = CliRunner().invoke(app, ["quantize", "--from", str(nli), "--data", str(rows), "--out", str(tmp_path / "q2"),
                                    "--set", "data.text_column=hypothesis", "-q"])
    assert half.exit_code == 2 and "would both be 'hypothesis'" in half.output
    # `deploykit run` from the pair model (no fine-tuning): its data read as pairs from the first stage on
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{source: {nli}}}\ndata: {{path: {rows}}}\nquantize: {{mode: dynamic}}\n")
    ran = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "-q"])
    assert ran.exit_code == 0, ran.output
    assert json.loads((tmp_path / "run" / "quantize" / "manifest.json").read_text())["columns"] == columns


def test_a_model_of_another_kind_than_the_recipe_is_one_line_before_any_work(tiny_bert, tiny_llama, tmp_path):
    # a classifier given to a causal-LM recipe failed late on its tokenizer ("no chat template; pass --raw"), a
    # causal LM given to a classifier recipe as "model.safetensors lacks score.weight", and bench measured a causal
    # LM for minutes before failing on the classifier beside it
    from deploykit.pipeline import run_stage
    from deploykit.stages.bench import run_many

    generation = build_recipe({"data": {"path": str(tmp_path / "unread"), "task": "generation",
                                        "prompt_template": "{sentence}"}, "export": {}})
    with pytest.raises(UserError, match=r"^\S+tiny-bert: holds a sequence classifier \(data.task classification\), "
                                        r"but the recipe's data.task is generation; give a causal LM folder"):
        run_stage("export", generation, tiny_bert, tmp_path / "e1")
    with pytest.raises(UserError, match="holds a causal LM .* data.task is classification; .*--set data.task=generation"):
        run_stage("quantize", recipe(), tiny_llama, tmp_path / "e2")
    with pytest.raises(UserError, match="tiny-bert: holds a sequence classifier"):
        run_many(generation, [tiny_llama, tiny_bert], tmp_path / "bench")
    assert not any((tmp_path / name).exists() for name in ("e1", "e2", "bench"))
    fit_columns(recipe(), Artifact(tiny_bert, {}))  # a kind that matches passes; finetune may change a head


def moved_run(tiny_chain, dest: Path, old_root: Path) -> Path:
    """A copy of the tiny chain's run folder whose manifests name their stages under `old_root`, as after
    `mv runs/a old_root; cp -r old_root dest; rm -r old_root`."""
    import json
    import shutil

    run = shutil.copytree(tiny_chain["finetune"].parent, dest)
    for manifest_file in run.glob("*/manifest.json"):
        manifest = json.loads(manifest_file.read_text())
        for key, field in (("parent", "path"), ("teacher", "source")):
            if isinstance(manifest.get(key), dict) and Path(str(manifest[key].get(field))).is_absolute():
                manifest[key][field] = str(old_root / Path(manifest[key][field]).name)
        manifest_file.write_text(json.dumps(manifest))
    return run


def test_a_run_folder_moved_whole_follows_its_own_stages(tiny_chain, tmp_path):
    from deploykit.artifact import load_artifact
    from deploykit.lineage import recorded_folder
    from deploykit.measure.text_bench import fine_tuned_teacher

    run = moved_run(tiny_chain, tmp_path / "copy", tmp_path / "gone")
    distill = load_artifact(run / "distill")
    # the recorded folder is gone: the stage of the same name beside the copy, with the recorded hash
    assert recorded_folder(distill.manifest["parent"], "path", run / "distill") == run / "finetune"
    assert fine_tuned_teacher([load_artifact(run / "prune")]).path == run / "finetune"
    # the distilled model's teacher too: pruning's recovery_teacher reads it
    assert recorded_folder(distill.manifest["teacher"], "source", run / "distill") == run / "finetune"
    # a folder at the recorded path that holds another model (another run written there) is not taken
    other = moved_run(tiny_chain, tmp_path / "gone", tmp_path / "elsewhere")
    import json

    manifest = json.loads((other / "finetune" / "manifest.json").read_text())
    (other / "finetune" / "manifest.json").write_text(json.dumps({**manifest, "hash": "another run"}))
    assert recorded_folder(distill.manifest["parent"], "path", run / "distill") == run / "finetune"
    assert recorded_folder(load_artifact(run / "prune").manifest["parent"], "path", run / "prune") == other / "distill"
    # a teacher record written before teachers carried a hash: the parent's, where the teacher is the parent
    from deploykit.lineage import teacher_record

    old = {k: v for k, v in distill.manifest["teacher"].items() if k != "hash"}
    record = teacher_record({**distill.manifest, "teacher": old})
    assert recorded_folder(record, "source", run / "distill") == run / "finetune"
    # "." (a command run inside the stage folder) finds its siblings too
    import os

    here = os.getcwd()
    try:
        os.chdir(run / "distill")
        assert recorded_folder(distill.manifest["parent"], "path", Path(".")) == run / "finetune"
    finally:
        os.chdir(here)
    # without a hash only the recorded path counts: a folder of the same name beside could be any model
    assert recorded_folder({"path": str(tmp_path / "nowhere" / "finetune")}, "path", run / "distill") is None
    assert recorded_folder({"path": "bert-base-uncased"}, "path", run / "distill") is None

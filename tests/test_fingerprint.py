"""deploykit/fingerprint.py: the data files a stage of `deploykit run` read, by their bytes."""

from conftest import write_task

from deploykit.config import build_recipe
from deploykit.fingerprint import data_files, file_digest, stage_inputs


def test_the_data_files_of_a_folder_and_the_stages_own_unlabelled_texts(tmp_path):
    task = write_task(tmp_path / "task")
    (task / "notes.txt").write_text("notes")  # no split is read from it: never fingerprinted
    extra = task / "unlabeled.txt"  # read by distill only, though it lies beside the data
    extra.write_text("a film\nanother film\n")
    recipe = build_recipe({"data": {"path": str(task)}, "finetune": {},
                           "distill": {"unlabeled": {"path": str(extra)}}})
    assert [p.name for p in data_files(recipe)] == ["train.tsv", "dev.tsv", "test.tsv"]
    finetune, distill = stage_inputs(recipe, "finetune"), stage_inputs(recipe, "distill")
    assert set(finetune) == {"dev.tsv", "test.tsv", "train.tsv"}
    assert distill == {**finetune, "unlabeled": file_digest(extra)}
    before = finetune["train.tsv"]
    (task / "train.tsv").write_text((task / "train.tsv").read_text().replace("\t0\n", "\t1\n", 1))
    assert stage_inputs(recipe, "finetune")["train.tsv"] != before  # one label flipped, same size


def test_a_single_file_an_explicit_test_file_and_a_hub_dataset(tmp_path):
    task = write_task(tmp_path / "task")
    alone = build_recipe({"data": {"path": str(task / "train.tsv")}, "finetune": {}})
    assert data_files(alone) == [task / "train.tsv"]
    elsewhere = tmp_path / "held" / "dev.tsv"  # the name of a file in the data folder too: both are recorded
    elsewhere.parent.mkdir()
    elsewhere.write_text((task / "test.tsv").read_text())
    explicit = build_recipe({"data": {"path": str(task), "test_file": str(elsewhere)}, "finetune": {}})
    assert data_files(explicit) == [task / "train.tsv", task / "dev.tsv", elsewhere]
    assert set(stage_inputs(explicit, "finetune")) == {"train.tsv", "dev.tsv", str(elsewhere.resolve())}
    hub = build_recipe({"data": {"name": "glue-not-local", "data_dir": str(tmp_path / "none")}, "finetune": {}})
    assert data_files(hub) == [] and stage_inputs(hub, "finetune") == {}

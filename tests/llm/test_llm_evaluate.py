"""deploykit/llm/evaluate.py on the tiny Llama: exact match against known greedy answers, the
normalisation rule, and perplexity equal to exp(mean cross-entropy) computed by hand in torch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploykit.errors import UserError
from deploykit.llm.evaluate import exact_match, normalise, perplexity
from deploykit.llm.generate import TorchGenerator

PROMPTS = ["the movie was really good and", "a film", "Review: it was dull", "what a great"]


@pytest.fixture(scope="module")
def gen(tiny_llama):
    return TorchGenerator(tiny_llama)


def _greedy_alone(gen, prompts, n):
    return [gen.generate([p], n).texts(gen.tokenizer)[0] for p in prompts]


@pytest.mark.parametrize("text, expected", [
    ("  Positive.\nBecause the film...", "positive"),
    ("NEGATIVE!!  ", "negative"),
    ("\n\nParis. ", "paris"),
    ("a, b.", "a, b"),
    ("", ""),
])
def test_normalise_rule(text, expected):
    assert normalise(text) == expected


def test_references_equal_to_greedy_answers_score_100_and_altered_ones_0(gen):
    answers = _greedy_alone(gen, PROMPTS, 4)
    assert all(a.strip() for a in answers)  # non-trivial answers, else the test proves nothing
    out = exact_match(gen, PROMPTS, [a.upper() + "." for a in answers], max_new_tokens=4, batch_size=3)
    assert out["exact_match"] == 100.0 and out["correct"] == len(PROMPTS) == out["n"]
    assert out["predictions"] == answers  # prompt order kept though batches are sorted by length
    wrong = exact_match(gen, PROMPTS, [a + " x" for a in answers], max_new_tokens=4)
    assert wrong["exact_match"] == 0.0
    half = exact_match(gen, PROMPTS, answers[:2] + ["nope", "nope"], max_new_tokens=4)
    assert half["exact_match"] == 50.0


def test_exact_match_rejects_mismatched_lists(gen):
    with pytest.raises(UserError, match="2 prompts but 1 references"):
        exact_match(gen, PROMPTS[:2], ["a"])


def _examples(gen):
    ids = [gen.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    # prompt-style masking: the first half of each row does not count
    return [{"input_ids": r, "labels": [-100] * (len(r) // 2) + r[len(r) // 2:]} for r in ids]


def test_perplexity_equals_exp_of_mean_cross_entropy(gen):
    import torch
    import torch.nn.functional as F

    examples = _examples(gen)
    nll, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:  # one row at a time: no padding in the reference
            logits = gen.model(torch.tensor([ex["input_ids"]])).logits[0]
            labels = torch.tensor(ex["labels"])[1:]
            nll += F.cross_entropy(logits[:-1], labels, ignore_index=-100, reduction="sum").item()
            count += int((labels != -100).sum())
    out = perplexity(gen, examples, batch_size=3)  # batches mix lengths: padding must not count
    assert out["tokens"] == count and out["n"] == len(examples)
    assert out["nll"] == pytest.approx(nll / count, rel=1e-4)
    assert out["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_perplexity_ignores_minus_100_positions(gen):
    examples = _examples(gen)
    # changing a label that is ignored changes nothing; counting fewer tokens changes the figure
    same = [{**ex, "labels": list(ex["labels"])} for ex in examples]
    base = perplexity(gen, examples)
    fewer = [{**ex, "labels": [-100] * (len(ex["labels"]) - 1) + ex["labels"][-1:]} for ex in examples]
    out = perplexity(gen, fewer)
    assert perplexity(gen, same) == base
    assert out["tokens"] == len(examples) and out["perplexity"] != base["perplexity"]
    with pytest.raises(UserError, match="nothing to score"):
        perplexity(gen, [{"input_ids": [1, 2, 3], "labels": [-100, -100, -100]}])


class NumpyOnly:
    """A generator that is not a TorchGenerator: the functions must need only generate/logits/tokenizer."""

    def __init__(self, inner):
        self.inner, self.tokenizer = inner, inner.tokenizer

    def generate(self, prompts, max_new_tokens, **kw):
        return self.inner.generate(prompts, max_new_tokens, **kw)

    def logits(self, input_ids, attention_mask):
        return np.asarray(self.inner.logits(input_ids, attention_mask), dtype=np.float32)


def test_any_generator_with_the_interface_scores_the_same(gen):
    other = NumpyOnly(gen)
    assert perplexity(other, _examples(gen)) == perplexity(gen, _examples(gen))
    assert exact_match(other, PROMPTS, ["x"] * 4)["predictions"] == exact_match(gen, PROMPTS, ["x"] * 4)["predictions"]


@pytest.fixture(scope="module")
def ort_gen(tiny_llama, tmp_path_factory):
    from deploykit.llm.generate import OrtGenerator
    from deploykit.llm.onnx_export import export_causal_lm

    out = tmp_path_factory.mktemp("llm-eval-export") / "export"
    export_causal_lm(tiny_llama, None, out, parity_prompts=PROMPTS[:1], parity_new_tokens=4)
    return OrtGenerator(out, threads=1)


def test_onnx_runtime_scores_like_pytorch(gen, ort_gen):
    answers = exact_match(gen, PROMPTS, ["x"] * 4, max_new_tokens=6)["predictions"]
    ort = exact_match(ort_gen, PROMPTS, answers, max_new_tokens=6)
    assert ort["predictions"] == answers and ort["exact_match"] == 100.0
    torch_ppl, ort_ppl = perplexity(gen, _examples(gen), batch_size=3), perplexity(ort_gen, _examples(gen), batch_size=3)
    assert ort_ppl["tokens"] == torch_ppl["tokens"]
    assert ort_ppl["nll"] == pytest.approx(torch_ppl["nll"], abs=1e-5)

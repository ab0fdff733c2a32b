"""The PyTorch decoding loop on the tiny Llama: greedy equals transformers' generate, left padding is
invisible, sampling is reproducible, stop ids end rows."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.errors import UserError
from deploykit.llm.generate import TorchGenerator, encode, load_generator, pick_tokens

PROMPTS = ["the movie was really good and", "a film"]


@pytest.fixture(scope="module")
def gen(tiny_llama):
    return TorchGenerator(tiny_llama)


def test_greedy_equals_transformers_generate(gen):
    import torch

    ids, mask = encode(gen.tokenizer, PROMPTS[:1])
    ref = gen.model.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False,
                             max_new_tokens=12, min_new_tokens=12, eos_token_id=None, pad_token_id=0)
    out = gen.generate(PROMPTS[:1], 12, stop_ids=[])
    assert out.tokens.shape == (1, 12)
    assert out.tokens[0].tolist() == ref[0, ids.shape[1]:].tolist()
    assert gen.generate(PROMPTS[:1], 12, stop_ids=[]).tokens.tolist() == out.tokens.tolist()  # deterministic


def test_left_padded_batch_equals_single_prompts(gen):
    batch = gen.generate(PROMPTS, 10, stop_ids=[])
    ids, mask = encode(gen.tokenizer, PROMPTS)
    assert (mask[1] == 0).any()  # the second row really is padded
    for row, prompt in enumerate(PROMPTS):
        alone = gen.generate([prompt], 10, stop_ids=[])
        assert batch.tokens[row].tolist() == alone.tokens[0].tolist()


def test_sampling_reproducible_with_seed(gen):
    kw = dict(do_sample=True, temperature=1.5, top_k=50, top_p=0.95, stop_ids=[])
    a = gen.generate(PROMPTS, 16, seed=1, **kw)
    b = gen.generate(PROMPTS, 16, seed=1, **kw)
    c = gen.generate(PROMPTS, 16, seed=2, **kw)
    assert a.tokens.tolist() == b.tokens.tolist()
    assert a.tokens.tolist() != c.tokens.tolist()


def test_top_k_one_is_greedy_and_top_p_filters():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)).astype(np.float32)
    assert pick_tokens(logits, rng, top_k=1).tolist() == logits.argmax(-1).tolist()
    # a tiny top_p keeps only the most likely token
    assert pick_tokens(logits, rng, top_p=1e-6).tolist() == logits.argmax(-1).tolist()
    with pytest.raises(UserError):
        pick_tokens(logits, rng, temperature=0)


def test_stop_ids_end_rows_and_pad_after(gen):
    free = gen.generate(PROMPTS, 8, stop_ids=[])
    stop = int(free.tokens[0, 2])  # row 0's third token becomes a stop token
    out = gen.generate(PROMPTS, 8, stop_ids=[stop])
    first = free.tokens[0].tolist().index(stop)
    assert out.lengths[0] == first + 1
    assert out.tokens[0, :first + 1].tolist() == free.tokens[0, :first + 1].tolist()
    assert (out.tokens[0, first + 1:] == gen.tokenizer.pad_token_id).all()
    assert len(out.step_seconds) == out.tokens.shape[1]
    assert all(s > 0 for s in out.step_seconds)


def test_all_rows_stopping_ends_the_loop(gen):
    free = gen.generate(PROMPTS[:1], 8, stop_ids=[])
    out = gen.generate(PROMPTS[:1], 8, stop_ids=[int(free.tokens[0, 1])])
    assert out.tokens.shape[1] == len(out.step_seconds) <= 2
    assert isinstance(out.texts(gen.tokenizer)[0], str)


def test_logits_match_the_cached_loop(gen):
    ids, mask = encode(gen.tokenizer, PROMPTS)
    full = gen.logits(ids, mask)
    assert full.shape == (2, ids.shape[1], len(gen.tokenizer)) and full.dtype == np.float32
    first = gen.generate(PROMPTS, 1, stop_ids=[]).tokens[:, 0]
    assert first.tolist() == full[:, -1].argmax(-1).tolist()


def test_load_generator_picks_torch_without_onnx(tiny_llama, tmp_path):
    assert isinstance(load_generator(tiny_llama), TorchGenerator)
    with pytest.raises(UserError, match="runtime"):
        load_generator(tiny_llama, runtime="tensorflow")
    with pytest.raises(UserError, match="config.json"):
        load_generator(tmp_path, runtime="torch")


def test_bad_arguments_are_one_line_and_a_str_is_one_prompt(gen):
    # a str was split into one prompt per character; a NaN temperature sampled token 0 every step, top_p=2 or a
    # negative top_k sampled from every token; non-str prompts and a str max_new_tokens raised deep TypeErrors
    one = gen.generate(PROMPTS[0], 3, stop_ids=[]).tokens
    assert one.tolist() == gen.generate(PROMPTS[:1], 3, stop_ids=[]).tokens.tolist()
    bad = [(([],), "prompts must be a str or a non-empty list of str"), ((None,), "not None"),
           ((["a", None],), "prompt 1 is NoneType None, not a str"), (([1],), "prompt 0 is int 1"),
           ((["a"], "3"), "max_new_tokens='3' must be an integer of at least 1"),
           ((["a"], 2.5), "max_new_tokens=2.5"), ((["a"], 0), "max_new_tokens=0"),
           ((["a"], 2, {"do_sample": True, "temperature": float("nan")}), "temperature=nan must be a number > 0"),
           ((["a"], 2, {"do_sample": True, "top_p": 2}), r"top_p=2 must be in \(0, 1\]"),
           ((["a"], 2, {"do_sample": True, "top_p": 0.0}), r"top_p=0.0 must be in \(0, 1\]"),
           ((["a"], 2, {"do_sample": True, "top_k": -1}), "top_k=-1 must be an integer of at least 0"),
           ((["a"], 2, {"stop_ids": "50"}), "stop_ids='50' must be a list of token ids"),
           ((["a"], 2, {"seed": "x"}), "seed='x'")]
    for args, message in bad:
        kwargs = args[2] if len(args) > 2 else {}
        with pytest.raises(UserError, match=message):
            gen.generate(*args[:2], **kwargs) if len(args) > 1 else gen.generate(args[0], 2)
    assert gen.generate(["a"], np.int64(2), do_sample=True, top_k=np.int64(3), temperature=np.float32(0.7),
                        stop_ids=[np.int64(5)]).tokens.shape[0] == 1  # numpy numbers are numbers


def test_a_prompt_past_the_position_table_is_refused(gen):
    # the tiny Llama holds 256 positions; past them it answered from rotary positions it was never trained on
    limit = gen.config.max_position_embeddings
    with pytest.raises(UserError, match=rf"prompt 1 is \d+ tokens; with max_new_tokens=8 it passes the model's {limit} "
                                        "positions.*shorten the prompt or lower max_new_tokens"):
        gen.generate(["a film", "good " * limit], 8)
    long = "good " * (limit // 2)
    assert gen.generate([long], 4, stop_ids=[]).tokens.shape == (1, 4)

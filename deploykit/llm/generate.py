"""One decoding loop over two runtimes: a PyTorch causal LM and its ONNX export (with KV cache).

    from deploykit.llm.generate import load_generator
    gen = load_generator("runs/chat/export", threads=2)          # ORT when model.onnx is there
    prompt = gen.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}],
                                               tokenize=False, add_generation_prompt=True)
    out = gen.generate([prompt], max_new_tokens=32)
    out.texts(gen.tokenizer), out.step_seconds[0]               # answer, time to first token

Both runtimes run the same loop (prefill, then one token per step through the model's KV cache),
not `transformers.generate`, so a benchmark times the same work on each. Batches are left-padded;
position ids come from the attention mask, so a padded row decodes exactly as it would alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from deploykit.errors import PromptTooLong, UserError
from deploykit.llm.kv_cache import cache_feed, cache_of
from deploykit.llm.prompt_checks import check_request, check_texts

# step(input_ids, attention_mask, position_ids) -> float32 logits of the last position, [batch, vocab];
# the KV cache lives inside the closure
Step = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Generation:
    """New tokens of a batch, and how long each decoding step took."""

    tokens: np.ndarray  # [batch, n_new] int64; positions after a row's stop token hold pad_id
    lengths: np.ndarray  # [batch] new tokens per row, up to and including its stop token
    step_seconds: list[float] = field(default_factory=list)  # [0] = prefill + first token

    def texts(self, tokenizer) -> list[str]:
        """Each row's new tokens decoded, special tokens (the stop token among them) skipped."""
        return [tokenizer.decode(row[:n].tolist(), skip_special_tokens=True)
                for row, n in zip(self.tokens, self.lengths)]


def position_ids(attention_mask: np.ndarray) -> np.ndarray:
    """Positions counted over attended tokens only: a left-padded row starts at 0 like an unpadded one."""
    pos = np.cumsum(attention_mask, axis=1) - 1
    return np.where(attention_mask == 0, 1, pos).astype(np.int64)  # pads get any valid position (HF uses 1)


def encode(tokenizer, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded input_ids and attention_mask of already-rendered prompts.

    A prompt rendered by a chat template already holds the BOS token where the model wants one;
    the tokenizer adding another would change what the model sees.
    """
    if not prompts:
        raise UserError("generate: no prompts given")
    bos = tokenizer.bos_token
    rendered = bool(bos) and all(p.startswith(bos) for p in prompts)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # Llama tokenizers ship without one; pads are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(prompts), padding=True, add_special_tokens=not rendered, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def _as_list(ids) -> list[int]:
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def default_stop_ids(generation_config, config, tokenizer) -> list[int]:
    """EOS ids from generation_config, else config, else the tokenizer (SmolLM2 stops on <|im_end|>)."""
    for source in (generation_config, config):
        ids = _as_list(getattr(source, "eos_token_id", None) if source is not None else None)
        if ids:
            return ids
    return _as_list(tokenizer.eos_token_id)


def pad_id_of(tokenizer, stop_ids: list[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return stop_ids[0] if stop_ids else 0


def pick_tokens(logits: np.ndarray, rng: np.random.Generator | None, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Next token per row: argmax when `rng` is None, else a sample after temperature, top-k, top-p.

    Args:
        logits: [batch, vocab] float.
        rng: numpy Generator for sampling; None means greedy.
        temperature: divides the logits (> 0).
        top_k: keep the k most likely tokens (0 = all).
        top_p: keep the smallest set of most likely tokens whose probability reaches top_p.

    Returns:
        [batch] int64 token ids.
    """
    if rng is None:
        return logits.argmax(axis=-1).astype(np.int64)
    if temperature <= 0:
        raise UserError(f"generate: temperature={temperature} must be > 0 (use do_sample=False for greedy)")
    scores = logits.astype(np.float64) / temperature
    order = np.argsort(-scores, axis=-1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=-1)
    if 0 < top_k < ranked.shape[-1]:
        ranked[:, top_k:] = -np.inf
    probs = np.exp(ranked - ranked[:, :1])
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        # a token stays if the mass ranked above it is still below top_p (the top token always stays)
        above = np.cumsum(probs, axis=-1) - probs
        probs = np.where(above < top_p, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random((len(cdf), 1)) * cdf[:, -1:]
    rank = np.minimum((cdf < u).sum(axis=-1), cdf.shape[-1] - 1)
    return order[np.arange(len(order)), rank].astype(np.int64)


def decode(step: Step, input_ids: np.ndarray, attention_mask: np.ndarray, max_new_tokens: int, *,
           stop_ids: list[int], pad_id: int, do_sample: bool = False, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> Generation:
    """The loop both runtimes share: prefill, then one token per step until every row stopped."""
    rng = np.random.default_rng(seed) if do_sample else None
    batch = len(input_ids)
    tokens = np.full((batch, max_new_tokens), pad_id, dtype=np.int64)
    lengths = np.zeros(batch, dtype=np.int64)
    done = np.zeros(batch, dtype=bool)
    stops = np.asarray(stop_ids, dtype=np.int64)
    seconds: list[float] = []
    ids, mask, pos = input_ids, attention_mask, position_ids(attention_mask)
    for t in range(max_new_tokens):
        start = time.perf_counter()
        nxt = pick_tokens(step(ids, mask, pos), rng, temperature, top_k, top_p)
        seconds.append(time.perf_counter() - start)
        nxt = np.where(done, pad_id, nxt)
        tokens[:, t] = nxt
        lengths += ~done
        done |= np.isin(nxt, stops)
        if done.all():
            break
        # finished rows keep decoding a pad (cheaper than reshaping the cache); their output is ignored
        pos = pos[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=mask.dtype)], axis=1)
        ids = nxt[:, None]
    return Generation(tokens[:, :len(seconds)], lengths, seconds)


class _Generator:
    """What both runtimes share: tokenization, stop ids and the loop; a subclass gives `stepper`."""

    tokenizer = None
    generation_config = None
    config = None

    def stepper(self) -> Step:
        """A fresh `Step`: (input_ids, attention_mask, position_ids) int64 [batch, new tokens] -> the last position's
        logits float32 [batch, vocab], the KV cache kept inside between calls (prefill first, then one token a
        call). What `generate` loops over; benchmarks time it step by step (bench/decode_profile.py)."""
        raise NotImplementedError

    def generate(self, prompts: list[str], max_new_tokens: int, *, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 stop_ids: list[int] | None = None) -> Generation:
        """Continue each prompt by up to `max_new_tokens` tokens.

        Args:
            prompts: already-rendered strings (the caller applied the chat template); one str is one prompt.
            max_new_tokens: the most tokens a row gets.
            do_sample: sample instead of greedy; reproducible for a given `seed`.
            temperature / top_k / top_p: sampling filters, applied in that order.
            seed: seed of the numpy Generator that samples.
            stop_ids: tokens that end a row; default the model's EOS ids.

        Returns:
            A `Generation`.
        """
        prompts = check_request(prompts, max_new_tokens, temperature, top_k, top_p, stop_ids, seed)
        stops = list(stop_ids) if stop_ids is not None else default_stop_ids(
            self.generation_config, self.config, self.tokenizer)
        input_ids, mask = encode(self.tokenizer, prompts)
        limit = getattr(self.config, "max_position_embeddings", None)
        if isinstance(limit, int) and input_ids.shape[1] + max_new_tokens > limit:
            longest = int(mask.sum(axis=1).argmax())
            raise PromptTooLong(longest, int(mask[longest].sum()), max_new_tokens, limit)
        return decode(self.stepper(), input_ids, mask, max_new_tokens, stop_ids=stops,
                      pad_id=pad_id_of(self.tokenizer, stops), do_sample=do_sample,
                      temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[batch, seq, vocab] float32 logits of the whole sequence, no cache (for perplexity)."""
        raise NotImplementedError


class TorchGenerator(_Generator):
    """A PyTorch causal LM decoding through its own KV cache (transformers' DynamicCache)."""

    def __init__(self, model_or_folder, tokenizer=None, *, dtype=None, threads: int | None = None):
        """
        Args:
            model_or_folder: a HF folder (or any `deploykit.models` source) or a loaded `PreTrainedModel`.
            tokenizer: its tokenizer; None loads it from the folder.
            dtype: torch dtype to run in (default float32; bfloat16 is ~2x faster where the CPU has AVX512_BF16).
            threads: torch intra-op threads (process-wide); None leaves torch's setting.
        """
        import torch

        from deploykit.models import load_causal_lm, load_tokenizer

        if threads:
            torch.set_num_threads(threads)
        dtype = dtype or torch.float32
        if isinstance(model_or_folder, (str, Path)):
            model = load_causal_lm(str(model_or_folder), dtype=dtype)
            tokenizer = tokenizer or load_tokenizer(str(model_or_folder))
        else:
            model = model_or_folder
            if tokenizer is None:
                raise UserError("TorchGenerator: a loaded model needs its tokenizer")
        self.model = model.to(dtype).eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.generation_config = getattr(model, "generation_config", None)

    def stepper(self) -> Step:
        import torch

        cache = {"past": None}
        # a model that just trained on the GPU (finetune, distill, prune recovery) is still there: feed it there
        device = next(self.model.parameters()).device
        (keyword,) = cache_feed(self.model, None)  # read from the forward's signature once, not on every step

        @torch.inference_mode()
        def step(ids, mask, pos):
            feed = {k: torch.from_numpy(v).to(device) for k, v in
                    (("input_ids", ids), ("attention_mask", mask), ("position_ids", pos))}
            out = self.model(**feed, **{keyword: cache["past"]}, use_cache=True, logits_to_keep=1)
            cache["past"] = cache_of(out)
            return out.logits[:, -1].float().cpu().numpy()

        return step

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        device = next(self.model.parameters()).device
        feed = {"input_ids": np.asarray(input_ids, dtype=np.int64), "position_ids": position_ids(attention_mask),
                "attention_mask": np.asarray(attention_mask, dtype=np.int64)}
        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v).to(device) for k, v in feed.items()}, use_cache=False)
        return out.logits.float().cpu().numpy()


def _past_layout(session, config) -> tuple[list[str], list[str], tuple[int, int], np.dtype]:
    """Past inputs, present outputs (matching order), (kv_heads, head_dim) and dtype of an exported decoder."""
    past = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    if not past:
        raise UserError("OrtGenerator: the ONNX graph has no past_key_values inputs; export it with "
                        "deploykit's causal-LM export (a KV cache is needed to decode)")
    names = [i.name for i in past]
    presents = [n.replace("past_key_values.", "present.") for n in names]
    heads, dim = past[0].shape[1], past[0].shape[3]
    if not isinstance(heads, int) or not isinstance(dim, int):  # symbolic: fall back to the config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dtype = np.float16 if "float16" in past[0].type else np.float32
    return names, presents, (int(heads), int(dim)), dtype


class OrtGenerator(_Generator):
    """An exported decoder folder (model.onnx with past_key_values inputs) on ONNX Runtime."""

    def __init__(self, folder, *, threads: int | None = None, providers: list[str] | None = None,
                 spinning: bool = True, profile_prefix: str | Path | None = None):
        """
        Args:
            folder: what `export_causal_lm` (or Optimum) wrote: model.onnx, config.json, tokenizer.
            threads: intra-op threads; None lets ONNX Runtime use every core.
            providers: execution providers (default CPU).
            spinning: False stops idle threads spinning (when other runtimes share the cores).
            profile_prefix: where ONNX Runtime writes its per-node profile (`session.end_profiling()` names the
                JSON file); None: no profiling.
        """
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        from deploykit.evaluate import ort_session

        folder = Path(folder)
        onnx_path = folder / "model.onnx"
        if not onnx_path.is_file():
            raise UserError(f"{folder}: no model.onnx inside; export the model first (deploykit export)")
        self.folder = folder
        self.session = ort_session(onnx_path, threads=threads, providers=providers, spinning=spinning,
                                   profile_prefix=profile_prefix)
        self.config = AutoConfig.from_pretrained(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.generation_config = (GenerationConfig.from_pretrained(folder)
                                  if (folder / "generation_config.json").is_file() else None)
        self.past_names, self.present_names, (self.kv_heads, self.head_dim), self.kv_dtype = \
            _past_layout(self.session, self.config)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {n: np.zeros(shape, dtype=self.kv_dtype) for n in self.past_names}

    def _feed(self, ids, mask, pos, past) -> dict[str, np.ndarray]:
        feed = {"input_ids": ids, "attention_mask": mask, **past}
        if "position_ids" in self.inputs:
            feed["position_ids"] = pos
        return feed

    def stepper(self) -> Step:
        outputs = ["logits"] + self.present_names
        state = {"past": None}

        def step(ids, mask, pos):
            past = state["past"] if state["past"] is not None else self._empty_past(len(ids))
            logits, *presents = self.session.run(outputs, self._feed(ids, mask, pos, past))
            state["past"] = dict(zip(self.past_names, presents))
            return logits[:, -1].astype(np.float32)

        return step

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask, dtype=np.int64)
        feed = self._feed(ids, mask, position_ids(mask), self._empty_past(len(ids)))
        return self.session.run(["logits"], feed)[0].astype(np.float32)


def load_generator(folder, runtime: str = "auto", threads: int | None = None) -> TorchGenerator | OrtGenerator:
    """A generator for a model folder: `ort`, `torch`, or `auto` (ORT when model.onnx is present); a .gguf file
    runs on torch (transformers dequantises it)."""
    from deploykit.console import no_load_bars

    with no_load_bars():  # transformers' "Loading weights" bar, drawn on every `deploykit generate` and predict
        return _load(Path(folder), runtime, threads)


def _load(folder: Path, runtime: str, threads: int | None) -> TorchGenerator | OrtGenerator:
    if folder.suffix == ".gguf":
        if runtime not in ("auto", "torch", "pytorch"):
            raise UserError(f"{folder}: a GGUF file runs on runtime torch here (or in llama.cpp), not {runtime}")
        return TorchGenerator(str(folder), threads=threads)
    if runtime == "auto":
        runtime = "ort" if (folder / "model.onnx").is_file() else "torch"
    if runtime in ("ort", "onnxruntime"):
        return OrtGenerator(folder, threads=threads)
    if runtime in ("torch", "pytorch"):
        if not (folder / "config.json").is_file():
            raise UserError(f"{folder}: no config.json; not a Hugging Face causal-LM folder")
        return TorchGenerator(folder, threads=threads)
    raise UserError(f"runtime={runtime!r} is not one of auto, ort, torch")


def chat_prompts(tokenizer, prompts: list[str], system: str | None = None, model_name: str = "the model") -> list[str]:
    """User turns rendered with the tokenizer's chat template, ready for `generate`; a user turn or a system prompt
    ("" or None: none) that is blank or not valid Unicode is refused first (a rendered prompt is never blank)."""
    prompts = check_request(prompts, 1, 1.0, 0, 1.0, None)
    if system:
        check_texts([system], "system prompt")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{model_name}: its tokenizer has no chat template; pass --raw to feed prompts as they are")
    head = [{"role": "system", "content": system}] if system else []
    return [tokenizer.apply_chat_template(head + [{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]

"""llama.cpp (llama-cpp-python) as a third generator beside PyTorch and ONNX Runtime: what CPU users run
for a small causal LM, timed and scored by the same code as deploykit's own artifacts.

    from deploykit.llm.llama_cpp_gen import LlamaCppGenerator
    gen = LlamaCppGenerator("runs/chat/bench/llama.cpp/Q4_K_M.gguf", "runs/chat/prune", threads=2)
    out = gen.generate([prompt], max_new_tokens=32, stop_ids=[])   # a deploykit.llm.generate.Generation

What keeps it comparable with the other generators (deploykit/llm/bench.py):
- prompts are tokenized by the Hugging Face tokenizer of the same model and fed to llama.cpp as ids (the
  GGUF holds the same vocabulary, deploykit/llm/gguf_export.py), so every runtime decodes the same tokens;
- decoding is llama.cpp's own greedy sampler (temperature 0, no repetition penalty): argmax, as ours;
- the KV cache is cleared before every prompt: llama-cpp-python otherwise reuses the prefix two prompts share
  (a chat template's system turn), which would time a cache hit against the others' full prefill;
- `step_seconds[0]` is the prefill and the first token, each later entry one decode step (tokens that are
  not fed back, like the last one, are not evaluated, as in `deploykit.llm.generate.decode`).
The high-level API decodes one sequence at a time, so a batch of prompts runs one after another (the bench
times llama.cpp at batch 1 only). API: llama-cpp-python's `Llama(model_path, n_ctx, n_threads, ...)`,
`Llama.generate(tokens, temp=0.0, reset=True)` (https://llama-cpp-python.readthedocs.io/en/latest/api-reference/).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from deploykit.errors import UserError
from deploykit.llm.generate import Generation, default_stop_ids, encode, pad_id_of
from deploykit.llm.prompt_checks import check_request
from deploykit.model_errors import first_line

N_CTX = 2048  # tokens of context: the longest prompt plus its answer (the bench's prompts are < 300)


def llama_cpp_missing() -> str | None:
    """Why llama.cpp cannot run here (one line), or None when `llama_cpp` imports."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return ("llama-cpp-python is not installed (`pip install llama-cpp-python` builds llama.cpp from source "
                "with the machine's C++ compiler and cmake; minutes to tens of minutes)")
    return None


class LlamaCppGenerator:
    """A GGUF file decoded by llama.cpp, with the Hugging Face tokenizer of the model it was written from.

    Args:
        gguf_path: the .gguf file (deploykit.llm.gguf_export.write_gguf writes one).
        tokenizer_source: the model it was written from (a folder), the GGUF file itself (it carries the
            tokenizer, read by transformers), or a loaded tokenizer.
        threads: llama.cpp threads for prefill and decode (None: llama.cpp's default).
        n_ctx: context length llama.cpp allocates its KV cache for.

    Raises:
        UserError: llama-cpp-python missing, the file is not there, or llama.cpp cannot load it.
    """

    generation_config = None

    def __init__(self, gguf_path: str | Path, tokenizer_source, *, threads: int | None = None, n_ctx: int = N_CTX):
        why = llama_cpp_missing()
        if why:
            raise UserError(f"llama.cpp: {why}")
        path = Path(gguf_path)
        if not path.is_file():
            raise UserError(f"llama.cpp: {path} is not a file; write one with `deploykit export --format gguf`")
        from llama_cpp import Llama

        if isinstance(tokenizer_source, (str, Path)):
            from deploykit.models import load_config, load_tokenizer

            self.tokenizer = load_tokenizer(str(tokenizer_source))
            self.config = load_config(str(tokenizer_source))  # its EOS ids are the default stop ids
        else:
            self.tokenizer, self.config = tokenizer_source, None
        self.path, self.n_ctx = path, n_ctx
        try:
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                             verbose=False)
        except (ValueError, RuntimeError) as err:  # llama-cpp-python: "Failed to load model from file: ..."
            raise UserError(f"llama.cpp cannot load {path}: {first_line(err)}") from None

    def generate(self, prompts: list[str], max_new_tokens: int, *, do_sample: bool = False,
                 stop_ids: list[int] | None = None, **_unused) -> Generation:
        """Greedy continuation of each prompt by up to `max_new_tokens` tokens, one prompt after another.

        Args:
            prompts: already-rendered strings (chat template applied), as for the other generators.
            max_new_tokens: the most tokens a row gets.
            do_sample: must be False (the bench and exact match decode greedily).
            stop_ids: tokens that end a row; default the model's EOS ids; [] decodes exactly max_new_tokens.

        Returns:
            A `Generation`; `step_seconds[i]` sums step i over the prompts (one prompt: its own steps).

        Raises:
            UserError: sampling asked for, or a prompt longer than the context.
        """
        if do_sample:
            raise UserError("llama.cpp generator: greedy decoding only (do_sample=False)")
        prompts = check_request(prompts, max_new_tokens, 1.0, 0, 1.0, stop_ids)  # as the other generators check
        stops = set(stop_ids if stop_ids is not None else default_stop_ids(None, self.config, self.tokenizer))
        pad_id = pad_id_of(self.tokenizer, sorted(stops))
        input_ids, mask = encode(self.tokenizer, prompts)
        tokens = np.full((len(prompts), max_new_tokens), pad_id, dtype=np.int64)
        lengths = np.zeros(len(prompts), dtype=np.int64)
        seconds: list[float] = []
        for row, (ids, attended) in enumerate(zip(input_ids, mask)):
            prompt = [int(i) for i in ids[attended == 1]]  # left padding off: llama.cpp sees the prompt alone
            if len(prompt) + max_new_tokens > self.n_ctx:
                raise UserError(f"llama.cpp: a prompt of {len(prompt)} tokens + {max_new_tokens} new ones exceeds "
                                f"n_ctx {self.n_ctx}")
            for step, took in enumerate(self._decode(prompt, max_new_tokens, stops, tokens[row])):
                if step == len(seconds):
                    seconds.append(0.0)
                seconds[step] += took
                lengths[row] = step + 1
        return Generation(tokens[:, :len(seconds)], lengths, seconds)

    def _decode(self, prompt: list[int], max_new_tokens: int, stops: set[int], out: np.ndarray):
        """Yield the seconds of each step, writing the tokens into `out`."""
        self.llm.reset()  # no prefix reuse from the previous prompt (see the module docstring)
        start = time.perf_counter()
        for step, token in enumerate(self.llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                                       repeat_penalty=1.0, reset=True)):
            now = time.perf_counter()
            out[step] = int(token)
            yield now - start
            if int(token) in stops or step + 1 == max_new_tokens:
                return
            start = time.perf_counter()

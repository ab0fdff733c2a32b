"""A Hugging Face Llama-type causal LM folder to one GGUF file, in the layout llama.cpp reads.

    from deploykit.llm.gguf_export import write_gguf
    report = write_gguf("runs/chat/finetune", "runs/chat/export/model.gguf", "q8_0")

Written with the `gguf` package (llama.cpp's own Python writer), following llama.cpp's converter
(convert_hf_to_gguf.py) for Llama: tensor names from `gguf.TensorNameMap`; the rows of Q and K reordered
per head from HF's rotate-half layout to the interleaved pairs llama.cpp's RoPE expects (`permute_qk`;
transformers' GGUF reader undoes it); no `output.weight` when lm_head is tied to the embeddings (SmolLM2),
which is how readers tell the two apart; 1-D tensors (norms) always F32. Types: f32, f16, q8_0 (the
`gguf` package's quantizer, bit-exact with ggml's), and llama.cpp's K-quants through its `llama-quantize`
program (from an f16 file) when that is on PATH. The tokenizer goes in as llama.cpp's "gpt2" byte-level BPE
(tokens, token types, merges, special ids, add_bos/add_eos measured on the HF tokenizer) with its chat
template. Anything the writer cannot express is refused in one line before a byte is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from deploykit.errors import UserError

# model_type -> GGUF architecture the writer maps (one row per architecture; Mistral-style sliding windows,
# Qwen2's Q/K/V biases and Gemma's norms would each need more than a name)
ARCHITECTURES = {"llama": "llama"}
FLOAT_TYPES = ("f32", "f16", "q8_0")
# llama.cpp's quantizer names, written from an f16 file by `llama-quantize`
K_QUANTS = {"q2_k": "Q2_K", "q3_k_m": "Q3_K_M", "q4_k_s": "Q4_K_S", "q4_k_m": "Q4_K_M", "q5_k_s": "Q5_K_S",
            "q5_k_m": "Q5_K_M", "q6_k": "Q6_K"}
QUANTIZE_PROGRAM = "llama-quantize"
# HF pre-tokenizer -> llama.cpp's `tokenizer.ggml.pre` (how text is split before the merges)
GPT2_PRE = {"type": "ByteLevel", "use_regex": True}
DIGITS_PRE = {"type": "Digits", "individual_digits": True}


def check_exportable(config, gguf_type: str, source: str) -> None:
    """UserError in one line when this model or type cannot be written (before any work)."""
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise UserError(f"export.format gguf: {source} is a {model_type!r} model; the GGUF writer maps "
                        f"{', '.join(ARCHITECTURES)} (Llama-type causal LMs, e.g. SmolLM2); use export.format onnx")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            raise UserError(f"export.format gguf: {source} has {flag}=true, which the Llama GGUF writer does not "
                            "carry; use export.format onnx")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") not in ("default", "linear"):
        raise UserError(f"export.format gguf: {source} uses rope_type {rope['rope_type']!r}; the writer carries "
                        "default and linear RoPE only; use export.format onnx")
    if gguf_type in K_QUANTS and k_quantizer() is None:
        raise UserError(f"export.gguf_type {gguf_type} is a llama.cpp K-quant, made by its `{QUANTIZE_PROGRAM}` "
                        "program (not on PATH) or llama-cpp-python (not installed); install either or use gguf_type "
                        f"{' / '.join(FLOAT_TYPES)}")


def k_quantizer() -> str | None:
    """What makes K-quants here: `llama-quantize` on PATH, else llama-cpp-python's binding of the same
    `llama_model_quantize` ("llama_cpp"), else None."""
    from deploykit.llm.llama_cpp_gen import llama_cpp_missing

    if shutil.which(QUANTIZE_PROGRAM):
        return QUANTIZE_PROGRAM
    return None if llama_cpp_missing() else "llama_cpp"


def permute_qk(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF's Q/K rows (per head: first halves, then second halves of the rotary pairs) to llama.cpp's
    (per head: pairs side by side)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def tensor_type(name: str, weight: np.ndarray, gguf_type: str):
    """The GGML type one tensor is stored as: norms F32; rows Q8_0 cannot block (not a multiple of 32) F16."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if weight.ndim == 1 or gguf_type == "f32":
        return GGMLQuantizationType.F32
    if gguf_type == "q8_0" and weight.shape[-1] % GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0][0] == 0:
        return GGMLQuantizationType.Q8_0
    return GGMLQuantizationType.F16


def stored(weight: np.ndarray, qtype) -> np.ndarray:
    """What the file holds for `weight` in `qtype`, read back as float32 (the reference the check runs)."""
    from gguf import quants

    return quants.dequantize(quants.quantize(weight, qtype), qtype).astype(np.float32).reshape(weight.shape)


def gguf_tensors(model) -> list[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array) for every weight, Q and K permuted, a tied lm_head left out."""
    from gguf import MODEL_ARCH, get_tensor_name_map

    config = model.config
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out = []
    for key, value in model.state_dict().items():
        if tied and key == "lm_head.weight":
            continue
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"export.format gguf: weight {key} has no llama.cpp name; this model is not plain Llama")
        array = value.detach().float().cpu().numpy()
        if key.endswith("self_attn.q_proj.weight"):
            array = permute_qk(array, config.num_attention_heads)
        elif key.endswith("self_attn.k_proj.weight"):
            array = permute_qk(array, config.num_key_value_heads)
        out.append((name, np.ascontiguousarray(array)))
    return out


def _pre_tokenizer(tokenizer, source: str) -> str:
    """llama.cpp's name for how the tokenizer splits text: GPT-2's regex, or SmolLM's digits first."""
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]

    def like(step: dict, want: dict) -> bool:
        return all(step.get(k) == v for k, v in want.items())

    if len(steps) == 1 and like(steps[0], GPT2_PRE):
        return "gpt-2"
    if len(steps) == 2 and like(steps[0], DIGITS_PRE) and like(steps[1], GPT2_PRE):
        return "smollm"
    raise UserError(f"export.format gguf: the tokenizer of {source} splits text with {pre.get('type')!r} steps "
                    "the writer does not name for llama.cpp (it writes byte-level BPE tokenizers split like "
                    "GPT-2 or SmolLM); use export.format onnx")


def _vocabulary(tokenizer, vocab_size: int, source: str) -> tuple[list[str], list[int], list[str]]:
    """Tokens by id (unused rows of a padded embedding named [PADi]), their llama.cpp types, and merges."""
    from gguf import TokenType

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    if (state.get("model") or {}).get("type") != "BPE" or not state["model"].get("merges"):
        raise UserError(f"export.format gguf: the tokenizer of {source} is not a BPE tokenizer with merges; "
                        "the writer carries byte-level BPE (SmolLM2, Llama 3); use export.format onnx")
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise UserError(f"export.format gguf: the tokenizer of {source} holds ids up to {max(vocab.values())} "
                        f"but the model's vocab_size is {vocab_size}; give the model its own tokenizer")
    by_id = {i: t for t, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        types.append(TokenType.NORMAL if i not in added else
                     TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    return tokens, [int(t) for t in types], merges


def _add_tokenizer(writer, tokenizer, vocab_size: int, source: str) -> None:
    tokens, types, merges = _vocabulary(tokenizer, vocab_size, source)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer, source))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for what in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{what}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{what}_token_id")(int(token_id))
    # what the HF tokenizer does on plain text, measured rather than read from flags that vary by class
    ids = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(ids) and tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id)
    writer.add_add_space_prefix(False)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)


def _add_architecture(writer, config, file_type: int, name: str) -> None:
    from gguf import RopeScalingType

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    # a pruned model keeps its width with fewer heads: heads x head_dim != hidden, so say head_dim outright
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)


def write_gguf(model, tokenizer, path: str | Path, gguf_type: str = "f16", name: str = "model") -> dict:
    """Write `model` (a loaded float LlamaForCausalLM) and its tokenizer to the GGUF file `path`.

    Args:
        model: the causal LM (float32 weights; `check_exportable` passed on its config).
        tokenizer: its fast tokenizer (byte-level BPE).
        path: the .gguf file to write (its folder must exist).
        gguf_type: f32, f16, q8_0, or a K-quant of K_QUANTS (needs `llama-quantize` on PATH or llama-cpp-python).
        name: general.name in the file.

    Returns:
        {"gguf_type", "tensors", "tensor_types": {type: count}, "tied_embeddings", "size_bytes"}.
    """
    from gguf import GGML_QUANT_VERSION, GGUFWriter, LlamaFileType, quants

    path = Path(path)
    check_exportable(model.config, gguf_type, name)
    base = "f16" if gguf_type in K_QUANTS else gguf_type
    file_type = {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
                 "q8_0": LlamaFileType.MOSTLY_Q8_0}[base]
    target = path.with_name(path.stem + ".f16.gguf") if gguf_type in K_QUANTS else path
    writer = GGUFWriter(str(target), ARCHITECTURES[model.config.model_type])
    _add_architecture(writer, model.config, int(file_type), name)
    _add_tokenizer(writer, tokenizer, model.config.vocab_size, name)
    counts: dict[str, int] = {}
    tensors = gguf_tensors(model)
    for tensor_name, array in tensors:
        qtype = tensor_type(tensor_name, array, base)
        writer.add_tensor(tensor_name, quants.quantize(array, qtype), raw_dtype=qtype)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if gguf_type in K_QUANTS:
        _llama_quantize(target, path, K_QUANTS[gguf_type])
        counts = {"llama-quantize": len(tensors)}
    return {"gguf_type": gguf_type, "tensors": len(tensors), "tensor_types": counts,
            "tied_embeddings": all(n != "output.weight" for n, _ in tensors), "size_bytes": path.stat().st_size}


def _llama_quantize(src: Path, dst: Path, qtype: str) -> None:
    """llama.cpp's quantizer, f16 file in, K-quant file out; the f16 file is removed after."""
    if k_quantizer() == "llama_cpp":
        rc = _quantize_in_process(src, dst, qtype)
        src.unlink(missing_ok=True)
        if rc != 0 or not dst.is_file():
            dst.unlink(missing_ok=True)  # no half-written file left beside the others
            raise UserError(f"export: llama_cpp.llama_model_quantize {qtype} failed (return code {rc})")
        return
    done = subprocess.run([shutil.which(QUANTIZE_PROGRAM), str(src), str(dst), qtype], capture_output=True, text=True)
    src.unlink(missing_ok=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"export: {QUANTIZE_PROGRAM} {qtype} failed ({tail[0][:200]})")


def _quantize_in_process(src: Path, dst: Path, qtype: str) -> int:
    """llama.cpp's `llama_model_quantize` through llama-cpp-python's ctypes binding (what `llama-quantize` calls);
    0 on success."""
    import ctypes

    import llama_cpp

    from deploykit.hardware import cores

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    params.nthread = cores()
    return int(llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)))

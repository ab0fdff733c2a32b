"""Decoder-only causal LMs (Llama-type) through the chain: instruction SFT, distillation, pruning by FFN
neurons and whole KV groups, ONNX export with a KV cache, INT8, and a generation benchmark.

The stage modules in `deploykit/stages/` call into this package when the recipe's `data.task` is
`generation`; the pieces here are plain functions over models, folders and token batches.
"""

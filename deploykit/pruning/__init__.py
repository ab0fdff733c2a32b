"""Structured pruning into smaller plain Hugging Face models (the engine behind `deploykit prune`).

    deploykit prune --from runs/sst2/finetune --data sst2 --set prune.ffn=0.5 --set prune.width=0.3333

`arch` knows where each architecture keeps its heads, FFN and residual stream; `units` removes
them with Torch-Pruning's dependency graph; `vocab` shrinks the vocabulary and tokenizer;
`reload` proves the saved folder loads back with plain `from_pretrained`.
"""

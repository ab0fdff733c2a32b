"""deploykit: take a pretrained Hugging Face transformer to a small, fast, accurate deployable model.

Stages (each `deploykit <stage>` and a section of a recipe): finetune, distill, prune, quantize,
export, bench. `deploykit run recipes/sst2-minilm.yaml` runs them in order.
"""

__version__ = "0.1.0"

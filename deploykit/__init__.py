"""deploykit: take a pretrained Hugging Face transformer to a small, fast, accurate deployable model.

Stages (each `deploykit <stage>` and a section of a recipe): finetune, distill, prune, quantize,
export, bench. `deploykit run recipes/sst2-minilm.yaml` runs them in order.

Use the final model: `clf = deploykit.load("runs/sst2-minilm/quantize"); clf(["a fine film"])`
(deploykit/predictor.py).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `deploykit.load` imports the predictor (numpy, the runtimes) only when used: `import deploykit` stays cheap
    if name == "load":
        from deploykit.predictor import load

        return load
    raise AttributeError(f"module 'deploykit' has no attribute {name!r}")

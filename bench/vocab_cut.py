"""What `prune.vocab` does to text no training row holds: one classifier's accuracy with its whole vocabulary
and with the vocabulary cut to the training texts' word pieces (bench/README.md, run 55).

    DEPLOYKIT_DATA_DIR=../shared/data python bench/vocab_cut.py runs/general-instruct/distill \
        --recipe runs/general-instruct.yaml --also 5000 10000

The cut's own check proves the logits unchanged on training texts, where nothing can change; a validation or test
word no training text holds splits into other pieces (single characters are always kept, so never [UNK]). Rows
`--also K` keep the K lowest ids as well (in BERT's vocabulary, after the single characters, the most frequent
whole words). The model is not trained again: each row is the same weights with another embedding table.
"""

from __future__ import annotations

import argparse
import copy
import tempfile


def main() -> None:
    from deploykit.artifact import load_artifact
    from deploykit.config import load_recipe
    from deploykit.data import fit_max_length, load_task
    from deploykit.evaluate import metrics, predict, torch_predictor
    from deploykit.models import load_classifier, load_tokenizer
    from deploykit.pruning import vocab

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a text classifier folder written by deploykit (finetune, distill or prune)")
    ap.add_argument("--recipe", required=True, help="the recipe whose data section the model was trained on")
    ap.add_argument("--also", type=int, nargs="*", default=[], help="rows that also keep the K lowest ids")
    args = ap.parse_args()

    data = load_recipe(args.recipe).data
    task = load_task(data)
    model = load_classifier(args.model, labels=task.labels, new_head=False).eval()
    tokenizer = load_tokenizer(args.model)
    # the length the model was trained with, as every stage encodes it
    length = fit_max_length(data.max_length, model.config, tokenizer, task,
                            recorded=load_artifact(args.model).manifest.get("max_length"))
    splits = [("validation", task.validation), ("test", task.test)]
    splits = [(name, rows) for name, rows in splits if rows is not None]

    def row(what: str, m, tok) -> str:
        scores = [metrics(predict(torch_predictor(m), rows, tok, length), rows.labels)["accuracy"] for _, rows in splits]
        return f"| {what} | {len(tok):,} | " + " | ".join(f"{s:.2f}" for s in scores) + " |"

    lines = [f"| vocabulary | word pieces | {' | '.join(f'{n} acc ({len(r):,})' for n, r in splits)} |",
             "| --- | --- |" + " --- |" * len(splits), row("whole", model, tokenizer)]
    changed = [sum(any(i not in kept for i in ids)  # the pieces the model reads: cut at its length
                   for ids in tokenizer(rows.texts, truncation=True, max_length=length)["input_ids"])
               for kept in [set(vocab._keep_ids(tokenizer, task.train.texts, task.train.pairs)[1])]
               for _, rows in splits]
    real = vocab._keep_ids
    for extra in [0, *args.also]:
        def keep_ids(tok, texts, pairs, extra=extra):
            spec, keep = real(tok, texts, pairs)
            return spec, sorted(set(keep) | set(range(min(extra, len(spec["model"]["vocab"])))))

        vocab._keep_ids = keep_ids  # the stage's own cut, with the extra ids added
        cut = copy.deepcopy(model)
        with tempfile.TemporaryDirectory() as scratch:
            new_tokenizer, _ = vocab.prune_vocab(cut, tokenizer, task.train.texts, task.train.pairs, scratch)
            lines.append(row("training pieces" + (f" + the {extra:,} lowest ids" if extra else ""), cut.eval(),
                             new_tokenizer))
    vocab._keep_ids = real
    print("\n".join(lines))
    print("\nrows holding a word piece the cut removes: " +
          ", ".join(f"{name} {n:,} of {len(rows):,}" for (name, rows), n in zip(splits, changed)))


if __name__ == "__main__":
    main()

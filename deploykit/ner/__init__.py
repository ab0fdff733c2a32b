"""Token classification (named-entity recognition): reading tagged sentences, aligning word tags with word
pieces in overlapping windows, and the entity-level metric.

    from deploykit.ner.data import load_tags
    from deploykit.ner.align import encode_words, words_from_windows
    from deploykit.ner.metric import entity_scores
    from deploykit.ner.predict import EntityPredictor      # what deploykit.load gives: the pipeline's entity groups
    from deploykit.ner.quantize import quantize_job        # the kind's dynamic-INT8 quantize job
    from deploykit.ner.distill import distill_job          # per-token KD
    from deploykit.ner.prune import prune_job              # FFN, width, depth with per-token recovery

These are the pieces the `token_classification` task kind (deploykit/kinds/token_classification.py) is built from.
"""

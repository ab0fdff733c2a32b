"""Token classification (named-entity recognition): reading tagged sentences, aligning word tags with word
pieces in overlapping windows, and the entity-level metric.

    from deploykit.ner.data import load_tags
    from deploykit.ner.align import encode_words, words_from_windows
    from deploykit.ner.metric import entity_scores
    from deploykit.ner.predict import EntityPredictor      # what deploykit.load gives: the pipeline's entity groups
    from deploykit.ner.quantize import run                 # the kind's dynamic-INT8 quantize runner

These are the pieces the `token_classification` task kind (deploykit/kinds/token_classification.py) is built from.
"""

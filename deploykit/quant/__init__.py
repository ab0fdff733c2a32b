"""INT8 quantization engines behind `deploykit quantize` and the bench baseline.

    from deploykit.quant.int8 import Int8Settings, preprocess, quantize
    from deploykit.quant.gate import gate
    from deploykit.quant.baseline import standard_baseline

`int8` holds ONNX Runtime's presets, pre-processing, dynamic/static quantization and per-node sensitivity;
`gate` the accuracy loop that keeps the most sensitive nodes float (shared by the encoder and causal-LM
quantize stages); `baseline` the standard by-hand recipe that `deploykit bench` compares against. Stages
call in here; nothing here imports a stage.
"""

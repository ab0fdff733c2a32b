"""The ONNX engine behind `deploykit export` and `deploykit quantize`: export, parity, rewrites, graph helpers.

    from deploykit.onnx.export import export_onnx
    report = export_onnx("runs/sst2/finetune", None, out_dir)   # parity-checked, fused model.onnx

`export` runs the TorchScript export and ONNX Runtime's fusions; `parity` checks each step against
PyTorch; `trim` and `packing` are the export-time rewrites of an encoder (last layer at position 0, no
work on padding); `shapes` makes run-time Reshape/Expand targets constant; `ops` loads graphs with clear
errors and counts their operators. Stages call in here; nothing here imports a stage. Inside this package
`import onnx` is the PyPI onnx package (absolute imports).
"""

"""deploykit/runtimes.py's RUNTIMES: one table whose columns every reader of runtime facts uses."""

from deploykit.runtimes import AUTO, LABELS, READS, RUNTIMES, TARGETS


def test_the_columns_are_views_of_the_one_table():
    from deploykit.measure.plots import MARKERS
    from deploykit.serve.app import PLATFORMS

    for table in (READS, TARGETS, LABELS, MARKERS, PLATFORMS):
        assert list(table) == list(RUNTIMES)
    assert READS["openvino"] == ("onnx", "openvino") and PLATFORMS["ort"] == "onnxruntime_onnx"
    assert len(set(MARKERS.values())) == len(MARKERS)  # each runtime tells itself apart in a plot


def test_auto_measures_what_bench_measured_before_the_table():
    assert AUTO == {"pytorch": ["torch", "torch-bf16"], "onnx": ["ort", "ort-cuda"], "openvino": ["openvino"],
                    "tensorrt": ["tensorrt"]}
    # every runtime reads its own format first, and runs somewhere
    assert all(rt.reads and rt.targets and set(rt.auto_for) <= set(rt.reads) for rt in RUNTIMES.values())

"""Replace run-time shape arithmetic in an ONNX graph with constants, where the shapes allow it.

    from deploykit.onnx.shapes import static_shapes
    model = onnx.load("model.onnx")
    static_shapes(model)   # in place; {'Reshape': 242, 'Expand': 61, 'Gather': 180, 'nodes_before': ..., ...}

The TorchScript export of a Hugging Face decoder computes every Reshape and Expand target from `Shape`
nodes at run time (`view(*input_shape, -1, head_dim)`, `repeat_kv`, `x.shape[-1] // 2`): SmolLM2-135M's
graph had 6,896 nodes for 211 MatMuls, and at batch 1 ONNX Runtime spent a quarter of each decode step
running those small nodes. With the symbolic shapes of every tensor (ONNX Runtime's symbolic shape
inference) each target can be written once:

- Reshape: a constant target where each output dim is a number, `0` (copy the input's dim at that
  position, when inference proves the two equal) or a single `-1`;
- Expand: broadcast factors (1 where input and output agree, n where a 1 grows to a fixed n);
- Gather(Shape(x), k) on a dim of x that is a fixed number: that number.

Then nodes that no longer feed an output are dropped, and ONNX Runtime folds what became constant. The
values computed are the same for every batch, sequence and past length the inference covers; callers
still check the graph against its source (the export's parity check).
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

Dim = int | str | None


def symbolic_shapes(model) -> dict[str, list[Dim]]:
    """Tensor name -> dims (ints, or symbolic names such as 'past_sequence_length + sequence_length')."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    logging.getLogger("onnxruntime.tools.symbolic_shape_infer").setLevel(logging.ERROR)
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = {}
    graph = inferred.graph
    for value in [*graph.value_info, *graph.input, *graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                  for d in tensor.shape.dim]
    return shapes


def reshape_target(data: list[Dim], out: list[Dim]) -> list[int] | None:
    """A constant Reshape target giving `out` from `data`, or None when two dims would need -1."""
    target = []
    for j, dim in enumerate(out):
        if isinstance(dim, int) and dim > 0:
            target.append(dim)
        elif dim is not None and j < len(data) and data[j] == dim:
            target.append(0)  # ONNX Reshape (allowzero=0): copy the input's dim
        else:
            target.append(-1)
    return target if target.count(-1) <= 1 else None


def expand_target(data: list[Dim], out: list[Dim]) -> list[int] | None:
    """Constant Expand factors broadcasting `data` to `out`, or None when a dim cannot be proven."""
    if len(out) < len(data) or None in data or None in out:
        return None
    data = [1] * (len(out) - len(data)) + list(data)
    target = []
    for have, want in zip(data, out):
        if have == want:
            target.append(1)
        elif have == 1 and isinstance(want, int):
            target.append(want)
        else:
            return None
    return target


def _constant_value(name: str, initializers: dict, producers: dict) -> np.ndarray | None:
    from onnx import numpy_helper

    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    node = producers.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def static_shapes(model) -> dict[str, int]:
    """Rewrite `model` (an onnx.ModelProto) in place; return how many targets became constants and the
    node counts before and after."""
    from onnx import numpy_helper

    shapes = symbolic_shapes(model)
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    counts: Counter = Counter()
    added = []

    def constant(node, index: int, values, suffix: str) -> None:
        name = f"{node.output[0]}/{suffix}"
        added.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        node.input[index] = name

    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type in ("Reshape", "Expand") and node.input[1] not in initializers:
            data, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if data is None or out is None:
                continue
            if node.op_type == "Reshape":
                if any(a.name == "allowzero" and a.i for a in node.attribute):
                    continue
                target = reshape_target(data, out)
            else:
                target = expand_target(data, out)
            if target is not None:
                constant(node, 1, target, "static_shape")
                counts[node.op_type] += 1
        elif node.op_type == "Gather":
            source = producers.get(node.input[0])
            if source is None or source.op_type != "Shape" or source.attribute:
                continue
            dims, index = shapes.get(source.input[0]), _constant_value(node.input[1], initializers, producers)
            if dims is None or index is None or index.size != 1:
                continue
            dim = dims[int(index.reshape(-1)[0])]
            if isinstance(dim, int) and dim > 0:
                name = f"{node.output[0]}/static"
                added.append(numpy_helper.from_array(np.array(dim, dtype=np.int64).reshape(index.shape), name))
                renamed[node.output[0]] = name
                counts["Gather"] += 1
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    graph.initializer.extend(added)
    before = len(graph.node)
    _drop_unused(graph)
    return {**counts, "nodes_before": before, "nodes_after": len(graph.node)}


def _drop_unused(graph) -> None:
    """Remove nodes and initializers that no graph output depends on (nodes are in topological order)."""
    needed = {o.name for o in graph.output} | _subgraph_inputs(graph)
    kept = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    needed |= {i.name for i in graph.input}  # older graphs list initializers as inputs: keep both in step
    used = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def _subgraph_inputs(graph) -> set[str]:
    """Every name read inside If/Loop/Scan bodies: outer tensors they capture must stay."""
    from onnx import AttributeProto

    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            bodies = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for body in bodies:
                names.update(i for n in body.node for i in n.input)
                names |= _subgraph_inputs(body)
    return names


def try_static_shapes(model, log) -> dict:
    """`static_shapes` as an optimization only: when ONNX Runtime's symbolic shape inference cannot finish,
    one line through `log` and the graph stays as it is. Returns {"applied": bool, **counts}."""
    try:
        counts = static_shapes(model)
    except Exception as err:  # noqa: BLE001 - ORT's shape inference raises bare Exceptions
        log(f"export: shape arithmetic left in the graph (symbolic shape inference failed: {str(err)[:120]})")
        return {"applied": False}
    return {"applied": True, **counts}


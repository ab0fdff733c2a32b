"""The accuracy gate's loop (`deploykit.quant.gate.gate`) with stand-in callables: float nodes doubled 1, 2,
4, ... in sensitivity order until the drop holds, the ranking computed only after a failed first try, and
one GateError line with every try's figures."""

from pathlib import Path

import pytest

from deploykit.errors import GateError
from deploykit.quant.gate import gate

RANKING = [(f"n{i}", 10.0 - i) for i in range(6)]  # n0 the most sensitive


def run_gate(accuracy_by_float_nodes: dict[int, float], max_drop: float, max_float_nodes: int,
             min_float_nodes: int = 0):
    """The gate over fake models: a quantized model's accuracy depends on how many nodes it keeps float."""
    ranked = []

    def quantize(float_nodes: list[str], attempt: int) -> Path:
        return Path(f"int8-{attempt}-{len(float_nodes)}")

    def evaluate(path: Path) -> dict:
        if path.name == "float":
            return {"accuracy": 90.0}
        return {"accuracy": accuracy_by_float_nodes[int(path.name.split("-")[2])]}

    def rank() -> list[tuple[str, float]]:
        ranked.append(True)
        return RANKING

    return gate(max_drop, max_float_nodes, evaluate, quantize, rank, Path("float"),
                min_float_nodes=min_float_nodes), ranked


def test_a_first_try_within_budget_needs_no_ranking():
    result, ranked = run_gate({0: 89.8}, max_drop=0.5, max_float_nodes=8)
    assert result.float_nodes == [] and result.metrics == {"accuracy": 89.8} and not ranked
    assert result.tries == [{"float_nodes": [], "accuracy": 89.8, "drop": 0.2}]


def test_float_nodes_double_in_sensitivity_order_until_the_drop_holds():
    result, ranked = run_gate({0: 88.0, 1: 88.5, 2: 89.0, 4: 89.6}, max_drop=0.5, max_float_nodes=8)
    assert [len(t["float_nodes"]) for t in result.tries] == [0, 1, 2, 4] and ranked == [True]
    assert result.float_nodes == ["n0", "n1", "n2", "n3"] and result.model == Path("int8-3-4")
    assert result.reference == {"accuracy": 90.0} and result.ranking == RANKING


def test_the_last_try_is_capped_at_max_float_nodes_then_fails_with_the_figures():
    with pytest.raises(GateError, match=r"0 float: 88.00, 1 float: 88.00, 2 float: 88.00, 3 float: 88.00\) vs "
                                        r"float 90.00 .* max_drop 0.5 with up to 3 nodes float") as err:
        run_gate(dict.fromkeys(range(7), 88.0), max_drop=0.5, max_float_nodes=3)
    assert "\n" not in str(err.value)


def test_min_float_nodes_starts_with_the_most_sensitive_float_even_when_all_int8_would_pass():
    result, ranked = run_gate({0: 89.9, 1: 89.7, 2: 89.95}, max_drop=0.5, max_float_nodes=8, min_float_nodes=1)
    assert [len(t["float_nodes"]) for t in result.tries] == [1] and ranked == [True]  # ranked once, before the try
    assert result.float_nodes == ["n0"] and result.model == Path("int8-0-1")


def test_min_float_nodes_keeps_doubling_when_its_first_try_fails():
    result, ranked = run_gate({1: 89.0, 2: 89.2, 4: 89.6}, max_drop=0.5, max_float_nodes=8, min_float_nodes=1)
    assert [len(t["float_nodes"]) for t in result.tries] == [1, 2, 4] and ranked == [True]

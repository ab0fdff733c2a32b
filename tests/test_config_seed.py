"""data.seed (deploykit/config/data.py) is bounded as numpy takes it, like the stages' training seeds."""

from __future__ import annotations

import pytest

from deploykit.config import build_recipe
from deploykit.errors import UserError


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_data_seed_numpy_cannot_take_is_refused_at_load(seed):
    # validate said ok, then prune stopped with numpy's "Seed must be between 0 and 2**32 - 1", exit 1
    with pytest.raises(UserError, match=rf"--set data.seed={seed}: data.seed: Input should be"):
        build_recipe({"data": {"name": "x"}}, [f"data.seed={seed}"])


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_the_ends_of_numpys_range_are_kept(seed):
    assert build_recipe({"data": {"name": "x"}}, [f"data.seed={seed}"]).data.seed == seed

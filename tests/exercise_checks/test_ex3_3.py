"""Exercise 3.3: pick_cuda_graph, the smallest captured graph that holds a batch."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
captured = st.lists(st.integers(1, 600), min_size=1, max_size=20, unique=True).map(sorted)


@SETTINGS
@given(captured, st.data())
def test_smallest_graph_that_fits(impl, sizes, data):
    """(smallest captured size >= batch, padding = size - batch)"""
    batch = data.draw(st.integers(1, sizes[-1]))
    got = impl.pick_cuda_graph(batch, list(sizes))
    size = min(s for s in sizes if s >= batch)
    assert tuple(got) == (size, size - batch), (
        f"pick_cuda_graph({batch}, {sizes}) returned {got}, expected ({size}, {size - batch}): the smallest "
        "captured size that holds the batch, and the padded slots")


@SETTINGS
@given(captured, st.integers(1, 100))
def test_too_large_raises(impl, sizes, extra):
    """a batch larger than every captured graph raises ValueError"""
    batch = sizes[-1] + extra
    with pytest.raises(ValueError):
        impl.pick_cuda_graph(batch, list(sizes))
        raise AssertionError(f"pick_cuda_graph({batch}, {sizes}) returned instead of raising ValueError")


def test_vllm_style_sizes(impl):
    """the usual capture list 1, 2, 4, 8, 16, 24, ..., 512"""
    sizes = [1, 2, 4] + list(range(8, 513, 8))
    for batch in range(1, 513):
        size = next(s for s in sizes if s >= batch)
        got = impl.pick_cuda_graph(batch, sizes)
        assert tuple(got) == (size, size - batch), (
            f"pick_cuda_graph({batch}, [1, 2, 4, 8, ..., 512]) returned {got}, expected {(size, size - batch)}")

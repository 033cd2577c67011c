"""The adapter's shared arithmetic: K conditioning, batch mapping, layer order, the low-rank map."""

from __future__ import annotations

import logging

import pytest
import torch

from bokehdepth_core.stage1 import BokehAdapter, arithmetic
from bokehdepth_core.testing import tiny_transformer


def test_k_condition_clamps_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        x = arithmetic.k_condition([0.5, 15.0, 45.0])
    assert x.shape == (3, 1) and torch.allclose(x[:, 0], torch.tensor([1 / 30, 0.5, 1.0]))
    assert "[0.5, 45.0]" in caplog.text and "trained range" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        arithmetic.k_condition([1.0, 30.0])
    assert not caplog.text
    with pytest.raises(ValueError, match="bokehdepth_k must be finite numbers > 0"):
        arithmetic.k_condition([float("nan")], "bokehdepth_k")


def test_for_batch_tiles_whole_copies():
    v = torch.arange(6.0).reshape(3, 2)
    assert arithmetic.for_batch(v, 3) is v
    assert arithmetic.for_batch(v, 7)[:, 0].tolist() == [0, 2, 4, 0, 2, 4, 0]  # K[j mod N]
    assert arithmetic.for_batch(v[:1], 4).tolist() == [[0, 1]] * 4


def test_layer_slots_double_then_single():
    slots = arithmetic.layer_slots([20, 0, 18, 19, 56], n_double=19)
    assert [(s.index, s.stream, s.block) for s in slots] == [
        (0, "double", 0), (18, "double", 18), (19, "single", 0), (20, "single", 1), (56, "single", 37)]


def test_low_rank_in_weight_dtype_cast_back():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g).to(torch.bfloat16)
    down, up = torch.randn(3, 8, generator=g), torch.randn(8, 3, generator=g)
    out = arithmetic.low_rank(x, down, up, 2.0)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ((x.float() @ down.T @ up.T) * 2.0), rtol=1e-2, atol=1e-2)
    assert torch.equal(arithmetic.low_rank(x.float(), down, up, None), x.float() @ down.T @ up.T)


def test_bokeh_values_are_the_v_dof_term():
    tr = tiny_transformer(seed=1)
    adapter = BokehAdapter.attach(tr, blocks="1,3", rank=4, alpha=8)
    adapter.detach()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    values = adapter.bokeh_values([4.0, 60.0])
    assert sorted(values) == [1, 3] and values[1].shape == (2, adapter.hidden_dim)
    e = adapter.embedding_layer(torch.tensor([[4.0 / 30], [1.0]]))
    layer = adapter.adapter_modules[3].to_v_dof
    want = (e @ layer.down.weight.T @ layer.up.weight.T) * 2.0
    torch.testing.assert_close(values[3], want)
    q_map, k_map = adapter.qk_maps(1)
    assert q_map is adapter.adapter_modules[1].to_q_adp and k_map is adapter.adapter_modules[1].to_k_adp

"""The Stage-2 kernels: same math as the plain torch ops (float32 round-off), autograd kept."""

import pytest
import torch
import torch.nn.functional as F

from bokehdepth_core.stage2 import kernels


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("gelu", [False, True])
def test_linear_is_f_linear_to_round_off(gelu):
    torch.manual_seed(0)
    x = torch.randn(3, 70, 48)
    w, b = torch.randn(96, 48), torch.randn(96)
    want = F.linear(x.double(), w.double(), b.double())
    want = F.gelu(want) if gelu else want
    with torch.no_grad():
        got = kernels.linear(x, w, b, gelu=gelu)
    assert got.shape == (3, 70, 96) and got.dtype == torch.float32
    assert _rel(got, want) < 1e-6
    few = kernels.linear(x[:1, :2], w, None)  # a few rows: the plain op
    assert torch.equal(few, F.linear(x[:1, :2], w))


def test_linear_keeps_autograd_and_other_dtypes():
    torch.manual_seed(1)
    lin = kernels.Linear(16, 8)
    x = torch.randn(100, 16, requires_grad=True)
    lin(x).sum().backward()
    assert x.grad is not None and lin.weight.grad is not None
    torch.testing.assert_close(x.grad, lin.weight.sum(0).expand(100, 16))
    xd = torch.randn(100, 16, dtype=torch.float64)
    assert torch.equal(kernels.linear(xd, lin.weight.double(), lin.bias.double()),
                       F.linear(xd, lin.weight.double(), lin.bias.double()))


@pytest.mark.skipif(not kernels.onednn_linear_available(), reason="oneDNN linear layers need an x86 CPU build")
def test_onednn_runs_where_available():
    x, w = torch.randn(256, 32), torch.randn(64, 32)
    with torch.no_grad(), torch.profiler.profile() as prof:
        kernels.linear(x, w)
    assert any("_linear_pointwise" in e.key for e in prof.key_averages())


def test_attention_explicit_scale():
    torch.manual_seed(2)
    q, k, v = torch.randn(3, 2, 4, 9, 16).unbind(0)
    want = torch.softmax((q.double() @ k.double().transpose(-1, -2)) / 16.0, -1) @ v.double()
    assert _rel(kernels.attention(q, k, v, 1.0 / 16), want) < 1e-6
    plain = torch.softmax((q.double() @ k.double().transpose(-1, -2)) / 4.0, -1) @ v.double()
    assert _rel(kernels.attention(q, k, v), plain) < 1e-6


@pytest.mark.parametrize("rows", [512, 48])  # 48: query rows in several score blocks
def test_attention_per_head_kernel(monkeypatch, rows):
    monkeypatch.setattr(kernels, "_ATTN_ROWS", rows)
    torch.manual_seed(3)
    qkv = torch.randn(2, 130, 3, 3, 16).permute(2, 0, 3, 1, 4)  # strided heads, as the blocks give them
    q, k, v = qkv.unbind(0)
    want = torch.softmax((q.double() @ k.double().transpose(-1, -2)) / 16.0, -1) @ v.double()
    with torch.no_grad(), torch.profiler.profile() as prof:
        got = kernels.attention(q, k, v, 1.0 / 16)
    assert got.shape == (2, 3, 130, 16) and _rel(got, want) < 1e-6
    assert torch.equal(got.transpose(1, 2).reshape(2, 130, 48), got.transpose(1, 2).reshape(2, 130, 48).contiguous())
    used = any("_linear_pointwise" in e.key for e in prof.key_averages())
    assert used == kernels.onednn_linear_available()
    qg = q.clone().requires_grad_()
    kernels.attention(qg, k, v, 1.0 / 16).sum().backward()  # autograd: the fused op
    assert qg.grad is not None


def test_residual_in_place_only_on_the_branch():
    x = torch.randn(2, 5, 8)
    gamma = torch.rand(8)
    branch = torch.randn(2, 5, 8)
    want = x + branch * gamma
    keep = x.clone()
    with torch.no_grad():
        got = kernels.residual(x, branch.clone(), gamma)
        plain = kernels.residual(x, branch.clone())
    assert torch.equal(got, want) and torch.equal(x, keep)  # exact; the residual stream untouched
    assert torch.equal(plain, x + branch)
    g = gamma.clone().requires_grad_()
    b = branch.clone().requires_grad_()
    kernels.residual(x, b * 1.0, g).sum().backward()  # out of place under autograd
    torch.testing.assert_close(g.grad, branch.sum((0, 1)))


def test_conv_layout_keeps_values_and_follows_the_device():
    conv = torch.nn.Conv2d(4, 6, 3)
    w = conv.weight.detach().clone()
    kernels.conv_layout(conv, torch.device("cpu"))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and torch.equal(conv.weight, w)
    kernels.conv_layout(conv, torch.device("meta"))  # other devices: the default layout
    assert conv.weight.is_contiguous() and torch.equal(conv.weight, w)

"""The Stage-2 kernels: same math as the plain torch ops (float32 round-off), autograd kept."""

import time

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
    keep = x.clone()
    kernels.linear(x, w, b, gelu=True)  # GELU in place on the product only
    assert torch.equal(x, keep)


def test_linear_keeps_autograd_and_other_dtypes():
    torch.manual_seed(1)
    lin = kernels.Linear(16, 8)
    x = torch.randn(100, 16, requires_grad=True)
    lin(x).sum().backward()
    assert x.grad is not None and lin.weight.grad is not None
    torch.testing.assert_close(x.grad, lin.weight.sum(0).expand(100, 16))
    x.grad = None
    kernels.linear(x, lin.weight, lin.bias, gelu=True).sum().backward()  # GELU out of place under autograd
    torch.testing.assert_close(x.grad, (torch.autograd.functional.jacobian(
        lambda t: F.gelu(F.linear(t, lin.weight, lin.bias)).sum(), x.detach())))
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


@pytest.mark.parametrize("kernel,rows", [("onednn", 512), ("onednn", 48), ("sdpa", 512)])  # 48: several score blocks
def test_each_attention_kernel(monkeypatch, kernel, rows):
    monkeypatch.setattr(kernels, "_ATTN_ROWS", rows)
    monkeypatch.setattr(kernels, "_ATTENTION", {kernel: kernels._ATTENTION[kernel]})  # the only candidate
    monkeypatch.setattr(kernels, "_picked", {})
    torch.manual_seed(3)
    qkv = torch.randn(2, 130, 3, 3, 16).permute(2, 0, 3, 1, 4)  # strided heads, as the blocks give them
    q, k, v = qkv.unbind(0)
    want = torch.softmax((q.double() @ k.double().transpose(-1, -2)) / 16.0, -1) @ v.double()
    for _ in range(2):  # picked, then kept
        with torch.no_grad(), torch.profiler.profile() as prof:
            got = kernels.attention(q, k, v, 1.0 / 16)
        assert got.shape == (2, 3, 130, 16) and _rel(got, want) < 1e-6
        flat = got.transpose(1, 2).reshape(2, 130, 48)
        assert torch.equal(flat, flat.contiguous())
        used = any("_linear_pointwise" in e.key for e in prof.key_averages())
        assert used == (kernel == "onednn" and kernels.onednn_linear_available())
    assert list(kernels.attention_kernels().values()) == ([kernel] if kernels.onednn_linear_available() else [])
    qg = q.clone().requires_grad_()
    kernels.attention(qg, k, v, 1.0 / 16).sum().backward()  # autograd: the fused op
    assert qg.grad is not None


@pytest.mark.skipif(not kernels.onednn_linear_available(), reason="the kernel choice is made on x86 CPUs")
def test_attention_keeps_the_faster_kernel(monkeypatch):
    calls = []

    def kernel(name, pause):
        def run(q, k, v, scale):
            calls.append(name)
            time.sleep(pause)
            return torch.full_like(q, len(name))
        return run

    monkeypatch.setattr(kernels, "_ATTENTION", {"slow": kernel("slow", 0.05), "fast": kernel("fast", 0.0)})
    monkeypatch.setattr(kernels, "_picked", {})
    q = torch.randn(1, 2, 70, 8)
    with torch.no_grad():
        first = kernels.attention(q, q, q)
        assert calls == ["slow", "fast", "slow", "fast"]  # two interleaved rounds, once per shape
        assert torch.equal(first, torch.full_like(q, 4.0))  # the winner's own result
        kernels.attention(q, q, q)
        kernels.attention(q[:, :1], q[:, :1], q[:, :1])  # another shape: timed again
    assert calls[4:] == ["fast", "slow", "fast", "slow", "fast"]
    assert sorted(kernels.attention_kernels().values()) == ["fast", "fast"]


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


@pytest.mark.skipif(not kernels.onednn_linear_available(), reason="the kernel choice is made on x86 CPUs")
def test_attention_kernel_that_fails_drops_out(monkeypatch):
    def broken(q, k, v, scale):
        raise RuntimeError("no kernel for this shape")

    monkeypatch.setattr(kernels, "_ATTENTION", {"broken": broken, "sdpa": kernels._attention_sdpa})
    monkeypatch.setattr(kernels, "_picked", {})
    monkeypatch.setattr(kernels, "_ATTN_MIN_ROWS", 1)
    q = torch.randn(1, 2, 5, 8)
    with torch.no_grad():
        got = kernels.attention(q, q, q)
    assert torch.equal(got, F.scaled_dot_product_attention(q, q, q))
    assert list(kernels.attention_kernels().values()) == ["sdpa"]
    monkeypatch.setattr(kernels, "_ATTENTION", {"broken": broken})
    with torch.no_grad(), pytest.raises(RuntimeError, match="no kernel"):  # none left: the kernel's own error
        kernels.attention(q[:, :1], q[:, :1], q[:, :1])


def test_residual_rows_in_blocks(monkeypatch):
    torch.manual_seed(4)
    mlp = kernels.Linear(8, 32)
    gamma = torch.rand(8)
    branch = lambda rows: mlp(rows)[..., :8] * 2.0  # row-wise
    x = torch.randn(3, 45, 8)
    want = x + branch(x).detach() * gamma
    monkeypatch.setattr(kernels, "_ROW_BLOCK_BYTES", 64 * 32 * 4)  # 64 rows a block: 135 rows in 3 blocks
    seen = []
    with torch.no_grad():
        fresh = x.clone()
        got = kernels.residual_rows(fresh, lambda r: (seen.append(r.shape[0]), branch(r))[1], gamma, 32)
    assert seen == [64, 64, 7] and got is fresh  # in place, block by block
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # one block's worth of rows: the plain residual, x untouched
        small = x[:1, :40].clone()
        keep = small.clone()
        out = kernels.residual_rows(small, branch, gamma, 32)
    assert torch.equal(small, keep) and torch.allclose(out, want[:1, :40], atol=1e-6)
    g = gamma.clone().requires_grad_()  # autograd: out of place, gradients flow
    xr = x.clone()
    kernels.residual_rows(xr, branch, g, 32).sum().backward()
    assert torch.equal(xr, x) and g.grad is not None


def test_conv_layout_keeps_values_and_follows_the_device():
    conv = torch.nn.Conv2d(4, 6, 3)
    w = conv.weight.detach().clone()
    kernels.conv_layout(conv, torch.device("cpu"))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and torch.equal(conv.weight, w)
    kernels.conv_layout(conv, torch.device("meta"))  # other devices: the default layout
    assert conv.weight.is_contiguous() and torch.equal(conv.weight, w)


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("stride,padding,bias", [(1, 1, True), (2, 1, False), (1, 0, True)])
def test_conv_act_is_conv_then_activation(act, stride, padding, bias):
    torch.manual_seed(6)
    conv = kernels.conv_layout(torch.nn.Conv2d(8, 12, 3, stride=stride, padding=padding, bias=bias),
                               torch.device("cpu"))
    x = torch.randn(2, 8, 15, 17).contiguous(memory_format=torch.channels_last)
    plain = conv(x).double()
    want = F.relu(plain) if act == "relu" else F.leaky_relu(plain, 0.2)
    with torch.no_grad():
        got = kernels.conv_act(conv, x, act, slope=0.2)
        assert (got < 0).any() == (act == "leaky_relu")
        assert _rel(got, want) < 1e-6 and got.shape == want.shape
        if kernels.onednn_linear_available():  # the activation inside oneDNN's convolution: one call
            with torch.profiler.profile() as prof:
                kernels.conv_act(conv, x, act)
            names = [e.key for e in prof.key_averages()]
            assert any("_convolution_pointwise" in n for n in names) and not any("relu" in n for n in names)
    xg = x.clone().requires_grad_()  # autograd: plain ops, gradients flow
    kernels.conv_act(conv, xg, act).sum().backward()
    assert xg.grad is not None and conv.weight.grad is not None
    with pytest.raises(ValueError, match="act must be"):
        kernels.conv_act(conv, x, "gelu")

"""DSFA block against the paper's equations and the release's attention scaling."""

import math

import pytest
import torch

from support import randomize_sharp
from bokehdepth_core.stage2.dsfa import DSFABlock


def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _lin(x, p, name):
    return x @ p[name + ".weight"].T + p[name + ".bias"]


def _mha(x, p, name, heads, logit_div, bias=None):
    n, d = x.shape
    hd = d // heads
    qkv = _lin(x, p, name + ".qkv").reshape(n, 3, heads, hd)
    q, k, v = qkv[:, 0].transpose(0, 1), qkv[:, 1].transpose(0, 1), qkv[:, 2].transpose(0, 1)
    logits = q @ k.transpose(-1, -2) / logit_div
    if bias is not None:
        logits = logits + bias
    out = torch.softmax(logits, -1) @ v
    return _lin(out.transpose(0, 1).reshape(n, d), p, name + ".out_proj")


def _mlp(x, p, name):
    h = _lin(x, p, name + ".fc1")
    return _lin(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), p, name + ".fc2")


def dsfa_reference(p, ref, stack, k, heads=8, alibi=1.0, space_div=None):
    """One DSFA block written from the paper's equations and the release's scaling, frame by
    frame and patch by patch (float64)."""
    b, n, length, d = stack.shape
    hd = d // heads
    space_div = hd if space_div is None else space_div
    film = "focus_film.0" if "focus_film.0.weight" in p else "focus_film"
    out = torch.empty(b, length, d, dtype=torch.float64)
    for bi in range(b):
        kv = torch.cat([torch.zeros(1, dtype=torch.float64), k[bi].double()])
        frames = [ref[bi]] + [stack[bi, j] for j in range(n)]
        t = [_lin(torch.relu(_lin(kv[f:f + 1], p, "k_embed.0")), p, "k_embed.2") for f in range(n + 1)]
        xs = []
        for f, x in enumerate(frames):  # space step
            s = torch.cat([t[f].reshape(1, d), x], 0)
            s = s + p["gamma_space_attn"] * _mha(_ln(s, p["ln_space_attn.weight"], p["ln_space_attn.bias"]),
                                                  p, "space_attn", heads, space_div)
            s = s + p["gamma_space_ffn"] * _mlp(_ln(s, p["ln_space_ffn.weight"], p["ln_space_ffn.bias"]), p, "space_ffn")
            xs.append(s[1:])
        for f in range(n + 1):  # FiLM
            ab = _lin(t[f], p, film)
            xs[f] = xs[f] * (1 + torch.tanh(ab[:d])) + ab[d:]
        bias = -alibi * (kv[:, None] - kv[None, :]).abs()
        for l in range(length):  # focus step, per patch across frames
            s = torch.stack([xs[f][l] for f in range(n + 1)])
            s = s + p["gamma_focus_attn"] * _mha(_ln(s, p["ln_focus_attn.weight"], p["ln_focus_attn.bias"]),
                                                  p, "focus_attn", heads, math.sqrt(hd), bias)
            s = s + p["gamma_focus_ffn"] * _mlp(_ln(s, p["ln_focus_ffn.weight"], p["ln_focus_ffn.bias"]), p, "focus_ffn")
            out[bi, l] = s[0]
    return out


@pytest.mark.parametrize("film_sequential", [True, False])
def test_dsfa_block_matches_equations(film_sequential):
    torch.manual_seed(1)
    d, heads = 64, 8
    block = randomize_sharp(DSFABlock(d, num_heads=heads, film_sequential=film_sequential, alibi_scale=0.7), seed=3)
    with torch.no_grad():
        block.k_embed[0].weight.mul_(0.05)
    assert ("focus_film.0.weight" in block.state_dict()) == film_sequential
    ref = torch.randn(2, 5, d)
    stack = torch.randn(2, 3, 5, d)
    k = torch.tensor([[4.0, 11.0, 30.0], [2.0, 2.5, 9.0]])
    p = {kk: v.double() for kk, v in block.state_dict().items()}
    want = dsfa_reference(p, ref.double(), stack.double(), k, heads, alibi=0.7)
    with torch.no_grad():
        got = block(ref, stack, k)
        got3 = block(ref, stack, k.unsqueeze(-1))
        got64 = block.double()(ref.double(), stack.double(), k.double())
    assert torch.allclose(got64, want, atol=1e-10, rtol=0)
    assert torch.allclose(got.double(), want, atol=2e-5, rtol=0)
    assert torch.equal(got, got3)
    # the space step's double scaling is what the module does (textbook scaling differs clearly)
    other = dsfa_reference(p, ref.double(), stack.double(), k, heads, alibi=0.7, space_div=math.sqrt(d // heads))
    assert (other - want).abs().max() > 1e-3


def test_dsfa_block_without_stack_returns_reference():
    block = DSFABlock(32, num_heads=4)
    ref = torch.randn(1, 6, 32)
    assert block(ref, None, None) is ref
    assert block(ref, torch.empty(1, 0, 6, 32), torch.empty(1, 0)) is ref

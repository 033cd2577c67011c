"""DINOv2 encoder: the switchable attention-logit scale and Depth Anything V2's position-embedding
resize."""

import pytest
import torch
import torch.nn.functional as F

from support import randomize_sharp
from bokehdepth_core.stage2.dinov2 import DinoV2


def test_backbone_attention_scaling():
    torch.manual_seed(2)
    vit = randomize_sharp(DinoV2(embed_dim=64, depth=2, num_heads=4, img_size=56), seed=5).eval()
    attn = vit.blocks[0].attn
    x = torch.randn(2, 9, 64)
    qkv = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(2, 9, 3, 4, 16).permute(2, 0, 3, 1, 4)

    def manual(div):
        w = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) / div, -1)
        return ((w @ qkv[2]).transpose(1, 2).reshape(2, 9, 64)) @ attn.proj.weight.T + attn.proj.bias

    with torch.no_grad():
        vit.attn_scale = "standard"
        std = attn(x)
        vit.attn_scale = "release_sdpa"
        rel = attn(x)
        assert all(b.attn.double_scale for b in vit.blocks)
        assert torch.allclose(std, manual(4.0), atol=1e-5)
        assert torch.allclose(rel, manual(16.0), atol=1e-5)
        assert (std - rel).abs().max() > 1e-2
    with pytest.raises(ValueError, match="attn_scale"):
        vit.attn_scale = "sqrt"


def test_position_embedding_resize_as_dav2():
    torch.manual_seed(6)
    vit = DinoV2(embed_dim=32, depth=1, num_heads=4, img_size=14 * 6)  # 6x6 stored grid
    pos = vit.pos_embed.detach()
    assert torch.equal(vit.interpolate_pos_encoding(37, 84, 84, torch.float32), pos)  # same grid: unchanged
    got = vit.interpolate_pos_encoding(1 + 4 * 7, 56, 98, torch.float32)
    grid = pos[:, 1:].reshape(1, 6, 6, 32).permute(0, 3, 1, 2)
    # DAv2: bicubic with the scale factor (rows+0.1)/6, (cols+0.1)/6, which also sets the sampling grid
    want = F.interpolate(grid, scale_factor=(4.1 / 6, 7.1 / 6), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 28, 32)
    assert torch.allclose(got[:, 1:], want, atol=1e-6) and torch.equal(got[:, :1], pos[:, :1])
    by_size = F.interpolate(grid, size=(4, 7), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 28, 32)
    assert (by_size - want).abs().max() > 1e-4

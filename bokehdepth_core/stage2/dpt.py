"""DPT depth head of Depth Anything V2 (key names of its release files).

Four ViT taps are projected, resampled to 4x/2x/1x/0.5x of the patch grid, fused coarse to
fine by RefineNet-style blocks and decoded to one channel at 14x the patch grid.
``metric=True``: sigmoid output (times max_depth outside); else ReLU (relative disparity).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels import conv_act, conv_layout, residual

__all__ = ["DPTHead"]


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int, use_bn: bool = False):
        super().__init__()
        self.use_bn = use_bn
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        if use_bn:
            self.bn1 = nn.BatchNorm2d(features)
            self.bn2 = nn.BatchNorm2d(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_bn:
            out = self.conv2(F.relu(self.bn1(self.conv1(F.relu(x)))))
            return residual(x, self.bn2(out))
        return residual(x, self.conv2(conv_act(self.conv1, F.relu(x))))


class FeatureFusionBlock(nn.Module):
    def __init__(self, features: int, use_bn: bool = False):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features, use_bn)
        self.resConfUnit2 = ResidualConvUnit(features, use_bn)

    def forward(self, x: torch.Tensor, skip: torch.Tensor = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = residual(x, self.resConfUnit1(skip))
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    def __init__(self, in_channels: int, features: int = 256, use_bn: bool = False,
                 out_channels: Sequence[int] = (256, 512, 1024, 1024), use_clstoken: bool = False,
                 metric: bool = True):
        super().__init__()
        self.use_clstoken = use_clstoken
        self.metric = metric
        oc = list(out_channels)
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])
        if use_clstoken:
            self.readout_projects = nn.ModuleList(
                nn.Sequential(nn.Linear(2 * in_channels, in_channels), nn.GELU()) for _ in oc
            )
        self.scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features, use_bn))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.Sigmoid() if metric else nn.ReLU(),
        )
        conv_layout(self, torch.device("cpu"))

    def forward(self, features, patch_h: int, patch_w: int) -> torch.Tensor:
        """features: four (patch tokens ``[B,L,D]``, class token ``[B,D]``) pairs -> ``[B,1,14h,14w]``."""
        conv_layout(self, features[0][0].device)
        maps = []
        for i, (tokens, cls) in enumerate(features):
            if self.use_clstoken:
                tokens = self.readout_projects[i](torch.cat([tokens, cls.unsqueeze(1).expand_as(tokens)], -1))
            x = tokens.permute(0, 2, 1).reshape(tokens.shape[0], tokens.shape[-1], patch_h, patch_w)
            maps.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(m) for i, m in enumerate(maps, start=1))
        p4 = s.refinenet4(l4, size=l3.shape[2:])
        p3 = s.refinenet3(p4, l3, size=l2.shape[2:])
        p2 = s.refinenet2(p3, l2, size=l1.shape[2:])
        p1 = s.refinenet1(p2, l1)
        out = s.output_conv1(p1)
        out = F.interpolate(out, (patch_h * 14, patch_w * 14), mode="bilinear", align_corners=True)
        head = s.output_conv2  # conv, ReLU, conv, sigmoid/ReLU: the first pair fused
        return head[3](head[2](conv_act(head[0], out)))

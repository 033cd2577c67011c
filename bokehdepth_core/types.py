"""Values that travel between stages: a bokeh stack and a metric depth map; the progress callback."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

# ``callback(done, total)`` for long work; it may raise to abort.
ProgressFn = Optional[Callable[[int, int], None]]


@dataclass
class BokehStack:
    """Frames of one scene that differ only in bokeh strength ``K``.

    frames: ``[B, N, H, W, 3]`` in 0..1; k_values: ``[B, N]`` raw K (px*m);
    reference: the sharp all-in-focus image ``[B, H, W, 3]``; source: how it was made
    ("stage1", "render", "images", ...); meta: free-form settings (seed, steps, focus, ...).
    """

    frames: torch.Tensor
    k_values: torch.Tensor
    reference: torch.Tensor
    source: str = "images"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.frames.ndim != 5 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be [B,N,H,W,3], got {tuple(self.frames.shape)}")
        b, n, h, w, _ = self.frames.shape
        if n == 0:
            raise ValueError("a bokeh stack needs at least one frame (got N=0)")
        k = torch.as_tensor(self.k_values, dtype=torch.float32)
        if k.ndim == 1:
            k = k.unsqueeze(0).expand(b, -1)
        if tuple(k.shape) != (b, n):
            raise ValueError(f"k_values must have one K per frame: expected [{b},{n}], got {tuple(k.shape)}")
        self.k_values = k.contiguous()
        if tuple(self.reference.shape) != (b, h, w, 3):
            raise ValueError(
                f"reference must be [B,H,W,3] = [{b},{h},{w},3] to match the frames, got {tuple(self.reference.shape)}"
            )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[1])

    def k_list(self, batch_index: int = 0) -> list[float]:
        return [float(v) for v in self.k_values[batch_index]]


@dataclass
class DepthMap:
    """Metric depth ``[B, H, W]`` (metres) with optional confidence ``[B, H, W]`` (0..1), pinhole
    intrinsics ``[B, 3, 3]`` in the pixels of ``depth`` and camera-space points ``[B, H, W, 3]``
    (metres, OpenCV axes: x right, y down, z forward)."""

    depth: torch.Tensor
    confidence: Optional[torch.Tensor] = None
    intrinsics: Optional[torch.Tensor] = None
    points: Optional[torch.Tensor] = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.depth.ndim == 2:
            self.depth = self.depth.unsqueeze(0)
        if self.depth.ndim != 3:
            raise ValueError(f"depth must be [B,H,W], got {tuple(self.depth.shape)}")
        if self.confidence is not None and tuple(self.confidence.shape) != tuple(self.depth.shape):
            raise ValueError(
                f"confidence must match depth {tuple(self.depth.shape)}, got {tuple(self.confidence.shape)}"
            )
        if self.intrinsics is not None and tuple(self.intrinsics.shape[-2:]) != (3, 3):
            raise ValueError(f"intrinsics must be [B,3,3], got {tuple(self.intrinsics.shape)}")
        if self.points is not None and tuple(self.points.shape) != (*self.depth.shape, 3):
            raise ValueError(f"points must be [B,H,W,3] matching depth {tuple(self.depth.shape)}, "
                             f"got {tuple(self.points.shape)}")

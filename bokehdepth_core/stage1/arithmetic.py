"""The bokeh adapter's arithmetic, shared by every host of FLUX (diffusers' transformer here,
ComfyUI's Flux in the extension's model patch).

For adapted attention layer ``i`` the authors' ``BokehFluxAttnProcessor2_0`` (release settings:
``lora_scale = bokeh_scale = 1``, grounded attention off) computes::

    q = q + q_map(q);  k = k + k_map(k)      flat projections of the image stream, before the
                                              head split and the RMS norms (v unchanged)
    e = embedding(clamp(K, 1, 30) / 30)       one K per sample
    out = attention(q, k, v) + to_v_dof(e)    added to every token, text included

The release's second attention has a single key per sample (``to_k_dof(e)``) and no mask, so its
softmax is exactly 1 and it returns ``to_v_dof(e)`` for every query: the term is that vector, and
``to_k_dof`` never changes the output. Layer ``i`` is double-stream block ``i`` for ``i`` below the
number of double blocks, else single-stream block ``i - n_double`` (19 + 38 in FLUX.1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.nn.functional as F

from .. import checks
from ..optics import K_CONDITION_RANGE, normalize_k

log = logging.getLogger("BokehDepth")


def low_rank(x: torch.Tensor, down: torch.Tensor, up: torch.Tensor, scale: Optional[float]) -> torch.Tensor:
    """``up(down(x)) * scale`` with bias-free maps, computed in the weights' dtype, returned in x's."""
    out = F.linear(F.linear(x.to(down.dtype), down), up)
    if scale is not None:
        out = out * scale
    return out.to(x.dtype)


def k_condition(k_values, name: str = "k_values", device=None, dtype=torch.float32) -> torch.Tensor:
    """Raw K values -> the adapter's input ``clamp(K, 1, 30) / 30`` as ``[N, 1]``; values outside
    the trained range are clamped with a warning (prompts keep the raw K)."""
    ks = checks.model_k_values(k_values, name)
    lo, hi = K_CONDITION_RANGE
    outside = [k for k in ks if not lo <= k <= hi]
    if outside:
        log.warning("K values %s are outside the adapter's trained range [%g, %g]; the conditioning clamps "
                    "them (prompts keep the raw values)", outside, lo, hi)
    return torch.tensor([[normalize_k(k)] for k in ks], dtype=dtype, device=device)


def for_batch(values: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-sample values ``[N, D]`` for a batch of ``batch``: row ``j`` is ``values[j mod N]``.

    ComfyUI stacks whole copies of the latent batch (cond, uncond, ...) into one model call, so
    tiling (not repeating each row) keeps every copy on its own K.
    """
    n = values.shape[0]
    if n == batch:
        return values
    return values[torch.arange(batch, device=values.device) % n]


def add_bokeh(out: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Attention output ``[B, L, D]`` plus each sample's bokeh vector ``[B, D]`` on every token."""
    return out + values.to(out.dtype)[:, None, :]


@dataclass(frozen=True)
class LayerSlot:
    """Where adapter layer ``index`` sits: ``stream`` "double" or "single", block number ``block``."""

    index: int
    stream: str
    block: int


def layer_slots(indices: Iterable[int], n_double: int) -> list[LayerSlot]:
    """The release's index order: double-stream blocks first, then single-stream blocks."""
    return [LayerSlot(i, "double", i) if i < n_double else LayerSlot(i, "single", i - n_double)
            for i in sorted(indices)]

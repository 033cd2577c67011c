"""Pieces the two Stage-2 recipes share: initial weights, gradient checkpointing from outside the
model, depth prediction at the ground truth's size and checkpoint files in the release layout."""

from __future__ import annotations

import logging
import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from ..stage2 import read_checkpoint

log = logging.getLogger("BokehDepth")


def load_initial_weights(model: nn.Module, path: Optional[str], adapt=None) -> dict:
    """Load a release file or plain model weights non-strictly (as the release scripts do: new
    DSFA blocks keep their initialisation). Returns the missing/unexpected key lists."""
    if not path:
        return {"missing": [], "unexpected": [], "loaded": []}
    sd = read_checkpoint(path)
    if adapt is not None:
        sd = adapt(sd)
    own = model.state_dict()
    bad = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items()
           if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"initial weights {os.path.basename(path)!r} do not fit the model "
                         f"({len(bad)} shape mismatches, first: {bad[0]}); check the encoder size")
    info = model.load_state_dict(sd, strict=False)
    loaded = [k for k in sd if k in own]
    if not loaded:
        raise ValueError(f"initial weights {os.path.basename(path)!r} share no key with the model: "
                         "is it a file for another model family?")
    log.info("loaded %d tensors from %s (%d missing, %d unexpected)", len(loaded), path,
             len(info.missing_keys), len(info.unexpected_keys))
    return {"missing": list(info.missing_keys), "unexpected": list(info.unexpected_keys), "loaded": loaded}


def checkpoint_blocks(blocks: nn.ModuleList) -> None:
    """Recompute each block's activations in backward (less memory for ViT-L/G); the module tree and
    its state-dict keys stay as they are because only the instances' ``forward`` is replaced."""
    for blk in blocks:
        if getattr(blk, "_bokehdepth_checkpointed", False):
            continue
        plain = blk.forward

        def forward(*args, _plain=plain, **kw):
            if torch.is_grad_enabled():
                return torch.utils.checkpoint.checkpoint(_plain, *args, use_reentrant=False, **kw)
            return _plain(*args, **kw)

        blk.forward = forward
        blk._bokehdepth_checkpointed = True


def to_gt_size(pred: torch.Tensor, size) -> torch.Tensor:
    """``[B,h,w]`` -> ``[B,H,W]`` bilinear, corners aligned (Depth Anything V2's inference)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred[:, None].float(), size=tuple(size), mode="bilinear", align_corners=True)[:, 0]


def write_weights(path: str, payload: dict, state_dict: dict, safetensors: bool) -> None:
    """``payload`` (holding ``state_dict`` under ``model``) as a torch file at ``path`` and, when
    asked, the bare weights beside it as ``.safetensors`` (readable by ``read_checkpoint``)."""
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash while writing never leaves a half file under the final name
    if safetensors:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
                  os.path.splitext(path)[0] + ".safetensors")

"""Depth Anything V2 + DSFA training, the release's ``DepthAnythingV2/scripts/train_dsfa.py`` recipe.

Every parameter trains (``model.parameters()``), AdamW lr 5e-6, weight decay 0.01, a constant
learning rate, SiLog loss (lambda 0.5) on the valid pixels, gradient clipping at 1.0 on the
synchronised step, bf16, checkpoints ``epoch_{n}.pth`` + ``latest.pth`` every ``save_every``
epochs holding ``{"model", "optimizer", "epoch", "args"}`` with the model in the release's key
layout (so ``load_dsfa_checkpoint`` and the release's ``load_checkpoint_state`` read them).
"""

from __future__ import annotations

import torch

from ..metrics import depth_metrics
from ..stage2 import build_dav2_dsfa
from .config import COMMON
from .data import DepthStackDataset, collate, val_split
from .loop import Recipe
from .stage2_common import checkpoint_blocks, load_initial_weights, to_gt_size, write_weights

# The release's configs/dsfa_train.json, plus the options of our loop and data.
DEFAULTS = {
    **COMMON,
    "save_path": "outputs/train_dsfa",
    "pretrained_from": None,
    "encoder": "vitl",
    "img_size": 518,
    "min_depth": 0.001,
    "max_depth": 80.0,
    "depth_scale": 1.0,
    "epochs": 40,
    "batch_size": 2,
    "num_workers": 4,
    "lr": 5e-6,
    "weight_decay": 0.01,
    "mixed_precision": "bf16",
    "stack_indices": None,
    "fusion_layers": [2, 3],
    "num_heads": 8,
    "attn_dropout": 0.0,
    "layerscale_init": 0.1,
    "alibi_scale": 1.0,
    "use_sdpa": True,
    "grad_free_stack": False,
    # ours
    "stack_source": "bokeh",  # or "focus": DSFA over focus stacks (synth --train --focus-frames)
    "augment": True,  # random crop as the release; False: centre crop (deterministic)
    "backbone_attention": "release_sdpa",  # what the release trains on GPU; "standard" = its CPU path
    "max_samples": None,
}


class SiLogLoss(torch.nn.Module):
    """The release's SiLog: sqrt(mean(d^2) - lambda mean(d)^2), d = log(target) - log(pred) on
    valid, finite, positive pixels; zero (with a graph) when fewer than 10 are valid."""

    def __init__(self, lambd: float = 0.5):
        super().__init__()
        self.lambd = float(lambd)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        pred, target, valid = pred.squeeze(), target.squeeze(), valid.squeeze().bool()
        if valid.shape != pred.shape:
            valid = valid.expand_as(pred)
        eps = 1e-6
        valid = valid & torch.isfinite(pred) & torch.isfinite(target) & (pred > eps) & (target > eps)
        if valid.sum() < 10:
            return pred.sum() * 0.0
        m = valid.float()
        d = (torch.log(target.clamp(min=eps)) - torch.log(pred.clamp(min=eps))) * m
        n = m.sum().clamp_min(1.0)
        mean, sq = d.sum() / n, d.square().sum() / n
        return torch.sqrt(torch.clamp(sq - self.lambd * mean.square(), min=0.0))


def validate_depth(model, loader, accelerator, predict, min_depth: float, max_depth: float) -> dict:
    """Mean per-image depth metrics (``metrics.depth_metrics``) over a validation loader."""
    sums, count = {}, 0
    for batch in loader:
        pred = to_gt_size(predict(model, batch), batch["depth"].shape[-2:])
        for i in range(pred.shape[0]):
            try:
                m = depth_metrics(pred[i], batch["depth"][i], batch["valid_mask"][i], min_depth=min_depth,
                                  max_depth=max_depth)
            except ValueError:  # no valid pixel in this image
                continue
            for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"):
                sums[k] = sums.get(k, 0.0) + m[k]
            count += 1
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=accelerator.device)
    t = accelerator.reduce(t, reduction="sum")
    n = max(1.0, float(t[-1]))
    return {k: float(t[i]) / n for i, k in enumerate(keys)}


class DAv2Recipe(Recipe):
    name = "dav2"
    DEFAULTS = DEFAULTS
    best_key = "abs_rel"
    best_mode = "min"

    def setup(self, cfg: dict, accelerator) -> None:
        self.cfg = cfg
        if float(cfg["attn_dropout"]) != 0.0:
            raise ValueError("attn_dropout must be 0 (the release's value); the DSFA blocks here have no dropout")
        if cfg["grad_free_stack"]:
            raise ValueError("grad_free_stack is not supported: stack frames share the encoder pass with the "
                             "image here (the release's default, false, is what is reproduced)")
        if not cfg["use_sdpa"]:
            raise ValueError("use_sdpa must be true: the release's DSFA weights and config use the SDPA attention")
        self.model = build_dav2_dsfa(cfg["encoder"], max_depth=float(cfg["max_depth"]),
                                     fusion_layers=cfg["fusion_layers"], num_heads=int(cfg["num_heads"]),
                                     layerscale_init=float(cfg["layerscale_init"]),
                                     alibi_scale=float(cfg["alibi_scale"]))
        load_initial_weights(self.model, cfg.get("pretrained_from"))
        self.model.attn_scale = cfg["backbone_attention"]
        if cfg["gradient_checkpointing"]:
            checkpoint_blocks(self.model.pretrained.blocks)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=float(cfg["lr"]),
                                           weight_decay=float(cfg["weight_decay"]))
        self.criterion = SiLogLoss()
        data = dict(size=int(cfg["img_size"]), stack_source=cfg["stack_source"], stack_indices=cfg["stack_indices"],
                    depth_scale=float(cfg["depth_scale"]), min_depth=float(cfg["min_depth"]),
                    max_depth=float(cfg["max_depth"]), max_samples=cfg.get("max_samples"))
        self.train_set = DepthStackDataset(cfg["manifest_path"], "train", augment=bool(cfg["augment"]),
                                           split="train", **data)
        if cfg.get("val_manifest_path"):
            self.val_set = DepthStackDataset(cfg["val_manifest_path"], "val", augment=False,
                                             split=val_split(cfg["manifest_path"], cfg["val_manifest_path"]), **data)
        self.collate = collate

    @staticmethod
    def predict(model, batch: dict) -> torch.Tensor:
        stack = batch["focus_stack"] if batch["focus_stack"].shape[1] else None
        return model(batch["image"], stack, batch["k_stack"] if stack is not None else None)

    def loss(self, model, batch: dict):
        pred = self.predict(model, batch)
        loss = self.criterion(pred, batch["depth"], batch["valid_mask"])
        return loss, {"silog": float(loss.detach())}

    def validate(self, model, loader, accelerator) -> dict:
        return validate_depth(model, loader, accelerator, self.predict, float(self.cfg["min_depth"]),
                              float(self.cfg["max_depth"]))

    def save(self, accelerator, model, path, epoch, step, cfg, with_optimizer=True) -> None:
        sd = accelerator.get_state_dict(model)
        payload = {"model": sd, "epoch": epoch, "step": step, "args": dict(cfg)}
        if with_optimizer:
            payload["optimizer"] = self.optimizer.state_dict()
        write_weights(path, payload, sd, bool(cfg["safetensors"]))

    def resume(self, path: str) -> tuple[int, int]:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        state = raw.get("model", raw)
        self.model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)
        if "optimizer" in raw:
            self.optimizer.load_state_dict(raw["optimizer"])
        return int(raw.get("epoch", -1)) + 1, int(raw.get("step", 0))

"""UniDepthV2 + DSFA training, the release's ``UniDepth/scripts/train_DSFA.py`` recipe.

Parameter groups as its ``get_params``: with pretrained weights, parameters the file lacks (the
DSFA blocks) train at 10x and the rest at 0.1x of the encoder (2e-6) and decoder (1e-4) rates,
weight decay 0.1; cosine schedules per optimiser step for the learning rate (warm-up 18750 of
75000 steps, to 1e-6 x the group's ratio), weight decay and Adam's beta1 (0.95 -> 0.85 -> 0.95);
EMA of the weights every 10 steps (decay 0.995 ramped by tanh after 7500 updates); fp16; clipping
at 1.0; steps with non-finite gradients skipped; two copies of each image per batch for the
self-distillation loss; the decoder gets the ground-truth camera's rays. Checkpoints hold
``{"step", "model", "optimizer", "ema", "config", ...}`` with the model in the release layout.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..camera import camera_rays
from ..stage2 import build_unidepthv2_dsfa
from . import unidepth_losses as L
from .config import COMMON
from .dav2 import validate_depth
from .data import DepthStackDataset, collate, val_split
from .loop import Recipe
from .stage2_common import checkpoint_blocks, load_initial_weights, write_weights

EMA_INTERVAL = 10
NYU_K = [[518.8579, 0.0, 325.5824], [0.0, 519.4696, 253.7362], [0.0, 0.0, 1.0]]

DEFAULTS = {
    **COMMON,
    "save_path": "outputs/train_unidepth",
    "pretrained_from": None,  # unidepthv2_vitl14 weights or UDv2_dsfa_release.pth
    "model_config": {},  # overrides of the model's RELEASE_CONFIG (tests: a small ViT)
    "seed": 13,
    "max_steps": 75000,  # n_iters
    "epochs": 1000000,
    "batch_size": 16,  # per process; the release: 32 over the world with 2 accumulation chunks
    "grad_accum_steps": 2,
    "lr": 1e-4,
    "lr_final": 1e-6,
    "lr_warmup": 1.0,
    "encoder_lr": 2e-6,
    "frozen_stages": 0,  # the release's: >= 0 freezes the patch embedding, n > 0 also the first n ViT blocks
    "wd": 0.1,
    "wd_final": 0.1,
    "warmup_iters": 18750,
    "cycle_betas": True,  # the release config's "cycle_beta" key is not the one its script reads
    "ema": True,
    "mixed_precision": "fp16",
    "max_grad_norm": 1.0,
    "enable_mse_loss": False,
    "mse_loss_weight": 1.0,
    "img_size": 518,
    "min_depth": 1e-3,
    "max_depth": 80.0,
    "depth_scale": 1.0,
    "stack_indices": [0, 1, 2],
    "stack_source": "bokeh",
    "num_copies": 2,
    "augment": True,
    "default_intrinsics": NYU_K,  # for manifests without intrinsics (the release's NYUv2 camera)
    "max_samples": None,
}
WEIGHTS = {"depth": 1.0, "invariance": 0.1, "camera": 0.25, "ssi": 1.0, "confidence": 0.1}


def cosine_schedule(init: float, base: float, final: float, warmup: int, total: int) -> np.ndarray:
    """The release's CosineScheduler values: linear init -> base over ``warmup`` steps, then a
    cosine from base to final over the rest."""
    warm = (base - init) * np.linspace(0, 1, warmup, endpoint=True) + init
    it = np.arange(total - warmup + 1)
    return np.concatenate((warm, final + 0.5 * (base - final) * (1 + np.cos(np.pi * it / (len(it) - 1)))))


class CopiesDataset(torch.utils.data.Dataset):
    """Each sample ``num_copies`` times (independent random crops), copies adjacent in the batch."""

    def __init__(self, base: DepthStackDataset, copies: int, default_k):
        self.base, self.copies, self.default_k = base, int(copies), torch.tensor(default_k, dtype=torch.float32)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        out = []
        for _ in range(self.copies):
            s = self.base[i]
            if "intrinsics" not in s:
                s["intrinsics"] = self.default_k.clone()
            out.append(s)
        return out


def collate_copies(batch):
    return collate([s for group in batch for s in group])


class UniDepthRecipe(Recipe):
    """UniDepthV2 + DSFA (train_DSFA.py)."""

    name = "unidepth"
    DEFAULTS = DEFAULTS
    best_key = "abs_rel"

    @staticmethod
    def flatten_config(cfg: dict) -> dict:
        """The release's nested JSON (generic/training/data/model) -> our option names."""
        if "training" not in cfg and "model" not in cfg:
            return cfg
        t, d = cfg.get("training", {}), cfg.get("data", {})
        out = {"seed": cfg.get("generic", {}).get("seed", 13), "model_config": {"model": cfg.get("model", {}), "data": d}}
        for src, dst in (("n_iters", "max_steps"), ("lr", "lr"), ("lr_final", "lr_final"), ("lr_warmup", "lr_warmup"),
                         ("wd", "wd"), ("wd_final", "wd_final"), ("warmup_iters", "warmup_iters"), ("ema", "ema"),
                         ("clipping", "max_grad_norm"), ("enable_mse_loss", "enable_mse_loss"),
                         ("mse_loss_weight", "mse_loss_weight"), ("nsteps_accumulation_gradient", "grad_accum_steps"),
                         ("pretrained", "pretrained_from")):
            if src in t:
                out[dst] = t[src]
        if "batch_size" in t:
            out["batch_size"] = int(t["batch_size"]) // max(1, int(t.get("nsteps_accumulation_gradient", 1)))
        if "f16" in t:
            out["mixed_precision"] = "fp16" if t["f16"] else "no"
        enc = cfg.get("model", {}).get("pixel_encoder", {})
        out["encoder_lr"] = enc.get("lr", 2e-6)
        out["frozen_stages"] = enc.get("frozen_stages", 0)
        if d.get("defocus_stack_indices") is not None:
            out["stack_indices"] = d["defocus_stack_indices"]
        if d.get("num_copies"):
            out["num_copies"] = d["num_copies"]
        return out

    def setup(self, cfg: dict, accelerator) -> None:
        self.cfg = cfg
        self.model = build_unidepthv2_dsfa(cfg.get("model_config") or None)
        info = load_initial_weights(self.model, cfg.get("pretrained_from"), adapt=_release_remap)
        self.new_names = set(info["missing"]) if cfg.get("pretrained_from") else None
        self.freeze(int(cfg["frozen_stages"]))
        if cfg["gradient_checkpointing"]:
            checkpoint_blocks(self.model.pixel_encoder.backbone.blocks)
        self.optimizer = torch.optim.AdamW(self.param_groups())
        total, warm = int(cfg["max_steps"]), int(cfg["warmup_iters"])
        beta = (0.95, 0.85, 0.95) if cfg["cycle_betas"] else (0.9, 0.9, 0.9)
        self.schedules = []
        for g in self.optimizer.param_groups:
            self.schedules.append({"lr": cosine_schedule(g["lr_init"], g["lr"], g["lr_final"], warm, total),
                                   "weight_decay": cosine_schedule(*[g["weight_decay"]] * 3, 0, total),
                                   "betas": cosine_schedule(*beta, warm, total)})
        self.params = list(self.model.parameters())
        self.ema = [p.detach().clone() for p in self.params] if cfg["ema"] else None
        self.ema_updates = 0
        data = dict(size=int(cfg["img_size"]), stack_source=cfg["stack_source"], stack_indices=cfg["stack_indices"],
                    depth_scale=float(cfg["depth_scale"]), min_depth=float(cfg["min_depth"]),
                    max_depth=float(cfg["max_depth"]), max_samples=cfg.get("max_samples"))
        base = DepthStackDataset(cfg["manifest_path"], "train", augment=bool(cfg["augment"]), split="train", **data)
        self.train_set = CopiesDataset(base, int(cfg["num_copies"]), cfg["default_intrinsics"])
        self.collate = collate_copies
        if cfg.get("val_manifest_path"):
            self.val_set = DepthStackDataset(cfg["val_manifest_path"], "val", augment=False,
                                             split=val_split(cfg["manifest_path"], cfg["val_manifest_path"]), **data)
            self.val_collate = collate

    def freeze(self, stages: int) -> None:
        """The release backbone's ``frozen_stages`` (applied by its ``train()``)."""
        vit = self.model.pixel_encoder.backbone
        vit.mask_token.requires_grad_(False)  # unused tokens, never trained there
        if vit.register_tokens is not None:
            vit.register_tokens.requires_grad_(False)
        if stages > -1:
            vit.patch_embed.requires_grad_(False)
        for blk in vit.blocks[:max(0, stages)]:
            blk.requires_grad_(False)
        if stages >= 1:
            vit.cls_token.requires_grad_(False)
            vit.pos_embed.requires_grad_(False)

    def param_groups(self) -> list[dict]:
        cfg, m = self.cfg, self.model
        base_lr, final_lr, warm = float(cfg["lr"]), float(cfg["lr_final"]), float(cfg["lr_warmup"])
        wd = float(cfg["wd"])
        groups = []
        for part, lr in (("pixel_encoder", float(cfg["encoder_lr"])), ("pixel_decoder", base_lr)):
            named = [(f"{part}.{n}", p) for n, p in getattr(m, part).named_parameters() if p.requires_grad]
            if self.new_names is not None:  # differential rates: new 10x, pretrained 0.1x
                splits = (([p for n, p in named if n in self.new_names], 10.0),
                          ([p for n, p in named if n not in self.new_names], 0.1))
                for params, scale in splits:
                    if params:
                        actual = lr * scale
                        ratio = actual / base_lr
                        groups.append({"params": params, "lr": actual, "lr_init": base_lr * warm * ratio,
                                       "lr_final": final_lr * ratio, "weight_decay": wd})
            else:  # no pretrained file: decay / no-decay split as the release's get_params
                skip = ("latents_pos", "level_embeds")
                nodecay = [p for n, p in named
                           if p.ndim == 1 or n.endswith((".bias", ".gamma", ".beta")) or any(s in n for s in skip)]
                ids = {id(p) for p in nodecay}
                ratio = lr / base_lr
                for params, w in (([p for _, p in named if id(p) not in ids], wd), (nodecay, 0.0)):
                    if params:
                        groups.append({"params": params, "lr": lr, "lr_init": base_lr * warm * ratio,
                                       "lr_final": final_lr * ratio, "weight_decay": w})
        return groups

    def loss(self, model, batch: dict):
        cfg = self.cfg
        x, depth = batch["image"], batch["depth"][:, None]
        mask = batch["valid_mask"][:, None]
        b, _, h, w = x.shape
        rays = camera_rays(batch["intrinsics"], h, w).to(x.device)
        stack = batch["focus_stack"] if batch["focus_stack"].shape[1] else None
        out = model(x, stack, batch["k_stack"] if stack is not None else None, rays)
        pred = out["depth"]
        si = torch.zeros(b, dtype=torch.bool, device=x.device)
        parts = {"SILog": WEIGHTS["depth"] * L.silog(pred, depth, mask, si).mean(),
                 "Regression": WEIGHTS["camera"] * L.ray_regression(out["rays"], rays).mean(),
                 "SelfDistill": WEIGHTS["invariance"] * L.self_distill(pred, batch["intrinsics"].to(x.device), mask,
                                                                        torch.zeros(b, dtype=torch.bool)).mean(),
                 "EdgeGuidedLocalSSI": WEIGHTS["ssi"] * L.edge_guided_ssi(pred, depth, mask, x, mask).mean(),
                 "Confidence_conf": WEIGHTS["confidence"] * L.confidence_loss(out["confidence"].log(), pred, depth,
                                                                              mask).mean()}
        if cfg["enable_mse_loss"]:
            parts["metric_depth_mse"] = float(cfg["mse_loss_weight"]) * (pred - depth).pow(2)[mask.bool()].mean()
        if parts["SILog"].abs() < 1e-7:  # the release drops an exactly-zero SILog from the sum
            parts.pop("SILog")
        return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}

    def after_backward(self, model) -> None:
        if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in self.params):
            for p in self.params:  # the release skips such a step
                p.grad = None

    def after_step(self, step: int) -> None:
        # the release steps its schedulers after each update: after update n the values are entry n-1
        for g, sch in zip(self.optimizer.param_groups, self.schedules):
            i = min(step - 1, len(sch["lr"]) - 1)
            g["lr"], g["weight_decay"] = float(sch["lr"][i]), float(sch["weight_decay"][i])
            g["betas"] = (float(sch["betas"][i]), g["betas"][1])
        if self.ema is not None and (step - 1) % EMA_INTERVAL == 0:
            self.ema_updates += 1
            n = max(self.ema_updates - 75000 // EMA_INTERVAL - 1, 0.0)
            decay = math.tanh(n / (20000 // EMA_INTERVAL)) * (1 - (1 - 0.9995) * EMA_INTERVAL) if n > 0 else 0.0
            with torch.no_grad():
                for s, p in zip(self.ema, self.params):
                    s.mul_(decay).add_(p.detach().to(s.dtype), alpha=1 - decay)

    def validate(self, model, loader, accelerator) -> dict:
        return validate_depth(model, loader, accelerator, _predict_depth, float(self.cfg["min_depth"]),
                              float(self.cfg["max_depth"]))

    def save(self, accelerator, model, path, epoch, step, cfg, with_optimizer=True) -> None:
        sd = accelerator.get_state_dict(model)
        payload = {"step": step, "epoch": epoch, "model": sd, "config": dict(cfg),
                   "ema": {"shadow_params": [s.cpu() for s in self.ema], "num_updates": self.ema_updates}
                   if self.ema is not None else None}
        if with_optimizer:
            payload["optimizer"] = self.optimizer.state_dict()
        write_weights(path, payload, sd, bool(cfg["safetensors"]))

    def resume(self, path: str) -> tuple[int, int]:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(raw["model"], strict=True)
        if "optimizer" in raw:
            self.optimizer.load_state_dict(raw["optimizer"])
        if raw.get("ema") and self.ema is not None:
            self.ema = [t.clone() for t in raw["ema"]["shadow_params"]]
            self.ema_updates = int(raw["ema"].get("num_updates", 0))
        return int(raw.get("epoch", -1)) + 1, int(raw.get("step", 0))


def _predict_depth(model, batch) -> torch.Tensor:
    stack = batch["focus_stack"] if batch["focus_stack"].shape[1] else None
    return model(batch["image"], stack, batch["k_stack"] if stack is not None else None)["depth"][:, 0]


def _release_remap(sd: dict) -> dict:
    """UniDepthV2 files keep the ViT under ``pixel_encoder.``; the DSFA model under
    ``pixel_encoder.backbone.`` (the release's ``load_pretrained`` remap)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("pixel_encoder.") and not k.startswith(("pixel_encoder.backbone.", "pixel_encoder.fusion_blocks.")):
            k = "pixel_encoder.backbone." + k[len("pixel_encoder."):]
        out[k] = v
    return out


def tiny_model_config(embed_dim: int = 32, depth: int = 4, hidden_dim: int = 32) -> dict:
    """A small UniDepthV2 + DSFA for tests and smoke runs."""
    return {"embed_dim": embed_dim, "depth": depth, "vit_heads": 2, "output_idx": list(range(1, depth + 1))[-4:],
            "fusion_num_heads": 2, "hidden_dim": hidden_dim, "num_heads": 2, "decoder_depths": [1, 1, 1],
            "out_dim": 8, "img_size": 56, "fusion_layers": [0, 1, 2, 3]}



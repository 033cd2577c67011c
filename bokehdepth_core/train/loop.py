"""The training loop all recipes share, on Hugging Face Accelerate.

``accelerate launch -m bokehdepth_core train ...`` and ``python -m bokehdepth_core train ...`` run
the same code: Accelerate decides processes, devices and mixed precision. A recipe provides the
model, its trainable parameters, the optimiser, the loss of a batch and the checkpoint format;
the loop does accumulation, clipping, scheduling, progress, per-epoch metrics (CSV + JSONL,
TensorBoard when installed), validation, checkpoints (latest, best, every ``save_every`` epochs)
and resuming.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from typing import Optional

import torch

from .data import seed_worker

log = logging.getLogger("BokehDepth")


class Recipe:
    """What a recipe provides (see ``dav2.py``, ``unidepth.py``, ``adapter.py``).

    ``setup`` sets ``model`` (the module Accelerate wraps), ``optimizer``, ``train_set``,
    ``collate`` and optionally ``val_set``; ``best_key``/``best_mode`` name the validation number
    that picks the best checkpoint (the mean training loss when there is no validation set).
    """

    name = "recipe"
    DEFAULTS: dict = {}
    best_key = "loss"
    best_mode = "min"
    model = optimizer = train_set = val_set = collate = None

    def setup(self, cfg: dict, accelerator) -> None:
        raise NotImplementedError

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def after_backward(self, model) -> None:
        """Hook between backward and clipping (e.g. skipping non-finite gradients)."""

    def after_step(self, step: int) -> None:
        """Once per optimiser step (schedules, EMA)."""

    def clip_parameters(self, model):
        return model.parameters()

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def validate(self, model, loader, accelerator) -> dict:
        return {}

    def save(self, accelerator, model, path: str, epoch: int, step: int, cfg: dict, with_optimizer: bool = True) -> None:
        raise NotImplementedError

    def resume(self, path: str) -> tuple[int, int]:
        """Load a checkpoint written by :meth:`save`; returns (next epoch, global step)."""
        raise NotImplementedError


class MetricsLog:
    """Per-epoch rows to ``metrics.csv`` and ``metrics.jsonl`` (and TensorBoard when available)."""

    def __init__(self, folder: str, accelerator):
        self.folder = folder
        self.accelerator = accelerator
        self.csv_path = os.path.join(folder, "metrics.csv")
        self.jsonl_path = os.path.join(folder, "metrics.jsonl")

    def write(self, row: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        rows = []
        if os.path.isfile(self.csv_path):
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        rows.append({k: row[k] for k in row})
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        if self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])


def _tracker() -> Optional[str]:
    try:
        import tensorboard  # noqa: F401  (optional: logging only)
    except ImportError:
        return None
    return "tensorboard"


def make_accelerator(cfg: dict, find_unused: bool = True):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    tracker = _tracker()
    return Accelerator(
        mixed_precision=cfg["mixed_precision"],
        gradient_accumulation_steps=int(cfg["grad_accum_steps"]),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)],
        log_with=tracker,
        project_config=ProjectConfiguration(project_dir=cfg["save_path"], logging_dir=os.path.join(cfg["save_path"], "tb")),
    )


def _loader(dataset, cfg: dict, collate, shuffle: bool, batch_size: int):
    g = torch.Generator()
    g.manual_seed(int(cfg["seed"]))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       num_workers=int(cfg["num_workers"]), collate_fn=collate,
                                       drop_last=False, generator=g, worker_init_fn=seed_worker,
                                       pin_memory=torch.cuda.is_available())


def _better(value: float, best: Optional[float], mode: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return best is None or (value < best if mode == "min" else value > best)


def train(recipe: Recipe, cfg: dict, accelerator=None) -> dict:
    """Run a recipe; returns a summary (steps, last metrics, best value, paths)."""
    from accelerate.utils import set_seed

    accelerator = accelerator or make_accelerator(cfg)
    set_seed(int(cfg["seed"]))
    os.makedirs(cfg["save_path"], exist_ok=True)
    recipe.setup(cfg, accelerator)
    if accelerator.trackers == [] and _tracker() and accelerator.is_main_process:
        accelerator.init_trackers(recipe.name)
    train_loader = _loader(recipe.train_set, cfg, recipe.collate, True, int(cfg["batch_size"]))
    val_collate = getattr(recipe, "val_collate", recipe.collate)
    val_loader = _loader(recipe.val_set, cfg, val_collate, False, 1) if recipe.val_set is not None else None
    start_epoch, step = 0, 0
    if cfg.get("resume_from"):
        start_epoch, step = recipe.resume(cfg["resume_from"])
    if val_loader is not None:
        model, optimizer, train_loader, val_loader = accelerator.prepare(recipe.model, recipe.optimizer,
                                                                         train_loader, val_loader)
    else:
        model, optimizer, train_loader = accelerator.prepare(recipe.model, recipe.optimizer, train_loader)
    recipe.optimizer = optimizer
    metrics = MetricsLog(cfg["save_path"], accelerator)
    max_steps = int(cfg["max_steps"]) if cfg.get("max_steps") else None
    best, best_path, last = None, None, {}
    state_path = os.path.join(cfg["save_path"], "train_state.json")
    if cfg.get("resume_from") and os.path.isfile(state_path):
        with open(state_path, encoding="utf-8") as f:
            best = json.load(f).get("best")

    bar = None
    if cfg.get("progress", True) and accelerator.is_main_process:
        from tqdm.auto import tqdm

        total = len(train_loader) * (int(cfg["epochs"]) - start_epoch) // int(cfg["grad_accum_steps"])
        bar = tqdm(total=min(total, max_steps - step) if max_steps else total, desc=f"train {recipe.name}",
                   dynamic_ncols=True)
    done = max_steps is not None and step >= max_steps
    for epoch in range(start_epoch, int(cfg["epochs"])):
        if done:
            break
        model.train()
        t0, seen, losses = time.perf_counter(), 0, []
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss, parts = recipe.loss(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    recipe.after_backward(model)
                    if cfg.get("max_grad_norm"):
                        accelerator.clip_grad_norm_(recipe.clip_parameters(model), float(cfg["max_grad_norm"]))
                optimizer.step()
                optimizer.zero_grad()
            losses.append(float(loss.detach().float()))
            first = batch["image"] if isinstance(batch.get("image"), torch.Tensor) else batch["images"]
            seen += int(first.shape[0]) * accelerator.num_processes
            if accelerator.sync_gradients:
                step += 1
                recipe.after_step(step)
                if bar is not None:
                    bar.update(1)
                    if step % max(1, int(cfg["log_every"])) == 0 or step == 1:
                        rate = seen / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}",
                                        samples_s=f"{rate:.2f}", lr=f"{recipe.current_lr():.2e}")
                if max_steps is not None and step >= max_steps:
                    done = True
                    break
        seconds = time.perf_counter() - t0
        mean_loss = accelerator.gather(torch.tensor([sum(losses) / max(1, len(losses))],
                                                    device=accelerator.device)).mean().item()
        row = {"epoch": epoch + 1, "step": step, "train_loss": mean_loss, "lr": recipe.current_lr(),
               "seconds": round(seconds, 3), "samples_per_s": round(seen / max(seconds, 1e-9), 3)}
        last_epoch = done or epoch + 1 == int(cfg["epochs"])
        if val_loader is not None and ((epoch + 1) % int(cfg["val_every"]) == 0 or last_epoch):
            model.eval()
            with torch.no_grad():
                row.update({f"val_{k}": v for k, v in recipe.validate(model, val_loader, accelerator).items()})
        metrics.write(row)
        last = row
        saving = (epoch + 1) % int(cfg["save_every"]) == 0 or last_epoch  # the release's cadence
        # best: by the validation number when there is a validation set, else by the epoch's mean
        # training loss at save time (the adapter release's "smart checkpoint")
        score = row.get(f"val_{recipe.best_key}") if recipe.val_set is not None else (mean_loss if saving else None)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if saving:
                recipe.save(accelerator, model, os.path.join(cfg["save_path"], "latest.pth"), epoch, step, cfg)
                recipe.save(accelerator, model, os.path.join(cfg["save_path"], f"epoch_{epoch + 1}.pth"),
                            epoch, step, cfg, with_optimizer=False)
            if _better(score, best, recipe.best_mode):
                best, best_path = score, os.path.join(cfg["save_path"], "best.pth")
                recipe.save(accelerator, model, best_path, epoch, step, cfg, with_optimizer=False)
            with open(state_path, "w", encoding="utf-8") as f:
                json.dump({"epoch": epoch + 1, "step": step, "best": best, "best_key": recipe.best_key}, f)
        accelerator.wait_for_everyone()
    if bar is not None:
        bar.close()
    accelerator.end_training()
    return {"steps": step, "last": last, "best": best, "save_path": cfg["save_path"]}

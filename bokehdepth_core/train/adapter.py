"""Stage-1 bokeh adapter training on FLUX.1-Kontext, the release's ``train_flux_I2I.py`` (I2I) recipe.

Frozen Kontext (transformer, VAE, both text encoders); trainable: the adapter's K embedding and
its per-layer low-rank maps (``embedding_layer`` + ``adapter_modules``, the ``bokeh_lora.bin``
layout). Rectified-flow loss ``mean((pred - (noise - latents))^2)`` on the target tokens, the
reference image as Kontext context tokens (ids type 1), uniform timesteps (weighting "none"),
offset noise 0.05, AdamW (or Prodigy/Lion when installed), cosine schedule with 100 warm-up steps,
clipping at 1.0, bf16, gradient checkpointing, ``latest``/``best`` by epoch loss. Targets come from
the manifest (``target_image_path`` + ``dof_cond``, or each stack frame + its K) or, with
``target_source: render``, from the thin-lens renderer at a random K in [K_min, K_max] (the
release renders online with BokehMe, whose weights are not part of it).
"""

from __future__ import annotations

import random

import torch
import torch.nn as nn

from .adapter_data import I2IDataset, collate_i2i
from .config import COMMON
from .loop import Recipe

DEFAULTS = {
    **COMMON,
    "save_path": "outputs/train_adapter",
    "pretrained_model": None,  # diffusers FLUX.1-Kontext-dev folder ("tiny": random test model)
    "adapter_from": None,  # bokeh_lora.bin to continue from
    "block_ids": "0-56",
    "lora_rank": 128,
    "lora_alpha": 128.0,
    "unfreeze_q": True,
    "unfreeze_k": True,
    "mixed_precision": "bf16",
    "size": 512,
    "batch_size": 4,
    "epochs": 40,
    "save_every": 2,
    "noise_offset": 0.05,
    "optimizer": "adamw",  # the release's run used prodigy (pip install prodigyopt)
    "learning_rate": 1e-4,
    "weight_decay": 0.01,
    "lr_scheduler": "cosine",
    "lr_warmup_steps": 100,
    "guidance_scale": 1.0,
    "weighting_scheme": "none",
    "K_min": 1.0,
    "K_max": 30.0,
    "i2i_prompt_keep_ratio": 0.35,
    "horizontal_flip": True,
    "target_source": "file",  # or "render"
    "gradient_checkpointing": True,
    # The release passes clip_grad_norm_ the parameter iterator its optimiser already consumed, so
    # it never clips; a number here clips.
    "max_grad_norm": None,
}

TEMPLATES = (  # the release's I2I prompt templates
    "Set dof_cond = {value} (stronger background defocus), no changes to composition, lighting, or colors.",
    "Increase dof_cond to {value} to enhance background blur; preserve subject sharpness and keep composition, "
    "lighting, colors unchanged.",
    "Apply dof_cond = {value} for stronger bokeh; keep the main subject crisp, do not alter composition, lighting, "
    "or color tone.",
    "Use dof_cond = {value} to intensify background defocus; maintain original framing, lighting, and color fidelity.",
)


class AdapterTrainer(nn.Module):
    """The trainable adapter around a frozen transformer (which is not a submodule, so Accelerate
    and DDP see only the adapter's parameters)."""

    def __init__(self, adapter, transformer):
        super().__init__()
        self.adapter = adapter
        self.__dict__["transformer"] = transformer

    def forward(self, hidden_states, k_norm, timestep, guidance, pooled, prompt_embeds, txt_ids, img_ids):
        self.adapter.condition_on(k_norm)
        return self.transformer(hidden_states=hidden_states, timestep=timestep, guidance=guidance,
                                pooled_projections=pooled, encoder_hidden_states=prompt_embeds,
                                txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]


def load_pipeline(path: str, dtype: torch.dtype):
    if path == "tiny":
        from ..testing import tiny_kontext_pipeline

        return tiny_kontext_pipeline(dtype=dtype)
    if not path:
        raise ValueError("pretrained_model is required: the FLUX.1-Kontext-dev diffusers folder")
    from diffusers import FluxKontextPipeline

    return FluxKontextPipeline.from_pretrained(path, torch_dtype=dtype)


def make_optimizer(name: str, params, lr: float, weight_decay: float):
    """The release's choices; Prodigy runs at lr 1.0, Lion at lr/10 with weight decay x10."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "prodigy":
        try:
            import prodigyopt
        except ImportError:
            raise ValueError("optimizer 'prodigy' needs the prodigyopt package: pip install prodigyopt") from None
        return prodigyopt.Prodigy(params, lr=1.0, weight_decay=weight_decay, use_bias_correction=True,
                                  safeguard_warmup=True)
    if name == "lion":
        try:
            from lion_pytorch import Lion
        except ImportError:
            raise ValueError("optimizer 'lion' needs the lion-pytorch package: pip install lion-pytorch") from None
        return Lion(params, lr=lr * 0.1, weight_decay=weight_decay * 10)
    raise ValueError(f"optimizer must be adamw, prodigy or lion, got {name!r}")


class AdapterRecipe(Recipe):
    """Stage-1 bokeh adapter on FLUX.1-Kontext (train_flux_I2I.py)."""

    name = "adapter"
    DEFAULTS = DEFAULTS

    def setup(self, cfg: dict, accelerator) -> None:
        from diffusers.optimization import get_scheduler

        from ..stage1 import BokehAdapter

        self.cfg, self.accelerator = cfg, accelerator
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg["mixed_precision"], torch.float32)
        pipe = load_pipeline(cfg["pretrained_model"], dtype)
        for m in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
            m.requires_grad_(False)
        pipe.to(accelerator.device)
        self.pipe, self.transformer, self.vae = pipe, pipe.transformer, pipe.vae
        if cfg["gradient_checkpointing"]:
            self.transformer.enable_gradient_checkpointing()
        if cfg.get("adapter_from"):
            adapter = BokehAdapter.from_file(cfg["adapter_from"], alpha=cfg.get("lora_alpha"))
            adapter.to(torch.float32).attach_to(self.transformer, dtype=None)
        else:
            adapter = BokehAdapter.attach(self.transformer, blocks=cfg["block_ids"], rank=int(cfg["lora_rank"]),
                                          alpha=cfg.get("lora_alpha"), unfreeze_q=bool(cfg["unfreeze_q"]),
                                          unfreeze_k=bool(cfg["unfreeze_k"]), dtype=torch.float32)
        self.adapter = adapter
        self.model = AdapterTrainer(adapter, self.transformer)
        self.params = [p for p in adapter.parameters()]
        self.optimizer = make_optimizer(cfg["optimizer"], self.params, float(cfg["learning_rate"]),
                                        float(cfg["weight_decay"]))
        self.train_set = I2IDataset(cfg["manifest_path"], size=int(cfg["size"]), flip=bool(cfg["horizontal_flip"]),
                                    target_source=cfg["target_source"], max_samples=cfg.get("max_samples"))
        self.collate = collate_i2i
        per_epoch = -(-len(self.train_set) // (int(cfg["batch_size"]) * accelerator.num_processes))
        total = int(cfg["max_steps"]) if cfg.get("max_steps") else int(cfg["epochs"]) * per_epoch
        self.scheduler = get_scheduler(cfg["lr_scheduler"], optimizer=self.optimizer,
                                       num_warmup_steps=int(cfg["lr_warmup_steps"]), num_training_steps=total)
        self.noise_scheduler = pipe.scheduler
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ one batch
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            lat = self.vae.encode(images.to(self.accelerator.device, self.vae.dtype)).latent_dist.sample()
        return (lat - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def prompts(self, captions, ks) -> list[str]:
        """Keep a caption with probability ``i2i_prompt_keep_ratio``, else a K template (release)."""
        out = []
        for cap, k in zip(captions, ks):
            if cap and str(cap).strip() and random.random() < float(self.cfg["i2i_prompt_keep_ratio"]):
                out.append(cap)
            else:
                out.append(random.choice(TEMPLATES).format(value=f"{k:.2f}"))
        return out

    def text(self, prompts):
        with torch.no_grad():
            emb, pooled, ids = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.accelerator.device,
                                                       max_sequence_length=512)
        dt = self.transformer.dtype
        return emb.to(dt), pooled.to(dt), ids.to(dt)

    def sample_noise(self, latents: torch.Tensor):
        """Noise (+ offset noise) and uniformly drawn training timesteps, in the release's order."""
        from diffusers.training_utils import compute_density_for_timestep_sampling

        noise = torch.randn_like(latents)
        if self.cfg["noise_offset"]:
            noise = noise + float(self.cfg["noise_offset"]) * torch.randn(
                (latents.shape[0], latents.shape[1], 1, 1), device=latents.device)
        u = compute_density_for_timestep_sampling(weighting_scheme=self.cfg["weighting_scheme"],
                                                  batch_size=latents.shape[0], logit_mean=0.0, logit_std=1.0,
                                                  mode_scale=1.29)
        idx = (u * self.noise_scheduler.config.num_train_timesteps).long()
        return noise, self.noise_scheduler.timesteps[idx].to(latents.device)

    def flow_loss(self, model, latents, ref_latents, noise, timesteps, prompt, pooled, text_ids, k_norm):
        """Rectified-flow loss of the adapter for given target/reference latents and noise."""
        from diffusers import FluxKontextPipeline as P
        from diffusers.training_utils import compute_loss_weighting_for_sd3

        dev = latents.device
        sched = self.noise_scheduler
        steps = sched.timesteps.to(dev)
        sigma = sched.sigmas.to(dev, latents.dtype)[[int((steps == t).nonzero()) for t in timesteps]]
        sigma = sigma.reshape(-1, 1, 1, 1)
        noisy = (1.0 - sigma) * latents + sigma * noise
        b, c, h, w = noisy.shape
        dt = self.transformer.dtype
        ids = P._prepare_latent_image_ids(b, h // 2, w // 2, dev, dt)
        packed = P._pack_latents(noisy, b, c, h, w)
        n_target = packed.shape[1]
        rb, rc, rh, rw = ref_latents.shape
        ref_ids = P._prepare_latent_image_ids(rb, rh // 2, rw // 2, dev, dt)
        ref_ids[..., 0] = 1  # reference-image tokens
        hidden = torch.cat([packed, P._pack_latents(ref_latents, rb, rc, rh, rw)], dim=1).to(dt)
        guidance = (torch.full((b,), float(self.cfg["guidance_scale"]), device=dev, dtype=dt)
                    if self.transformer.config.guidance_embeds else None)
        txt_ids = text_ids[0] if text_ids.ndim == 3 else text_ids
        pred = model(hidden, k_norm, (timesteps / 1000).to(dt), guidance, pooled, prompt, txt_ids,
                     torch.cat([ids, ref_ids], dim=0))
        pred = P._unpack_latents(pred[:, :n_target], height=h * self.vae_scale, width=w * self.vae_scale,
                                 vae_scale_factor=self.vae_scale)
        weighting = compute_loss_weighting_for_sd3(weighting_scheme=self.cfg["weighting_scheme"], sigmas=sigma)
        target = noise - latents
        loss = torch.mean((weighting.float() * (pred.float() - target.float()) ** 2).reshape(b, -1), 1)
        return loss.mean()

    def loss(self, model, batch: dict):
        ks = [float(k) for k in batch["k"]]
        targets = batch["target"]
        if targets is None:  # render online from input + depth
            ks = [random.uniform(float(self.cfg["K_min"]), float(self.cfg["K_max"])) for _ in ks]
            targets = self.train_set.render_targets(batch, ks)
        latents = self.encode(targets)
        noise, timesteps = self.sample_noise(latents)
        ref = self.encode(batch["images"])
        prompt, pooled, ids = self.text(self.prompts(batch["captions"], ks))
        k_norm = torch.tensor(ks, device=latents.device) / float(self.cfg["K_max"])
        loss = self.flow_loss(model, latents, ref, noise, timesteps, prompt, pooled, ids, k_norm)
        return loss, {"flow": float(loss.detach())}

    def after_backward(self, model) -> None:
        # The single-token bokeh attention gives to_k_dof an exactly zero gradient in the release;
        # its optimiser still applies weight decay, so zero (not missing) gradients keep that.
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def clip_parameters(self, model):
        return self.params

    def after_step(self, step: int) -> None:
        self.scheduler.step()

    def save(self, accelerator, model, path, epoch, step, cfg, with_optimizer=True) -> None:
        import os

        folder = os.path.splitext(path)[0]
        os.makedirs(folder, exist_ok=True)
        adapter = accelerator.unwrap_model(model).adapter
        adapter.save(os.path.join(folder, "bokeh_lora.bin"))
        if cfg["safetensors"]:
            adapter.save(os.path.join(folder, "bokeh_lora.safetensors"))
        if with_optimizer:
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "epoch": epoch, "step": step}, os.path.join(folder, "training_state.pt"))

    def resume(self, path: str) -> tuple[int, int]:
        import os

        folder = os.path.splitext(path)[0] if not os.path.isdir(path) else path
        self.adapter.load(os.path.join(folder, "bokeh_lora.bin"))
        st = torch.load(os.path.join(folder, "training_state.pt"), map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        return int(st["epoch"]) + 1, int(st["step"])

"""The bokeh adapter as a model patch on ComfyUI's own Flux (Apply Bokeh Adapter).

Two narrow seams per adapted layer, both ComfyUI extension points:

* the q/k low-rank maps: an object patch of the block's ``QKNorm`` (image stream of a double
  block, the whole sequence of a single block) that adds ``q_map(q)`` / ``k_map(k)`` to the flat
  head-major projections and then runs the original norm;
* the K term: a ``patches_replace["dit"]`` block patch that installs an
  ``optimized_attention_override`` adding each sample's bokeh vector to the block's attention
  output, then runs the block (or the replace patch that was there before).

Only the blocks' own submodules run and no model weight is read or copied, so bf16, fp8, GGUF and
lowvram models and user LoRAs keep working. The arithmetic is the core's
(:mod:`bokehdepth_core.stage1.arithmetic`). ComfyUI is imported inside functions only.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..bokehdepth_core import checks
from ..bokehdepth_core.stage1 import BokehAdapter, add_bokeh, for_batch, layer_slots, low_rank

MIN_COMFYUI = "0.3.60"  # first release with wrap_attn / transformer_options["optimized_attention_override"]
K_OPTION = "bokehdepth_k"  # transformer_options key: raw K per sampling run (float or one per batch element)
ADAPTER_OPTION = "bokehdepth_adapter"  # transformer_options key marking a MODEL patched by Apply Bokeh Adapter
APPLY_NODE = "BokehDepth Apply Bokeh Adapter"


class AdapterRuntime:
    """One applied adapter: its default K, the q/k maps on the compute device and dtype (made on
    first use, dropped when the model is offloaded) and the bokeh vectors of recent K values.

    Shared by every patch of one Apply and by all clones of the patched MODEL (``__deepcopy__``
    returns itself), so ComfyUI's ``clone()`` never copies the adapter; freed with the last clone.
    """

    def __init__(self, adapter: BokehAdapter, default_k: float):
        self.adapter = adapter
        self.default_k = float(default_k)
        self._maps: dict = {}  # (device, dtype) -> {layer: ((down, up, scale) | None, same for k)}
        self._values: dict = {}  # (ks, device) -> {layer: [N, hidden]}

    def __deepcopy__(self, memo):
        return self

    def qk_maps(self, index: int, device: torch.device, dtype: torch.dtype):
        key = (str(device), dtype)
        if key not in self._maps:
            self._maps = {key: {}}  # one placement at a time
        layer_maps = self._maps[key]
        if index not in layer_maps:
            layer_maps[index] = tuple(
                None if m is None else (m.down.weight.detach().to(device, dtype), m.up.weight.detach().to(device, dtype),
                                        m.scale)
                for m in self.adapter.qk_maps(index))
        return layer_maps[index]

    def bokeh_values(self, index: int, k, batch: int, device: torch.device) -> torch.Tensor:
        """Layer ``index``'s bokeh vectors for a model batch of ``batch`` (element j: K[j mod len])."""
        ks = tuple(checks.model_k_values(self.default_k if k is None else k, f"transformer_options['{K_OPTION}']"))
        key = (ks, str(device))
        if key not in self._values:
            if len(self._values) >= 8:
                self._values.clear()
            values = self.adapter.bokeh_values(list(ks), f"transformer_options['{K_OPTION}']")
            self._values[key] = {i: v.to(device) for i, v in values.items()}
        return for_batch(self._values[key][index], batch)

    def placements(self) -> set:
        """``(device, dtype)`` of the q/k maps held now (for diagnostics and tests)."""
        return {(device, dtype) for device, dtype in self._maps}

    def release(self, keep_device: Optional[torch.device] = None) -> None:
        """Drop copies that are not on ``keep_device`` (all of them when None)."""

        def kept(device: str) -> bool:
            if keep_device is None:
                return False
            held, keep = torch.device(device), torch.device(keep_device)
            return held.type == keep.type and (keep.index is None or held.index in (None, keep.index))

        self._maps = {k: v for k, v in self._maps.items() if kept(k[0])}
        self._values = {k: v for k, v in self._values.items() if kept(k[1])}


def _adapt_heads(x: torch.Tensor, maps) -> torch.Tensor:
    """``[B,H,L,hd]`` q or k plus the low-rank map of its flat ``[B,L,H*hd]`` projection."""
    down, up, scale = maps
    b, h, n, d = x.shape
    flat = x.transpose(1, 2).reshape(b, n, h * d)
    flat = flat + low_rank(flat, down, up, scale)
    return flat.reshape(b, n, h, d).transpose(1, 2)


class BokehQKNorm(torch.nn.Module):
    """Object patch for a block's ``QKNorm``: the q/k low-rank maps, then the original norm.

    Keeps the norm's children ``query_norm`` / ``key_norm`` under their own names, so weight
    patches (LoRAs) addressed to them still resolve.
    """

    def __init__(self, inner: torch.nn.Module, runtime: AdapterRuntime, index: int):
        super().__init__()
        for name in ("query_norm", "key_norm"):
            child = getattr(inner, name, None)
            if isinstance(child, torch.nn.Module):
                self.add_module(name, child)
        self.inner = (inner,)  # a tuple: not registered again as a child
        self.runtime = runtime
        self.index = index

    def forward(self, q, k, v):
        q_maps, k_maps = self.runtime.qk_maps(self.index, q.device, q.dtype)
        if q_maps is not None:
            q = _adapt_heads(q, q_maps)
        if k_maps is not None:
            k = _adapt_heads(k, k_maps)
        return self.inner[0](q, k, v)


def _override_adding(values: torch.Tensor, previous):
    def override(func, *args, **kwargs):
        out = previous(func, *args, **kwargs) if previous is not None else func(*args, **kwargs)
        return add_bokeh(out, values)

    return override


class BokehBlockPatch:
    """``patches_replace["dit"]`` patch for one block: the K term through the attention override."""

    def __init__(self, runtime: AdapterRuntime, index: int, previous=None):
        self.runtime = runtime
        self.index = index
        self.previous = previous

    def __deepcopy__(self, memo):
        return self

    def to(self, device_or_dtype):
        """ComfyUI moves patches with their model; offloading drops our device copies."""
        if isinstance(device_or_dtype, (torch.device, str)):
            self.runtime.release(torch.device(device_or_dtype))
        return self

    def __call__(self, args: dict, extra: dict) -> dict:
        options = dict(args.get("transformer_options") or {})
        img = args["img"]
        values = self.runtime.bokeh_values(self.index, options.get(K_OPTION), img.shape[0], img.device)
        options["optimized_attention_override"] = _override_adding(values, options.get("optimized_attention_override"))
        args = dict(args, transformer_options=options)
        if self.previous is not None:
            return self.previous(args, extra)
        return extra["original_block"](args)


# --------------------------------------------------------------------------- applying

def comfyui_version() -> str:
    try:
        import comfyui_version

        return str(comfyui_version.__version__)
    except (ImportError, AttributeError):
        return "unknown"


def check_comfyui() -> None:
    import comfy.ldm.modules.attention as attention

    if not hasattr(attention, "wrap_attn"):
        raise RuntimeError(f"{APPLY_NODE} needs ComfyUI {MIN_COMFYUI} or newer (the attention override hook it uses); "
                           f"this ComfyUI is {comfyui_version()}. Update ComfyUI.")


def flux_blocks(model):
    """(double blocks, single blocks, width) of a FLUX-shaped MODEL; a clear error otherwise."""
    base = getattr(model, "model", None)
    dm = getattr(base, "diffusion_model", None)
    double, single = getattr(dm, "double_blocks", None), getattr(dm, "single_blocks", None)
    if double is None or single is None or len(double) == 0 or not hasattr(double[0], "img_attn"):
        config = getattr(base, "model_config", None)
        kind = type(config).__name__ if config is not None else type(base if base is not None else model).__name__
        inner = type(dm).__name__ if dm is not None else "no diffusion model"
        raise ValueError(f"{APPLY_NODE}: the MODEL is a {kind} model ({inner}), not FLUX. The bokeh adapter needs "
                         "FLUX.1-Kontext-dev: load flux1-kontext-dev.safetensors with Load Diffusion Model (or an "
                         "fp8/GGUF copy)")
    width = int(getattr(dm, "hidden_size", 0) or double[0].hidden_size)
    return double, single, width


def _block_paths(stream: str, block: int) -> tuple[str, tuple[str, int]]:
    if stream == "double":
        return f"diffusion_model.double_blocks.{block}.img_attn.norm", ("double_block", block)
    return f"diffusion_model.single_blocks.{block}.norm", ("single_block", block)


def is_bokeh_adapter(obj) -> bool:
    """A :class:`BokehAdapter` from any copy of the core (the extension's, or an installed one)."""
    return isinstance(obj, BokehAdapter) or (
        type(obj).__name__ == "BokehAdapter" and all(hasattr(obj, a) for a in ("bokeh_values", "qk_maps", "blocks")))


def apply_bokeh_adapter(model, adapter: BokehAdapter, k: float):
    """A clone of ``model`` whose Flux computes the bokeh adapter; ``k`` is the default K."""
    if not is_bokeh_adapter(adapter):
        raise ValueError(f"{APPLY_NODE}: adapter must come from a BokehDepth Load Bokeh Adapter node, got {type(adapter).__name__}")
    default_k = checks.model_k_values(k, "k")[0]
    double, single, width = flux_blocks(model)
    check_comfyui()
    if adapter.hidden_dim != width or adapter.num_layers > len(double) + len(single):
        raise ValueError(f"{APPLY_NODE}: the adapter has {len(adapter.blocks)} layers of width {adapter.hidden_dim} "
                         f"(up to layer {adapter.num_layers - 1}), this Flux has {len(double)} double + {len(single)} "
                         f"single blocks of width {width}. {adapter.needs()}")
    runtime = AdapterRuntime(adapter, default_k)
    patched = model.clone()
    _remove_bokeh_patches(patched)  # applying again replaces the adapter, never stacks it
    replaced = patched.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    for slot in layer_slots(adapter.blocks, len(double)):
        norm_path, block_key = _block_paths(slot.stream, slot.block)
        if adapter.unfreeze_q or adapter.unfreeze_k:
            patched.add_object_patch(norm_path, BokehQKNorm(patched.get_model_object(norm_path), runtime, slot.index))
        patched.set_model_patch_replace(BokehBlockPatch(runtime, slot.index, replaced.get(block_key)), "dit", *block_key)
    patched.model_options["transformer_options"][ADAPTER_OPTION] = runtime
    return patched


def _remove_bokeh_patches(patched) -> None:
    """Undo an earlier Apply on this (freshly cloned, so privately owned) patcher."""
    for path, obj in list(patched.object_patches.items()):
        if isinstance(obj, BokehQKNorm):
            patched.object_patches[path] = obj.inner[0]
    options = patched.model_options["transformer_options"]
    options.pop(ADAPTER_OPTION, None)
    dit = options.get("patches_replace", {}).get("dit")
    if dit:
        kept = {key: (p.previous if isinstance(p, BokehBlockPatch) else p) for key, p in dit.items()}
        options["patches_replace"] = dict(options["patches_replace"],
                                          dit={key: p for key, p in kept.items() if p is not None})


def applied_adapter(model) -> Optional[AdapterRuntime]:
    """The adapter Apply Bokeh Adapter put on ``model`` (None for an unpatched MODEL)."""
    options = getattr(model, "model_options", None) or {}
    return (options.get("transformer_options") or {}).get(ADAPTER_OPTION)

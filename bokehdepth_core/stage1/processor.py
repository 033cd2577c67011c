"""The bokeh adapter on diffusers' ``FluxTransformer2DModel``: an attention processor per adapted
layer (the standalone path and the parity reference for the authors' processor)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .arithmetic import add_bokeh, for_batch, layer_slots


class ProcessorState:
    """What an adapter shares with its processors: the transformer it is attached to and the
    current per-layer bokeh vectors (a plain object: no module registration)."""

    def __init__(self):
        self.transformer = None
        self._values: Optional[dict[int, torch.Tensor]] = None
        self._by_device: dict = {}

    def set(self, values: Optional[dict[int, torch.Tensor]]):
        self._values = values
        self._by_device = {}

    def on(self, index: int, device: torch.device) -> Optional[torch.Tensor]:
        if self._values is None:
            return None
        key = str(device)
        if key not in self._by_device:
            self._by_device[key] = {i: v.to(device) for i, v in self._values.items()}
        return self._by_device[key][index]


def _projections(attn, hidden_states, encoder_hidden_states):
    if getattr(attn, "fused_projections", False):
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        eq = ek = ev = None
        if encoder_hidden_states is not None and hasattr(attn, "to_added_qkv"):
            eq, ek, ev = attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1)
        return query, key, value, eq, ek, ev
    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    eq = ek = ev = None
    if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
        eq = attn.add_q_proj(encoder_hidden_states)
        ek = attn.add_k_proj(encoder_hidden_states)
        ev = attn.add_v_proj(encoder_hidden_states)
    return query, key, value, eq, ek, ev


class BokehAttnProcessor:
    """diffusers Flux attention with the bokeh adapter; keeps diffusers' attention dispatch.

    A plain callable, not an ``nn.Module``: the transformer's module tree and state dict stay
    untouched, so offload hooks, LoRA loaders and ``detach()`` see the base model.
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(self, layer, state: ProcessorState, base, index: int):
        self.layer = layer
        self.state = state
        self.base = base
        self.index = index
        self._attention_backend = getattr(base, "_attention_backend", None)
        self._parallel_config = getattr(base, "_parallel_config", None)

    def _attend(self, query, key, value, mask, rope):
        """Joint attention on ``[B,S,H,D]`` through diffusers' dispatch (SDPA, flash, ...)."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.embeddings import apply_rotary_emb

        if rope is not None:
            query = apply_rotary_emb(query, rope, sequence_dim=1)
            key = apply_rotary_emb(key, rope, sequence_dim=1)
        extra = {"parallel_config": self._parallel_config} if self._parallel_config is not None else {}
        return dispatch_attention_fn(query, key, value, attn_mask=mask, backend=self._attention_backend, **extra)

    def _ensure_device(self, device: torch.device):
        w = self.layer.to_v_dof.down.weight
        if w.device != device:  # offloaded pipelines: follow the activations once, then stay
            self.layer.to(device)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        layer = self.layer
        self._ensure_device(hidden_states.device)
        query, key, value, eq, ek, ev = _projections(attn, hidden_states, encoder_hidden_states)
        if layer.to_q_adp is not None:
            query = query + layer.to_q_adp(query)
        if layer.to_k_adp is not None:
            key = key + layer.to_k_adp(key)

        head_dim = getattr(attn, "head_dim", None) or query.shape[-1] // attn.heads
        query = attn.norm_q(query.unflatten(-1, (-1, head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, head_dim)))
        value = value.unflatten(-1, (-1, head_dim))
        if attn.added_kv_proj_dim is not None and eq is not None:
            eq = attn.norm_added_q(eq.unflatten(-1, (-1, head_dim)))
            ek = attn.norm_added_k(ek.unflatten(-1, (-1, head_dim)))
            ev = ev.unflatten(-1, (-1, head_dim))
            query = torch.cat([eq, query], dim=1)
            key = torch.cat([ek, key], dim=1)
            value = torch.cat([ev, value], dim=1)
        out = self._attend(query, key, value, attention_mask, image_rotary_emb).flatten(2, 3).to(query.dtype)

        values = self.state.on(self.index, out.device)
        if values is not None:
            out = add_bokeh(out, for_batch(values, out.shape[0]))

        if encoder_hidden_states is not None:
            n_txt = encoder_hidden_states.shape[1]
            txt, img = out.split_with_sizes([n_txt, out.shape[1] - n_txt], dim=1)
            img = attn.to_out[1](attn.to_out[0](img.contiguous()))
            txt = attn.to_add_out(txt.contiguous())
            return img, txt
        return out


# --------------------------------------------------------------------------- attaching

def attention_layers(transformer) -> list[tuple[str, nn.Module]]:
    """``(processor name, attention module)`` of every attention layer, in the adapter's index order."""
    double = getattr(transformer, "transformer_blocks", None)
    single = getattr(transformer, "single_transformer_blocks", None)
    if double is None or single is None:
        raise ValueError(f"transformer: a {type(transformer).__name__} has no double/single-stream blocks; pass a "
                         "diffusers FluxTransformer2DModel (FLUX.1-Kontext-dev)")
    prefix = {"double": "transformer_blocks", "single": "single_transformer_blocks"}
    out = []
    for slot in layer_slots(range(len(double) + len(single)), len(double)):
        name = f"{prefix[slot.stream]}.{slot.block}.attn"
        out.append((name + ".processor", transformer.get_submodule(name)))
    return out


def transformer_geometry(transformer) -> tuple[int, int]:
    """(number of attention layers, their width) of a diffusers Flux transformer."""
    layers = attention_layers(transformer)
    if not layers:
        raise ValueError("transformer: no attention layers found; pass a diffusers FluxTransformer2DModel")
    attn = layers[0][1]
    return len(layers), int(getattr(attn, "inner_dim", None) or attn.to_q.out_features)


def module_dtype(module: nn.Module, default=torch.float32) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return default


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def install(adapter, transformer, dtype="auto") -> None:
    """Swap ``adapter``'s processors into ``transformer`` (see ``BokehAdapter.attach_to``)."""
    state = adapter._state
    if state.transformer is transformer:
        return
    if state.transformer is not None:
        uninstall(adapter)
    layers = attention_layers(transformer)
    count, width = transformer_geometry(transformer)
    if count < adapter.num_layers or width != adapter.hidden_dim:
        raise ValueError(f"adapter: built for {adapter.num_layers} attention layers of width {adapter.hidden_dim}, "
                         f"but this transformer has {count} of width {width}. {adapter.needs()}; load a "
                         "FLUX.1-Kontext-dev pipeline")
    adapter.grow_to(count)
    procs = transformer.attn_processors
    for proc in procs.values():  # another adapter there: put its base processors back first
        if isinstance(proc, BokehAttnProcessor) and proc.state.transformer is transformer:
            proc.state.transformer = None
    procs = {n: (p.base if isinstance(p, BokehAttnProcessor) else p) for n, p in procs.items()}
    if dtype == "auto":
        dtype = module_dtype(transformer)
    dev = module_device(transformer)
    if dtype is not None or dev.type != "meta":
        adapter.to(device=dev if dev.type != "meta" else None, dtype=dtype)
    new = dict(procs)
    for i, (name, _attn) in enumerate(layers):
        if i in adapter.blocks:
            new[name] = BokehAttnProcessor(adapter.adapter_modules[i], state, procs[name], i)
    transformer.set_attn_processor(new)
    state.transformer = transformer
    if adapter.k_values is not None:
        adapter.set_k(adapter.k_values)


def uninstall(adapter) -> None:
    """Put the transformer's original processors back (the base model, exactly)."""
    state = adapter._state
    transformer = state.transformer
    if transformer is None:
        return
    restored = {n: (p.base if isinstance(p, BokehAttnProcessor) and p.state is state else p)
                for n, p in transformer.attn_processors.items()}
    transformer.set_attn_processor(restored)
    state.transformer = None

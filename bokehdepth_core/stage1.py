"""Stage-1: FLUX.1-Kontext with the BokehDepth bokeh adapter -> a K-calibrated bokeh stack.

The adapter swaps an attention processor into every selected attention layer of diffusers'
``FluxTransformer2DModel`` (19 double-stream then 38 single-stream blocks, in
``attn_processors`` order; index ``i`` of ``adapter_modules.{i}``). Its state dict is exactly the
authors' release (``bokeh_lora.bin``): ``embedding_layer.{0,2}.*`` and
``adapter_modules.{i}.{to_k_dof,to_v_dof,to_q_adp,to_k_adp}.{down,up}.weight``.

Inside each processor (paper Sec. 3, the authors' ``BokehFluxAttnProcessor2_0``)::

    q = to_q(h) + to_q_adp(to_q(h));  k = to_k(h) + to_k_adp(to_k(h))   (before heads/RMS norm)
    out = JointAttention(q, k, v) + Attention(q, to_k_dof(e), to_v_dof(e))
    e = embedding_layer(clamp(K, 1, 30) / 30)

(The release's lora_scale / bokeh_scale factors are 1 and none of its scripts change them.)

Sampling follows the authors' stack script: all K in one pipeline call, one CPU generator per
frame seeded alike, the dof_cond prompt template, the reference resized (Lanczos) to multiples of
16, Kontext auto-resize off, true CFG off, guidance 7.0.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .optics import K_CONDITION_RANGE, normalize_k

log = logging.getLogger("BokehDepth")

PROMPT_TEMPLATE = (
    "Set dof_cond = {value:.2f} (stronger background defocus); "
    "preserve subject sharpness; keep composition, lighting, and colors unchanged."
)
RELEASE_BLOCKS = "0-56"
RELEASE_LAYERS = 57  # FLUX.1: 19 double-stream + 38 single-stream attention layers
RELEASE_RANK = 128
RELEASE_CONTEXT_DIM = 768
EMBED_HIDDEN = 64
ADAPTER_FILE = "bokeh_lora.bin"
ADAPTER_SOURCE = "the BokehDepth release (github.com/fogradio/BokehDepth, weights/bokeh_lora.bin)"

ImageLike = Union[Image.Image, torch.Tensor, np.ndarray]


# --------------------------------------------------------------------------- block ids

def parse_block_ids(blocks: Union[str, Iterable[int], None], count: int) -> list[int]:
    """Block ids like the release's ``--block_ids`` ("0-56", "0-3,19,20") over ``count`` layers."""
    if blocks is None or (isinstance(blocks, str) and blocks.strip().lower() in ("", "all")):
        return list(range(count))
    ids: list[int] = []
    if isinstance(blocks, str):
        for part in blocks.split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo:
                    raise ValueError(f"blocks: range '{part}' runs backwards; write it as '{hi}-{lo}'")
                ids.extend(range(lo, hi + 1))
            elif part.isdigit():
                ids.append(int(part))
            else:
                raise ValueError(f"blocks: cannot read '{part}'; use ids and ranges like '0-56' or '0-3,19'")
    else:
        ids = [int(i) for i in blocks]
    bad = [i for i in ids if not 0 <= i < count]
    if bad:
        raise ValueError(f"blocks: ids {bad} are out of range; this transformer has {count} attention layers "
                         f"(0-{count - 1})")
    return sorted(set(ids))


# --------------------------------------------------------------------------- modules

class LowRank(nn.Module):
    """``up(down(x)) * alpha / rank`` with bias-free maps, computed in its own dtype, cast back."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: Optional[float]):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        self.rank = rank
        self.alpha = alpha
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)  # a fresh adapter leaves the model unchanged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.down(x.to(self.down.weight.dtype)))
        if self.alpha is not None:
            out = out * (self.alpha / self.rank)
        return out.to(x.dtype)


class BokehLayer(nn.Module):
    """The weights of one attention layer's bokeh processor (release names)."""

    def __init__(self, hidden_dim: int, context_dim: int, rank: int, alpha: Optional[float],
                 unfreeze_q: bool, unfreeze_k: bool):
        super().__init__()
        self.to_k_dof = LowRank(context_dim, hidden_dim, rank, alpha)
        self.to_v_dof = LowRank(context_dim, hidden_dim, rank, alpha)
        self.to_q_adp = LowRank(hidden_dim, hidden_dim, rank, alpha) if unfreeze_q else None
        self.to_k_adp = LowRank(hidden_dim, hidden_dim, rank, alpha) if unfreeze_k else None


class _Condition:
    """State shared by an adapter and its processors (a plain object: no module registration)."""

    def __init__(self):
        self.embedding: Optional[torch.Tensor] = None  # [B, context_dim]
        self._by_device: dict = {}
        self.transformer = None

    def set(self, embedding: Optional[torch.Tensor]):
        self.embedding = embedding
        self._by_device = {}

    def on(self, device: torch.device) -> Optional[torch.Tensor]:
        if self.embedding is None:
            return None
        key = str(device)
        if key not in self._by_device:
            self._by_device[key] = self.embedding.to(device)
        return self._by_device[key]


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

    def __init__(self, layer: BokehLayer, condition: _Condition, base, index: int):
        self.layer = layer
        self.condition = condition
        self.base = base
        self.index = index
        self._attention_backend = getattr(base, "_attention_backend", None)
        self._parallel_config = getattr(base, "_parallel_config", None)

    def _attend(self, query, key, value, mask, rope):
        """Joint attention on ``[B,S,H,D]`` through diffusers' dispatch (SDPA, flash, ...)."""
        from diffusers.models.embeddings import apply_rotary_emb

        try:
            from diffusers.models.attention_dispatch import dispatch_attention_fn
        except ImportError:  # diffusers < 0.35: its processors run SDPA in the [B,H,S,D] layout
            q, k, v = (t.transpose(1, 2) for t in (query, key, value))
            if rope is not None:
                q, k = apply_rotary_emb(q, rope), apply_rotary_emb(k, rope)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
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
        layer, cond = self.layer, self.condition
        self._ensure_device(hidden_states.device)
        query, key, value, eq, ek, ev = _projections(attn, hidden_states, encoder_hidden_states)
        # the release adapts q/k on the flat projections, before the head split and RMS norms
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

        emb = cond.on(out.device)
        if emb is not None:
            # The bokeh attention has ONE key per sample (the K token) and no mask, so its softmax
            # is exactly 1 and it returns that token's value for every query: the term is
            # to_v_dof(e) added to every token (text included). to_k_dof cannot change it, so we
            # skip that projection and the second attention call.
            bokeh = layer.to_v_dof(emb)
            if bokeh.shape[0] != out.shape[0]:
                if bokeh.shape[0] != 1:
                    raise ValueError(f"set_k: got {bokeh.shape[0]} K values for a batch of {out.shape[0]}; "
                                     "give one K per batch element (or a single K for all)")
            out = out + bokeh.to(out.dtype)[:, None, :]

        if encoder_hidden_states is not None:
            n_txt = encoder_hidden_states.shape[1]
            txt, img = out.split_with_sizes([n_txt, out.shape[1] - n_txt], dim=1)
            img = attn.to_out[1](attn.to_out[0](img.contiguous()))
            txt = attn.to_add_out(txt.contiguous())
            return img, txt
        return out


# --------------------------------------------------------------------------- adapter

def _attention_layers(transformer) -> list[tuple[str, nn.Module]]:
    names = list(transformer.attn_processors.keys())
    return [(n, transformer.get_submodule(n[: -len(".processor")])) for n in names]


def _layer_dim(attn) -> int:
    return int(getattr(attn, "inner_dim", None) or attn.to_q.out_features)


def _module_dtype(module: nn.Module, default=torch.float32) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return default


def _module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


class BokehAdapter(nn.Module):
    """The release's ``BokehFluxControlAdapter`` state: a K embedding and one layer per attention.

    ``adapter_modules`` spans every attention layer of the transformer; unselected ones are empty
    placeholders, so a partial block selection keeps the global index (as the release does).
    """

    def __init__(self, num_layers: int, hidden_dim: int, blocks: Sequence[int], rank: int = RELEASE_RANK,
                 alpha: Optional[float] = RELEASE_RANK, unfreeze_q: bool = True, unfreeze_k: bool = True,
                 context_dim: int = RELEASE_CONTEXT_DIM):
        super().__init__()
        self.num_layers, self.hidden_dim, self.context_dim = int(num_layers), int(hidden_dim), int(context_dim)
        self.blocks = sorted(set(int(b) for b in blocks))
        self.rank, self.alpha = int(rank), alpha
        self.unfreeze_q, self.unfreeze_k = bool(unfreeze_q), bool(unfreeze_k)
        self.embedding_layer = nn.Sequential(nn.Linear(1, EMBED_HIDDEN), nn.ReLU(), nn.Linear(EMBED_HIDDEN, context_dim))
        sel = set(self.blocks)
        self.adapter_modules = nn.ModuleList([
            BokehLayer(hidden_dim, context_dim, rank, alpha, unfreeze_q, unfreeze_k) if i in sel else nn.Module()
            for i in range(num_layers)
        ])
        self._cond = _Condition()
        self._processors: list[BokehAttnProcessor] = []
        self.k_values: Optional[list[float]] = None

    # ----------------------------------------------------------------- construction

    @classmethod
    def attach(cls, transformer, blocks: Union[str, Iterable[int]] = RELEASE_BLOCKS, rank: int = RELEASE_RANK,
               alpha: Optional[float] = RELEASE_RANK, unfreeze_q: bool = True, unfreeze_k: bool = True,
               context_dim: int = RELEASE_CONTEXT_DIM, dtype: Optional[torch.dtype] = None) -> "BokehAdapter":
        """Build an adapter for ``transformer`` (on its device, in its dtype unless given) and attach it.

        ``blocks`` index the transformer's own ordered attention layers; on a smaller transformer
        the release default "0-56" is cut to the layers that exist.
        """
        layers = _attention_layers(transformer)
        if not layers:
            raise ValueError("transformer: no attention layers found; pass a diffusers FluxTransformer2DModel")
        if isinstance(blocks, str) and blocks.strip() == RELEASE_BLOCKS and len(layers) < RELEASE_LAYERS:
            blocks = f"0-{len(layers) - 1}"
        ids = parse_block_ids(blocks, len(layers))
        device = _module_device(transformer)
        dtype = dtype or _module_dtype(transformer)
        with torch.device(device):
            adapter = cls(len(layers), _layer_dim(layers[0][1]), ids, rank, alpha, unfreeze_q, unfreeze_k, context_dim)
        adapter.to(dtype=dtype)
        return adapter.attach_to(transformer, dtype=None)

    @classmethod
    def from_file(cls, path: str, alpha: Optional[float] = None, map_location="cpu") -> "BokehAdapter":
        """An unattached adapter shaped and filled from a release file (rank, blocks read from it).

        ``alpha`` is not stored in the file; None means alpha = rank (the release: 128/128).
        """
        sd = _canonical_keys(read_state_dict(path, map_location), path)
        geo = _geometry(sd, path)
        with torch.device("meta"):
            adapter = cls(geo["num_layers"], geo["hidden_dim"], geo["blocks"], geo["rank"],
                          geo["rank"] if alpha is None else alpha, geo["unfreeze_q"], geo["unfreeze_k"],
                          geo["context_dim"])
        adapter.to_empty(device=map_location)
        adapter._load_checked(sd, path)
        adapter.source = os.path.basename(path)
        return adapter

    # ----------------------------------------------------------------- weights

    def load(self, path: str) -> "BokehAdapter":
        """Load a release file (.bin/.pt pickle or .safetensors; ``adapter_modules.{i}.*`` or bare ``{i}.*``)."""
        sd = _canonical_keys(read_state_dict(path, "cpu"), path)
        self._load_checked(sd, path)
        self.source = os.path.basename(path)
        return self

    def _load_checked(self, sd: dict, path: str):
        own = self.state_dict()
        geo = _geometry(sd, path)
        name = os.path.basename(str(path))
        if geo["rank"] != self.rank:
            raise ValueError(f"adapter file '{name}' has rank {geo['rank']} but the adapter was built with rank "
                             f"{self.rank}; attach with rank={geo['rank']} (or load it with BokehAdapter.from_file)")
        if geo["context_dim"] != self.context_dim:
            raise ValueError(f"adapter file '{name}' has a {geo['context_dim']}-d K embedding, the adapter "
                             f"{self.context_dim}-d; attach with context_dim={geo['context_dim']}")
        if geo["hidden_dim"] != self.hidden_dim or geo["num_layers"] > self.num_layers:
            raise ValueError(
                f"adapter file '{name}' is for another architecture: it has {len(geo['blocks'])} adapter layers "
                f"(indices up to {geo['num_layers'] - 1}) of width {geo['hidden_dim']}, this transformer has "
                f"{self.num_layers} attention layers of width {self.hidden_dim}. The release file "
                f"{ADAPTER_FILE} needs FLUX.1-Kontext-dev (19 double + 38 single blocks, width 3072)")
        if geo["blocks"] != self.blocks:
            raise ValueError(f"adapter file '{name}' covers blocks {_compress(geo['blocks'])} but the adapter was "
                             f"attached to blocks {_compress(self.blocks)}; attach with blocks='{_compress(geo['blocks'])}'")
        missing = sorted(set(own) - set(sd))
        extra = sorted(set(sd) - set(own))
        if missing or extra:
            raise ValueError(f"adapter file '{name}' does not match the adapter layout: missing {missing[:4]}"
                             f"{' ...' if len(missing) > 4 else ''}, unexpected {extra[:4]}{' ...' if len(extra) > 4 else ''}"
                             "; check unfreeze_q/unfreeze_k")
        for k, v in own.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise ValueError(f"adapter file '{name}': {k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}")
        self.load_state_dict(sd, strict=True)
        if self.k_values is not None:
            self.set_k(self.k_values)

    def save(self, path: str, bare_keys: bool = False) -> str:
        """Write the state dict as .safetensors or a torch pickle (by extension)."""
        sd = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if bare_keys:
            sd = {(k[len("adapter_modules."):] if k.startswith("adapter_modules.") else k): v for k, v in sd.items()}
        if str(path).endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(sd, path)
        else:
            torch.save(sd, path)
        return path

    # ----------------------------------------------------------------- attaching

    @property
    def transformer(self):
        return self._cond.transformer

    def attach_to(self, transformer, dtype: Optional[torch.dtype] = "auto") -> "BokehAdapter":
        """Install this adapter's processors in ``transformer`` (idempotent).

        Any other bokeh adapter attached there is detached first. ``dtype="auto"`` casts the adapter
        to the transformer's dtype (what the release does at inference); None keeps its own.
        """
        if self._cond.transformer is transformer:
            return self
        if self._cond.transformer is not None:
            self.detach()
        layers = _attention_layers(transformer)
        if len(layers) < self.num_layers or _layer_dim(layers[0][1]) != self.hidden_dim:
            raise ValueError(
                f"adapter: built for {self.num_layers} attention layers of width {self.hidden_dim}, but this "
                f"transformer has {len(layers)} of width {_layer_dim(layers[0][1])}. The bokeh adapter "
                f"({ADAPTER_FILE}) is for FLUX.1-Kontext-dev (19 double + 38 single blocks, width 3072); "
                "load a FLUX.1-Kontext-dev pipeline")
        while len(self.adapter_modules) < len(layers):  # a file's highest block may not be the last layer
            self.adapter_modules.append(nn.Module())
        self.num_layers = len(layers)
        procs = transformer.attn_processors
        for proc in procs.values():  # another adapter there: put its base processors back first
            if isinstance(proc, BokehAttnProcessor) and proc.condition.transformer is transformer:
                proc.condition.transformer = None
        procs = {n: (p.base if isinstance(p, BokehAttnProcessor) else p) for n, p in procs.items()}
        if dtype == "auto":
            dtype = _module_dtype(transformer)
        dev = _module_device(transformer)
        if dtype is not None or dev.type != "meta":
            self.to(device=dev if dev.type != "meta" else None, dtype=dtype)
        self._processors = []
        new = {}
        for i, (name, _attn) in enumerate(layers):
            if i in self.blocks:
                proc = BokehAttnProcessor(self.adapter_modules[i], self._cond, procs[name], i)
                self._processors.append(proc)
                new[name] = proc
            else:
                new[name] = procs[name]
        transformer.set_attn_processor(new)
        self._cond.transformer = transformer
        if self.k_values is not None:
            self.set_k(self.k_values)
        return self

    def detach(self) -> None:
        """Put the transformer's original processors back (the base model, exactly)."""
        transformer = self._cond.transformer
        if transformer is None:
            return
        procs = transformer.attn_processors
        restored = {n: (p.base if isinstance(p, BokehAttnProcessor) and p.condition is self._cond else p)
                    for n, p in procs.items()}
        transformer.set_attn_processor(restored)
        self._cond.transformer = None
        self._processors = []

    # ----------------------------------------------------------------- conditioning

    def set_k(self, k_values: Union[float, Sequence[float], torch.Tensor]) -> None:
        """Condition on raw K values, one per batch element (clamped to [1, 30] with a warning)."""
        ks = [float(v) for v in (k_values.flatten().tolist() if isinstance(k_values, torch.Tensor)
                                 else ([k_values] if isinstance(k_values, (int, float)) else k_values))]
        if not ks:
            raise ValueError("k_values: empty; give at least one K (e.g. [10, 20, 30])")
        if not all(math.isfinite(k) for k in ks):
            raise ValueError(f"k_values: must be finite numbers, got {ks}")
        lo, hi = K_CONDITION_RANGE
        out = [k for k in ks if not lo <= k <= hi]
        if out:
            log.warning("K values %s are outside the adapter's trained range [%g, %g]; the conditioning clamps "
                        "them (prompts keep the raw values)", out, lo, hi)
        self.k_values = ks
        emb_layer = self.embedding_layer
        w = emb_layer[0].weight
        if w.device.type == "meta":
            self._cond.set(None)
            return
        x = torch.tensor([[normalize_k(k)] for k in ks], dtype=w.dtype, device=w.device)
        with torch.no_grad():
            self._cond.set(emb_layer(x))

    def clear(self) -> None:
        """Drop the K conditioning; the q/k low-rank adapters stay active (as the release after sampling)."""
        self.k_values = None
        self._cond.set(None)

    def extra_repr(self) -> str:
        return (f"layers={self.num_layers}, blocks={_compress(self.blocks)}, rank={self.rank}, alpha={self.alpha}, "
                f"hidden={self.hidden_dim}, context={self.context_dim}, q={self.unfreeze_q}, k={self.unfreeze_k}")


def _compress(ids: Sequence[int]) -> str:
    ids = sorted(ids)
    if not ids:
        return ""
    parts, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def read_state_dict(path: str, map_location="cpu") -> dict:
    """A tensor dict from .safetensors or a torch pickle (``weights_only=True``)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"adapter file not found: {path}. Get {ADAPTER_FILE} from {ADAPTER_SOURCE} and put "
                                "it in the 'bokehdepth' model folder")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device=str(map_location))
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # not a torch pickle, or one holding code objects
        raise ValueError(f"adapter file '{os.path.basename(path)}' could not be read as a weights-only torch "
                         f"pickle ({exc.__class__.__name__}); use the released {ADAPTER_FILE} or a .safetensors") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"adapter file '{os.path.basename(path)}' does not hold a state dict of tensors")
    return obj


def _canonical_keys(sd: dict, path: str) -> dict:
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.split(".", 1)[0].isdigit():
            k = "adapter_modules." + k
        out[k] = v
    if not any(k.startswith("adapter_modules.") for k in out):
        raise ValueError(f"adapter file '{os.path.basename(str(path))}' has no bokeh adapter layers "
                         f"(no 'adapter_modules.*' or '{{i}}.*' keys); it is not a BokehDepth Stage-1 adapter")
    return out


def _geometry(sd: dict, path: str) -> dict:
    """Rank, widths, layer indices and q/k flags read off a canonical state dict."""
    name = os.path.basename(str(path))
    idx = sorted({int(k.split(".")[1]) for k in sd if k.startswith("adapter_modules.")})
    first = idx[0]
    try:
        down = sd[f"adapter_modules.{first}.to_v_dof.down.weight"]
        up = sd[f"adapter_modules.{first}.to_v_dof.up.weight"]
    except KeyError:
        raise ValueError(f"adapter file '{name}' lacks to_v_dof weights; it is not a BokehDepth Stage-1 adapter") from None
    if "embedding_layer.2.weight" not in sd:
        raise ValueError(f"adapter file '{name}' lacks the K embedding (embedding_layer.*)")
    return dict(
        blocks=idx, num_layers=idx[-1] + 1, rank=int(down.shape[0]), context_dim=int(down.shape[1]),
        hidden_dim=int(up.shape[0]),
        unfreeze_q=f"adapter_modules.{first}.to_q_adp.down.weight" in sd,
        unfreeze_k=f"adapter_modules.{first}.to_k_adp.down.weight" in sd,
    )


# --------------------------------------------------------------------------- sampling

def _to_pil(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"image: one picture per stack, got a batch of {arr.shape[0]}; sample each image "
                             "separately (the node does this for batches)")
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"image: expected [1,H,W,3] or [H,W,3], got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        # rounding gives back the 8-bit file a ComfyUI IMAGE came from (the release reads PIL files)
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr[..., :3])


def size_multiple(pipe) -> int:
    """Kontext packs 2x2 latent patches: images align to 2 x the VAE factor (16 for FLUX)."""
    return int(getattr(pipe, "vae_scale_factor", 8)) * 2


def prepare_reference(image: ImageLike, multiple: int = 16) -> Image.Image:
    """The reference as the release feeds it: Lanczos-resized (not cropped) to multiples of 16."""
    pil = _to_pil(image)
    w, h = pil.size
    if w < multiple or h < multiple:
        raise ValueError(f"image: {w}x{h} px is too small; Stage-1 needs at least {multiple}x{multiple} px")
    nw, nh = (w // multiple) * multiple, (h // multiple) * multiple
    return pil if (nw, nh) == (w, h) else pil.resize((nw, nh), Image.LANCZOS)


def build_prompt(template: str, k: float) -> str:
    aperture = max(1.0, 30.0 / k) if k > 0 else float("inf")
    try:
        return template.format(value=k, K_abs=k, aperture=aperture)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"prompt_template: cannot fill it ({exc}); use {{value}}, {{K_abs}} or {{aperture}}") from None


def _check_k_list(k_values) -> list[float]:
    if isinstance(k_values, (int, float)):
        k_values = [k_values]
    try:
        ks = [float(k) for k in k_values]
    except (TypeError, ValueError):
        raise ValueError(f"k_values: expected a list of numbers, got {k_values!r}") from None
    if not ks:
        raise ValueError("k_values: empty list; give at least one K, e.g. '10, 20, 30' (a Bokeh K List node)")
    if not all(math.isfinite(k) for k in ks):
        raise ValueError(f"k_values: must be finite numbers, got {ks}")
    return ks


def sample_bokeh_stack(pipe, adapter: BokehAdapter, image: ImageLike, k_values: Sequence[float],
                       num_inference_steps: int = 10, guidance_scale: float = 7.0, seed: int = 42,
                       prompt_template: Optional[str] = None, color_transfer: bool = False,
                       callback: Optional[Callable[[int, int], None]] = None,
                       max_sequence_length: int = 512) -> list[Image.Image]:
    """One bokeh stack (a PIL image per K) from one picture, as the authors' stack script makes it.

    All K go through ONE pipeline call (batch = len(k_values)), each frame with its own CPU
    generator seeded with ``seed``; prompts carry the raw K, the adapter the clamped one.
    ``callback(done, total)`` runs after every denoising step and may raise to cancel.
    """
    return _stack_and_reference(pipe, adapter, image, k_values, num_inference_steps, guidance_scale, seed,
                                prompt_template, color_transfer, callback, max_sequence_length)[0]


def _run_pipeline(pipe, ref: Image.Image, ks: list[float], steps: int, guidance_scale: float, seed: int,
                  prompt_template: Optional[str], callback, max_sequence_length: int = 512) -> list[Image.Image]:
    """The release's pipeline call for one stack (whatever processors the transformer holds)."""
    w, h = ref.size
    template = PROMPT_TEMPLATE if prompt_template is None else prompt_template

    def on_step(_pipe, i, _t, tensors):
        if callback is not None:
            callback(i + 1, steps)
        return {}

    result = pipe(
        prompt=[build_prompt(template, k) for k in ks], image=ref, height=h, width=w, num_inference_steps=steps,
        guidance_scale=float(guidance_scale), max_area=h * w, true_cfg_scale=1.0, negative_prompt=None,
        generator=[torch.Generator(device="cpu").manual_seed(int(seed)) for _ in ks],
        max_sequence_length=int(max_sequence_length), _auto_resize=False,
        callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=[],
    )
    return list(result.images)


def _stack_and_reference(pipe, adapter, image, k_values, num_inference_steps, guidance_scale, seed,
                         prompt_template, color_transfer, callback, max_sequence_length=512):
    """:func:`sample_bokeh_stack`, also returning the 16-aligned reference it sampled from."""
    ks = _check_k_list(k_values)
    steps = int(num_inference_steps)
    if steps < 1:
        raise ValueError(f"num_inference_steps: must be >= 1, got {num_inference_steps}")
    source = _to_pil(image)
    ref = prepare_reference(source, size_multiple(pipe))
    adapter.attach_to(pipe.transformer)
    adapter.set_k(ks)
    try:
        frames = _run_pipeline(pipe, ref, ks, steps, guidance_scale, seed, prompt_template, callback,
                               max_sequence_length)
    finally:
        adapter.clear()
    if color_transfer:
        from .color import color_transfer_lab

        # the release matches colours to the reference before its 16-px alignment
        frames = [color_transfer_lab(source, f) for f in frames]
    return frames, ref


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)


def sample_stacks(pipe, adapter: BokehAdapter, images: torch.Tensor, k_values: Sequence[float],
                  num_inference_steps: int = 10, guidance_scale: float = 7.0, seed: int = 42,
                  prompt_template: Optional[str] = None, color_transfer: bool = False,
                  callback: Optional[Callable[[int, int], None]] = None):
    """One stack per image of a ``[B,H,W,3]`` batch -> :class:`BokehStack` (reference = the
    16-aligned input the frames were made from). ``callback`` counts steps over the whole batch."""
    from .types import BokehStack

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"image: expected an IMAGE batch [B,H,W,3], got {getattr(images, 'shape', type(images))}")
    ks = _check_k_list(k_values)
    steps = int(num_inference_steps)
    total = images.shape[0] * steps
    frames, refs = [], []
    for b in range(images.shape[0]):
        def step(done, _n, offset=b * steps):
            if callback is not None:
                callback(offset + done, total)

        pil, ref = _stack_and_reference(pipe, adapter, images[b:b + 1, ..., :3], ks, steps, guidance_scale, seed,
                                        prompt_template, color_transfer, step)
        frames.append(torch.stack([_pil_to_tensor(f) for f in pil]))
        refs.append(_pil_to_tensor(ref))
    meta = dict(seed=int(seed), steps=steps, guidance_scale=float(guidance_scale), color_transfer=bool(color_transfer),
                prompt_template=prompt_template or PROMPT_TEMPLATE, adapter=getattr(adapter, "source", None))
    return BokehStack(frames=torch.stack(frames), k_values=torch.tensor([ks] * len(frames), dtype=torch.float32),
                      reference=torch.stack(refs), source="stage1", meta=meta)


# --------------------------------------------------------------------------- loading

def _dtype_kwarg() -> str:
    """Newer diffusers renamed ``torch_dtype`` to ``dtype``; older ones only know the former."""
    try:
        from diffusers.utils.deprecation_utils import _TORCH_DTYPE_DEPRECATION_MESSAGE  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def load_kontext_pipeline(path: str, dtype: torch.dtype = torch.bfloat16, device="cuda", offload: str = "none",
                          transformer_file: Optional[str] = None,
                          loras: Optional[Sequence[tuple[str, float]]] = None,
                          vae_tiling: bool = True, vae_slicing: bool = True):
    """FluxKontextPipeline from a local diffusers folder; never reaches for the hub.

    transformer_file: a single-file FLUX.1-Kontext transformer (e.g. ComfyUI's
    ``flux1-kontext-dev.safetensors``) read with the folder's transformer config.
    offload: "none" (all on ``device``), "model" (model CPU offload) or "sequential".
    loras: ``[(path, weight), ...]`` user LoRAs through diffusers' loader (peft).
    """
    from diffusers import FluxKontextPipeline, FluxTransformer2DModel

    if offload not in ("none", "model", "sequential"):
        raise ValueError(f"offload: must be 'none', 'model' or 'sequential', got {offload!r}")
    if not os.path.isfile(os.path.join(str(path), "model_index.json")):
        raise FileNotFoundError(
            f"no diffusers pipeline at '{path}' (model_index.json missing). Put a FLUX.1-Kontext-dev folder in "
            "diffusers format (model_index.json, transformer/, vae/, text_encoder/, text_encoder_2/, tokenizer/, "
            "tokenizer_2/, scheduler/) in ComfyUI's models/diffusers folder")
    kwargs = {}
    dt = {_dtype_kwarg(): dtype}
    if transformer_file:
        if not os.path.isfile(transformer_file):
            raise FileNotFoundError(f"transformer_file: '{transformer_file}' not found")
        try:
            kwargs["transformer"] = FluxTransformer2DModel.from_single_file(
                transformer_file, config=str(path), subfolder="transformer", local_files_only=True, **dt)
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(
                f"transformer_file: '{os.path.basename(transformer_file)}' is not a FLUX.1 transformer checkpoint in "
                f"the original (BFL) layout that diffusers can convert ({exc.__class__.__name__}: {exc}); use "
                "flux1-kontext-dev.safetensors (bf16/fp16), or leave it empty to use the folder's transformer/") from None
    pipe = FluxKontextPipeline.from_pretrained(str(path), local_files_only=True, **dt, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    if loras:
        names, weights = [], []
        for i, (lora_path, weight) in enumerate(loras):
            name = f"user_lora_{i}"
            pipe.load_lora_weights(str(lora_path), adapter_name=name)
            names.append(name)
            weights.append(float(weight))
        pipe.set_adapters(names, adapter_weights=weights)
    device = torch.device(device)
    if device.type == "cpu" or offload == "none":
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    if vae_tiling:
        pipe.vae.enable_tiling()
    if vae_slicing:
        pipe.vae.enable_slicing()
    return pipe

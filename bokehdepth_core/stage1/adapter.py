"""The bokeh adapter's weights (the release's ``BokehFluxControlAdapter`` state) and what they
compute from K; attaching it to diffusers' transformer is :mod:`.processor`'s job."""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn as nn

from .. import checks
from .processor import ProcessorState, install, module_device, module_dtype, transformer_geometry, uninstall
from .arithmetic import k_condition, low_rank
from .weights import (ADAPTER_FILE, RELEASE_BLOCKS, RELEASE_CONTEXT_DIM, RELEASE_LAYERS, RELEASE_RANK,
                      canonical_keys, compress_ids, geometry, parse_block_ids, read_state_dict)

EMBED_HIDDEN = 64


class LowRank(nn.Module):
    """``up(down(x)) * alpha / rank`` with bias-free maps (the release's ``LoRALinear``)."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: Optional[float]):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        self.rank = rank
        self.alpha = alpha
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)  # a fresh adapter leaves the model unchanged

    @property
    def scale(self) -> Optional[float]:
        return None if self.alpha is None else self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return low_rank(x, self.down.weight, self.up.weight, self.scale)


class BokehLayer(nn.Module):
    """The weights of one attention layer's bokeh processor (release names)."""

    def __init__(self, hidden_dim: int, context_dim: int, rank: int, alpha: Optional[float],
                 unfreeze_q: bool, unfreeze_k: bool):
        super().__init__()
        self.to_k_dof = LowRank(context_dim, hidden_dim, rank, alpha)
        self.to_v_dof = LowRank(context_dim, hidden_dim, rank, alpha)
        self.to_q_adp = LowRank(hidden_dim, hidden_dim, rank, alpha) if unfreeze_q else None
        self.to_k_adp = LowRank(hidden_dim, hidden_dim, rank, alpha) if unfreeze_k else None


class BokehAdapter(nn.Module):
    """A K embedding and one layer per attention layer of FLUX (19 double + 38 single blocks).

    ``adapter_modules`` spans every attention layer; unselected ones are empty placeholders, so a
    partial block selection keeps the global index (as the release does).
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
        self._state = ProcessorState()
        self.k_values: Optional[list[float]] = None
        self.source: Optional[str] = None

    # ----------------------------------------------------------------- construction

    @classmethod
    def attach(cls, transformer, blocks: Union[str, Iterable[int]] = RELEASE_BLOCKS, rank: int = RELEASE_RANK,
               alpha: Optional[float] = RELEASE_RANK, unfreeze_q: bool = True, unfreeze_k: bool = True,
               context_dim: int = RELEASE_CONTEXT_DIM, dtype: Optional[torch.dtype] = None) -> "BokehAdapter":
        """Build an adapter for a diffusers ``FluxTransformer2DModel`` (on its device, in its dtype
        unless given) and attach it. On a smaller transformer the release default "0-56" is cut to
        the layers that exist."""
        count, width = transformer_geometry(transformer)
        if isinstance(blocks, str) and blocks.strip() == RELEASE_BLOCKS and count < RELEASE_LAYERS:
            blocks = f"0-{count - 1}"
        ids = parse_block_ids(blocks, count)
        device, dtype = module_device(transformer), dtype or module_dtype(transformer)
        with torch.device(device):
            adapter = cls(count, width, ids, rank, alpha, unfreeze_q, unfreeze_k, context_dim)
        adapter.to(dtype=dtype)
        return adapter.attach_to(transformer, dtype=None)

    @classmethod
    def from_file(cls, path: str, alpha: Optional[float] = None, map_location="cpu") -> "BokehAdapter":
        """An unattached adapter shaped and filled from a release file (rank, blocks read from it).

        ``alpha`` is not stored in the file; None means alpha = rank (the release: 128/128).
        """
        sd = canonical_keys(read_state_dict(path, map_location), path)
        geo = geometry(sd, path)
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
        sd = canonical_keys(read_state_dict(path, "cpu"), path)
        self._load_checked(sd, path)
        self.source = os.path.basename(path)
        return self

    def _load_checked(self, sd: dict, path: str):
        own = self.state_dict()
        geo = geometry(sd, path)
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
                f"{self.num_layers} attention layers of width {self.hidden_dim}. {self.needs()}")
        if geo["blocks"] != self.blocks:
            raise ValueError(f"adapter file '{name}' covers blocks {compress_ids(geo['blocks'])} but the adapter was "
                             f"attached to blocks {compress_ids(self.blocks)}; attach with "
                             f"blocks='{compress_ids(geo['blocks'])}'")
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

    @staticmethod
    def needs() -> str:
        return (f"The bokeh adapter ({ADAPTER_FILE}) is for FLUX.1-Kontext-dev (19 double + 38 single blocks, "
                "width 3072)")

    # ----------------------------------------------------------------- what K gives

    def bokeh_values(self, k_values, name: str = "k_values") -> Optional[dict[int, torch.Tensor]]:
        """Each adapted layer's bokeh vector ``to_v_dof(embedding(clamp(K, 1, 30) / 30))`` as
        ``{layer: [N, hidden]}`` for N raw K values, on the adapter's device and dtype (None while
        the weights are not materialised)."""
        w = self.embedding_layer[0].weight
        x = k_condition(k_values, name, device=w.device if w.device.type != "meta" else None, dtype=w.dtype)
        if w.device.type == "meta":
            return None
        with torch.no_grad():
            return self._values_of(x)

    def _values_of(self, k_norm: torch.Tensor) -> dict[int, torch.Tensor]:
        e = self.embedding_layer(k_norm.reshape(-1, 1).to(self.embedding_layer[0].weight.dtype))
        return {i: self.adapter_modules[i].to_v_dof(e) for i in self.blocks}

    def qk_maps(self, index: int) -> tuple[Optional[LowRank], Optional[LowRank]]:
        """Layer ``index``'s low-rank maps on the flat q and k projections (None where not trained)."""
        layer = self.adapter_modules[index]
        return layer.to_q_adp, layer.to_k_adp

    # ----------------------------------------------------------------- diffusers

    @property
    def transformer(self):
        return self._state.transformer

    def attach_to(self, transformer, dtype: Optional[torch.dtype] = "auto") -> "BokehAdapter":
        """Install this adapter's processors in a diffusers Flux transformer (idempotent).

        Any other bokeh adapter attached there is detached first. ``dtype="auto"`` casts the adapter
        to the transformer's dtype (what the release does at inference); None keeps its own.
        """
        install(self, transformer, dtype)
        return self

    def detach(self) -> None:
        """Put the transformer's original processors back (the base model, exactly)."""
        uninstall(self)

    def grow_to(self, num_layers: int) -> None:
        """Pad with empty layers: a file's highest block need not be the transformer's last layer."""
        while len(self.adapter_modules) < num_layers:
            self.adapter_modules.append(nn.Module())
        self.num_layers = len(self.adapter_modules)

    def set_k(self, k_values: Union[float, Sequence[float], torch.Tensor]) -> None:
        """Condition on raw K values; batch element j uses K[j mod len] (clamped to [1, 30] with a warning)."""
        ks = checks.model_k_values(k_values)
        self._state.set(self.bokeh_values(ks))
        self.k_values = ks

    def condition_on(self, k_norm: torch.Tensor) -> None:
        """Training: condition on already normalised K (``clamp(K, 1, 30) / 30``, one per sample),
        keeping the autograd graph through the embedding and ``to_v_dof`` (``set_k`` embeds
        without gradient). The condition stays set, so gradient checkpointing's re-run sees it."""
        self._state.set(self._values_of(k_norm))
        self.k_values = None

    def clear(self) -> None:
        """Drop the K conditioning; the q/k low-rank adapters stay active (as the release after sampling)."""
        self.k_values = None
        self._state.set(None)

    def extra_repr(self) -> str:
        return (f"layers={self.num_layers}, blocks={compress_ids(self.blocks)}, rank={self.rank}, alpha={self.alpha}, "
                f"hidden={self.hidden_dim}, context={self.context_dim}, q={self.unfreeze_q}, k={self.unfreeze_k}")

"""The bokeh adapter's files: reading them, their key layout and the geometry they imply.

The authors' release (``bokeh_lora.bin``) stores ``embedding_layer.{0,2}.*`` and
``adapter_modules.{i}.{to_k_dof,to_v_dof,to_q_adp,to_k_adp}.{down,up}.weight``; copies with bare
``{i}.*`` keys or a ``module.`` prefix load too.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Sequence, Union

import torch

from ..weight_files import check_finite, read_weights

RELEASE_BLOCKS = "0-56"
RELEASE_LAYERS = 57  # FLUX.1: 19 double-stream + 38 single-stream attention layers
RELEASE_RANK = 128
RELEASE_CONTEXT_DIM = 768
ADAPTER_FILE = "bokeh_lora.bin"
ADAPTER_SOURCE = "the BokehDepth release (github.com/fogradio/BokehDepth, weights/bokeh_lora.bin)"


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


def compress_ids(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the form :func:`parse_block_ids` reads)."""
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
    """A tensor dict from .safetensors or a torch pickle (``weights_only=True``); damaged files and
    weights holding NaN or inf are refused, naming the file."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"adapter file not found: {path}. Get {ADAPTER_FILE} from {ADAPTER_SOURCE} and put "
                                "it in the 'bokehdepth' model folder")
    fix = f"{ADAPTER_FILE} comes from {ADAPTER_SOURCE}"
    obj = read_weights(path, "adapter file", fix)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"adapter file '{os.path.basename(path)}' does not hold a state dict of tensors; it is not "
                         f"a BokehDepth Stage-1 adapter ({fix})")
    check_finite(obj, path, "adapter file")
    if str(map_location) != "cpu":
        obj = {k: v.to(map_location) for k, v in obj.items()}
    return obj


def canonical_keys(sd: dict, path: str) -> dict:
    """Keys as the release names them (``adapter_modules.{i}.*``), whatever prefix the file used."""
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


def geometry(sd: dict, path: str) -> dict:
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

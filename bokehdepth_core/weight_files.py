"""Weight files: what one holds, told from its tensor names alone (no tensor is read and no pickle
is executed, so loaders can list only the files they can load), and reading one for a loader with
messages that name the file and the fix.

Safetensors files give their names from the JSON header; torch pickles (zip or legacy) from the
strings in the pickle stream, walked with :mod:`pickletools` (which decodes opcodes, never runs them).
Reading goes through safetensors or ``torch.load(weights_only=True)``; a damaged, truncated or
code-carrying file and weights holding NaN or inf are refused.
"""

from __future__ import annotations

import io
import os
import pickletools
import re
import zipfile
from typing import Any

import torch

ADAPTER, DEPTH_MODEL, UNKNOWN = "bokeh_adapter", "depth_model", "unknown"

# Name prefixes (after a DDP "module." prefix) that only one kind of file has.
_ADAPTER_NAMES = re.compile(r"^(adapter_modules\.\d+\.|embedding_layer\.|\d+\.to_[vkq]_(dof|adp)\.)")
_DEPTH_NAMES = re.compile(r"^(pretrained\.|depth_head\.|pixel_encoder\.|pixel_decoder\.)")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
               "STRING"}
_MAX_PICKLE_BYTES = 64 * 1024 * 1024  # the names of a large model fit in well under a megabyte
_LEGACY_PICKLES = 4  # legacy torch files: magic number, protocol, system info, then the state dict

_cache: dict[str, tuple[tuple[int, int], str]] = {}


def tensor_names(path: str) -> list[str]:
    """The strings naming tensors (and a pickle's other strings) in a weight file; [] when unreadable."""
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, "pt") as f:
                return list(f.keys())
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                member = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                if member is None or z.getinfo(member).file_size > _MAX_PICKLE_BYTES:
                    return []
                return _pickle_strings(io.BytesIO(z.read(member)), 1)
        with open(path, "rb") as fh:
            return _pickle_strings(fh, _LEGACY_PICKLES)
    except Exception:  # noqa: BLE001 - a file we cannot read is simply not listed as one of ours
        return []


def _pickle_strings(stream, pickles: int) -> list[str]:
    """Strings of up to ``pickles`` pickles in a row; stops at the first thing that is not one."""
    out = []
    try:
        for _ in range(pickles):
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in _STRING_OPS:
                    out.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
                if stream.tell() > _MAX_PICKLE_BYTES:
                    return out
    except ValueError:  # end of the pickles (raw tensor data or end of file follows)
        pass
    return out


def classify(names) -> str:
    """``bokeh_adapter``, ``depth_model`` or ``unknown`` for a file's tensor names."""
    adapter = depth = False
    for name in names:
        name = name[len("module."):] if name.startswith("module.") else name
        adapter = adapter or bool(_ADAPTER_NAMES.match(name))
        depth = depth or bool(_DEPTH_NAMES.match(name))
    if adapter == depth:
        return UNKNOWN
    return ADAPTER if adapter else DEPTH_MODEL


def kind(path: str) -> str:
    """What the file at ``path`` holds (see :func:`classify`); remembered until the file changes."""
    try:
        st = os.stat(path)
    except OSError:
        return UNKNOWN
    key = (st.st_size, st.st_mtime_ns)
    hit = _cache.get(path)
    if hit is None or hit[0] != key:
        hit = _cache[path] = (key, classify(tensor_names(path)))
    return hit[1]


def is_adapter(path: str) -> bool:
    return kind(path) == ADAPTER


def is_depth_model(path: str) -> bool:
    return kind(path) == DEPTH_MODEL


# --------------------------------------------------------------------------- reading

_NEEDS_CODE = re.compile(r"was not an allowed global|is blocked|must be \S+ to load")


def read_weights(path: str, what: str, fix: str, error: type = ValueError) -> Any:
    """The object a weight file holds: a dict of tensors (.safetensors) or the unpickled object of a
    weights-only torch file. ``what`` names the file in messages ("adapter file"), ``fix`` says where
    a good copy comes from; damaged files raise ``error`` (a ValueError)."""
    name = os.path.basename(str(path))
    if str(path).lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (OSError, MemoryError):
            raise
        except Exception:  # noqa: BLE001 - safetensors reports damage as its own exception type
            raise error(f"{what} '{name}' is damaged or truncated (not a complete .safetensors file); "
                        f"download or copy it again: {fix}") from None
    try:
        # Not mmap'd: models adopt these tensors, and a file rewritten under a live mapping would
        # crash the process.
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - torch reports damage as RuntimeError, UnpicklingError, EOFError ...
        if _NEEDS_CODE.search(str(exc)):
            raise error(f"{what} '{name}' cannot be read as a weights-only torch file: it needs code to load, "
                        "which is refused for safety; re-save it as a plain state dict or .safetensors") from None
        raise error(f"{what} '{name}' is damaged or truncated, or not a torch weight file; download or copy "
                    f"it again: {fix}") from None


def check_finite(tensors: dict, path: str, what: str, error: type = ValueError) -> None:
    """Refuse weights holding NaN or inf: they would give NaN depth or flat frames without a word."""
    bad = [k for k, v in tensors.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not _all_finite(v)]
    if bad:
        raise error(f"{what} '{os.path.basename(str(path))}' has NaN or infinite weights in {len(bad)} tensor(s) "
                    f"(first: {bad[0]}); the file is damaged or comes from a training run that diverged: "
                    "download or copy it again, or use an earlier checkpoint")


def _all_finite(t: torch.Tensor) -> bool:
    try:
        return bool(torch.isfinite(t).all())
    except (RuntimeError, TypeError):  # e.g. float8 types without isfinite on this device
        return bool(torch.isfinite(t.to(torch.float16)).all())

"""The only place that talks to ComfyUI services.

Inside ComfyUI this uses its model management, progress bar, interrupt flag and model folders.
Without ComfyUI (tests, plain Python) it falls back to torch's device, no-op progress and a local
``models/bokehdepth`` folder (or ``$BOKEHDEPTH_MODELS_DIR``, other model kinds beside it) and ``input``/``output``
(or ``$BOKEHDEPTH_INPUT_DIR``/``$BOKEHDEPTH_OUTPUT_DIR``), so nodes run the same either way.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Optional

import torch

log = logging.getLogger("BokehDepth")

try:  # ComfyUI's own modules; absent in tests and plain Python.
    import comfy.model_management as _mm
    import comfy.model_patcher as _mp
    import comfy.utils as _cu
    import folder_paths as _fp

    IN_COMFY = True
except ImportError:  # pragma: no cover - exercised implicitly by the tests
    _mm = _mp = _cu = _fp = None
    IN_COMFY = False

MODEL_FOLDER = "bokehdepth"
MODEL_EXTENSIONS = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


# --------------------------------------------------------------------------- devices

def torch_device() -> torch.device:
    if IN_COMFY:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (IMAGE, DEPTH) live between nodes."""
    if IN_COMFY:
        return _mm.intermediate_device()
    return torch.device("cpu")


def pick_dtype(device: torch.device, choice: str = "auto") -> torch.dtype:
    """fp32 on CPU; bf16 on GPUs that support it, else fp16; or the user's explicit choice."""
    named = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if choice in named:
        return named[choice]
    if choice != "auto":
        raise ValueError(f"dtype must be one of auto, fp32, fp16, bf16; got {choice!r}")
    if torch.device(device).type == "cpu":
        return torch.float32
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def offload_device() -> torch.device:
    """Where a managed model waits while ComfyUI needs the GPU for something else."""
    if IN_COMFY:
        return _mm.vae_offload_device()
    return torch.device("cpu")


class ManagedModel:
    """A torch module under ComfyUI's model manager, as ComfyUI keeps its own VAE and CLIP vision
    models: a ModelPatcher with load and offload devices, loaded through the manager before each
    run with an estimate of the run's working memory. ComfyUI then offloads it when something else
    needs the memory and keeps it loaded when not. Without ComfyUI it stays on the load device."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        self.model = model
        self.dtype = dtype
        self.load_device = torch_device()
        self.offload_device = offload_device()
        self.patcher = (_mp.ModelPatcher(model, load_device=self.load_device, offload_device=self.offload_device)
                        if IN_COMFY else None)

    def load(self, memory_required: int = 0) -> torch.device:
        """Make the model ready with ``memory_required`` bytes free for the run; returns the device
        to run on: the load device, or the offload device where ComfyUI keeps no weights on the GPU
        (``--novram``)."""
        if not IN_COMFY:
            self.model.to(self.load_device)
            return self.load_device
        # Full load: the model's layers are plain torch ones, which cannot run partially offloaded.
        _mm.load_models_gpu([self.patcher], memory_required=int(memory_required), force_full_load=True)
        if self.patcher.loaded_size() < self.patcher.model_size():
            log.warning("BokehDepth: ComfyUI keeps %s on %s (no VRAM for weights): running there",
                        type(self.model).__name__, self.offload_device)
            return self.offload_device
        return self.load_device


def free_memory() -> None:
    """Unload all of ComfyUI's models (only for loaders that hold a whole pipeline outside its
    model manager; managed models use :class:`ManagedModel` instead)."""
    if IN_COMFY:
        _mm.unload_all_models()
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- progress

def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    if IN_COMFY:
        _mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI's progress bar (a no-op outside ComfyUI); ``callback`` is the core's hook."""

    def __init__(self, total: int):
        self.total = max(1, int(total))
        self._bar = _cu.ProgressBar(self.total) if IN_COMFY else None

    def callback(self, done: int, total: int) -> None:
        """Core progress callback: absolute ``done`` of ``total``."""
        check_interrupt()
        if self._bar is not None:
            self._bar.update_absolute(min(done, total), total)


# --------------------------------------------------------------------------- folders
#
# A file name from a widget or a workflow is relative to its folder (input, output, temp or a model
# folder) and must stay inside that folder once links are resolved. Anything else is refused with
# one message whether or not such a file exists, so a shared workflow learns nothing about the disk.

_ANNOTATIONS = (("[input]", "input"), ("[output]", "output"), ("[temp]", "temp"))


def _relative(name) -> Optional[str]:
    """``name`` normalised when it is a relative path that stays below its folder, else None."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        return None
    rel = os.path.normpath(name)
    if os.path.isabs(rel) or os.path.splitdrive(rel)[0] or rel.split(os.sep)[0] in (".", ".."):
        return None
    return rel


def _within(root: str, name) -> Optional[str]:
    """The real path of ``name`` below ``root`` when it stays inside ``root`` after links are resolved."""
    rel = _relative(name)
    if rel is None or not root:
        return None
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, rel))
    inside = os.path.normcase(os.path.commonpath([base, full])) == os.path.normcase(base)
    return full if inside and full != base else None


def _refused(what: str, name, folder: str) -> str:
    return (f"{what} {name!r} is not a name inside ComfyUI's {folder} folder: pick one from the list "
            f"(names are relative to the {folder} folder; absolute paths, '..' and links out of it are refused)")


def _fallback_models_dir() -> str:
    return os.environ.get("BOKEHDEPTH_MODELS_DIR", os.path.join(os.getcwd(), "models", MODEL_FOLDER))


def register_model_folder() -> None:
    """Add ``models/bokehdepth`` as the default path, keeping extra_model_paths.yaml entries."""
    if IN_COMFY:
        _fp.add_model_folder_path(MODEL_FOLDER, os.path.join(_fp.models_dir, MODEL_FOLDER), is_default=True)


def model_folders(folder: str = MODEL_FOLDER) -> list[str]:
    if IN_COMFY:
        try:
            return _fp.get_folder_paths(folder)
        except KeyError:
            return []
    own = _fallback_models_dir()  # other kinds sit beside it, as in ComfyUI's models/ folder
    return [own if folder == MODEL_FOLDER else os.path.join(os.path.dirname(own), folder)]


def list_models(folder: str = MODEL_FOLDER, extensions=MODEL_EXTENSIONS) -> list[str]:
    if IN_COMFY:
        try:
            names = _fp.get_filename_list(folder)
        except KeyError:
            names = []
    else:
        names = []
        for root in model_folders(folder):
            if os.path.isdir(root):
                for dirpath, _dirs, files in os.walk(root):
                    rel = os.path.relpath(dirpath, root)
                    names += [f if rel == "." else os.path.join(rel, f) for f in files]
    return sorted(n for n in names if not extensions or n.lower().endswith(tuple(extensions)))


def list_model_dirs(folder: str) -> list[str]:
    """Sub-folders (e.g. diffusers-format pipelines) of a model folder."""
    out = []
    for root in model_folders(folder):
        if os.path.isdir(root):
            out += [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))]
    return sorted(set(out))


def model_path(name: str, folder: str = MODEL_FOLDER, where_to_get: str = "") -> str:
    """Full path of a model file or folder inside one of the ``folder`` model folders; a clear error
    naming what was searched if absent, and a refusal for names that lead out of the folders."""
    rel = _relative(name)
    if rel is None:
        raise ValueError(_refused("model", name, f"'{folder}' model"))
    roots = model_folders(folder)
    for root in roots:
        # The name is confined to the folder; links placed in a model folder are followed, as
        # ComfyUI's own loaders do, since users share model files across installs that way.
        full = os.path.join(root, rel)
        if os.path.exists(full):
            return full
    hint = f" Get it from {where_to_get}." if where_to_get else ""
    raise FileNotFoundError(
        f"model '{name}' not found in the '{folder}' model folder (searched: {', '.join(roots) or 'no folder'})."
        f"{hint} Put the file there or add a path for '{folder}' in extra_model_paths.yaml."
    )


def input_directory() -> str:
    if IN_COMFY:
        return _fp.get_input_directory()
    return os.environ.get("BOKEHDEPTH_INPUT_DIR", os.path.join(os.getcwd(), "input"))


def output_directory() -> str:
    if IN_COMFY:
        return _fp.get_output_directory()
    return os.environ.get("BOKEHDEPTH_OUTPUT_DIR", os.path.join(os.getcwd(), "output"))


def _annotated(name) -> tuple[str, str, Optional[str]]:
    """(file name, folder kind, folder) of an upload-widget value; ``x.png [output]`` names the output
    folder, as in ComfyUI's own loaders."""
    name = name if isinstance(name, str) else ""
    kind = "input"
    for tag, k in _ANNOTATIONS:
        if name.endswith(tag):
            name, kind = name[:-len(tag)].rstrip(), k
    folders = {"input": input_directory, "output": output_directory,
               "temp": lambda: _fp.get_temp_directory() if IN_COMFY else None}
    return name, kind, folders[kind]()


def input_path(name: str, what: str = "file") -> str:
    """The full path of an upload-widget file (``name [input]`` annotations included), inside its folder."""
    rel, kind, root = _annotated(name)
    full = _within(root, rel)
    if full is None:
        raise ValueError(_refused(what, name, kind))
    if not os.path.isfile(full):
        raise FileNotFoundError(f"{what} {name!r} is not in ComfyUI's {kind} folder: upload it or copy it there")
    return full


def list_input_files(extensions=None) -> list[str]:
    """Files at the top of the input folder, those ending in one of ``extensions`` when given."""
    root = input_directory()
    if not os.path.isdir(root):
        return []
    return sorted(f for f in os.listdir(root) if os.path.isfile(os.path.join(root, f))
                  and (extensions is None or f.lower().endswith(tuple(extensions))))


def list_input_images() -> list[str]:
    files = list_input_files()
    if IN_COMFY:
        return sorted(_fp.filter_files_content_types(files, ["image"]))
    return [f for f in files if f.lower().endswith((".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"))]


def _next_counter(folder: str, base: str) -> int:
    """1 + the highest number of ``base_NNNNN_*`` files: a deleted file's number is never reused."""
    pattern = re.compile(re.escape(base) + r"_(\d+)_", re.IGNORECASE if os.name == "nt" else 0)
    numbers = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))]
    return 1 + max(numbers, default=0)


def save_path(prefix: str, width: int = 0, height: int = 0) -> tuple[str, str, int, str]:
    """(folder, filename base, counter, subfolder) for saving like ComfyUI's SaveImage, inside the output folder."""
    out = output_directory()
    if _within(out, prefix) is None:
        raise ValueError(f"filename_prefix {prefix!r} does not stay inside ComfyUI's output folder: give a name, "
                         "optionally with sub-folders, e.g. 'BokehDepth/depth' (absolute paths, '..' and links out "
                         "of the folder are refused)")
    if IN_COMFY:
        folder, base, counter, subfolder, _ = _fp.get_save_image_path(prefix, out, width, height)
        return folder, base, counter, subfolder
    subfolder, base = os.path.split(_relative(prefix))
    folder = os.path.join(out, subfolder)
    os.makedirs(folder, exist_ok=True)
    return folder, base, _next_counter(folder, base), subfolder


def file_hash(path: str) -> Optional[str]:
    """Cheap change key for IS_CHANGED: size and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size}-{st.st_mtime_ns}"


def model_choices(names: list[str], *release_names: str) -> list[str]:
    """A loader's combo: the release names first even when absent, so shared workflows validate
    (picking a missing one gives the clear "where to get it" error), then the files found."""
    return list(release_names) + [n for n in names if n not in release_names]


def model_change_key(name: str, folder: str = MODEL_FOLDER) -> Optional[str]:
    """IS_CHANGED for a model file: reload when the file on disk changes (names outside are not looked at)."""
    try:
        return file_hash(model_path(name, folder))
    except (ValueError, OSError):
        return name


def input_change_key(name: str) -> Optional[str]:
    """IS_CHANGED for an upload-widget file in the input folder (names outside are not looked at)."""
    try:
        return file_hash(input_path(name))
    except (ValueError, OSError):
        return name


def validate_input_file(name: str, what: str = "file"):
    """VALIDATE_INPUTS for an upload-widget file: True, or why the name is refused or missing."""
    try:
        input_path(name, what)
    except (ValueError, OSError) as exc:
        return str(exc)
    return True


# =========================================================================== sampling
# Helpers for nodes that run ComfyUI's samplers (kept apart from the sections above).

DEFAULT_SAMPLER, DEFAULT_SCHEDULER = "euler", "simple"


def sampler_choices() -> tuple[list[str], list[str]]:
    """ComfyUI's sampler and scheduler names (just the defaults outside ComfyUI)."""
    if IN_COMFY:
        import comfy.samplers

        return list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)
    return [DEFAULT_SAMPLER], [DEFAULT_SCHEDULER]


class SamplingProgress:
    """One progress bar with latent previews over several sampling runs (e.g. every frame of a
    stack): ``callback(offset)`` is the ``callback`` for a ComfyUI sampling run whose first step
    is number ``offset + 1`` of ``total``. Pressing Cancel stops at the next step."""

    def __init__(self, model, total: int):
        self.total = max(1, int(total))
        self._bar = _cu.ProgressBar(self.total) if IN_COMFY else None
        self._previewer = None
        if IN_COMFY:
            import latent_preview

            self._previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(self, offset: int):
        def on_step(step, x0, _x, _total_steps):
            check_interrupt()
            if self._bar is not None:
                preview = None
                if self._previewer is not None:
                    preview = self._previewer.decode_latent_to_preview_image("JPEG", x0)
                self._bar.update_absolute(offset + step + 1, self.total, preview)

        return on_step


# --------------------------------------------------------------------------- 3-D files

def file_3d_type():
    """ComfyUI's 3-D file class (``comfy_api.latest.Types.File3D``, newer ComfyUI), or None."""
    if not IN_COMFY:
        return None
    try:
        from comfy_api.latest import Types  # noqa: PLC0415 - only newer ComfyUI has 3-D types
    except ImportError:
        return None
    return getattr(Types, "File3D", None)


def output_relative(path: str) -> str:
    """``subfolder/name`` of a file in the output folder, as ComfyUI's Preview 3D node takes it."""
    return os.path.relpath(path, output_directory()).replace(os.sep, "/")

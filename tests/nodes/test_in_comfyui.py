"""The extension inside the real ComfyUI (COMFYUI_PATH): it registers its nodes and its seam uses
ComfyUI's own services."""

import torch


def test_extension_registers_in_real_comfyui(comfyui, ext_in_comfyui):
    import folder_paths

    seam = ext_in_comfyui.nodes.comfy_seam
    assert seam.IN_COMFY
    assert not ext_in_comfyui.nodes.SKIPPED
    assert "BokehDepthKFromLens" in ext_in_comfyui.NODE_CLASS_MAPPINGS
    assert any(p.endswith("bokehdepth") for p in folder_paths.get_folder_paths("bokehdepth"))
    assert seam.torch_device() == torch.device("cpu")


def test_plain_copy_never_sees_comfyui(comfyui, ext):
    assert not ext.nodes.comfy_seam.IN_COMFY

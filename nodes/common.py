"""Socket type names and the category root shared by every node family."""

CATEGORY = "BokehDepth"

K_LIST = "BOKEH_K_LIST"  # list[float] of raw K values (px*m)
BOKEH_STACK = "BOKEH_STACK"  # bokehdepth_core.types.BokehStack
DEPTH = "METRIC_DEPTH"  # bokehdepth_core.types.DepthMap
CAMERA = "CAMERA_INTRINSICS"  # torch.Tensor [B,3,3] pinhole, pixels
DEPTH_MODEL = "BOKEHDEPTH_MODEL"  # comfy_seam.ManagedModel of a bokehdepth_core.stage2.DepthModel
KONTEXT_PIPELINE = "KONTEXT_PIPELINE"  # diffusers FluxKontextPipeline
BOKEH_ADAPTER = "BOKEH_ADAPTER"  # bokehdepth_core.stage1.BokehAdapter


def category(sub: str = "") -> str:
    return f"{CATEGORY}/{sub}" if sub else CATEGORY

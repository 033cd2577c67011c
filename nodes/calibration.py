"""Calibration nodes: the bokeh strength K from lens data or a photo's EXIF, and K lists."""

from __future__ import annotations

from ..bokehdepth_core import exif, optics
from . import comfy_seam as seam
from .common import K_LIST, category, finite, image_size, image_size_inputs, photo_input

_K_OUT = ("FLOAT", "FLOAT", "FLOAT", "STRING")
_K_NAMES = ("K", "K_512", "K_crop", "summary")


def _lens_inputs(optional_zero: bool):
    """Lens widgets; with ``optional_zero`` a 0 means 'use the EXIF value'."""
    lo = 0.0 if optional_zero else 0.1
    zero = " 0 = read from EXIF." if optional_zero else ""
    return {
        "f_number": ("FLOAT", {"default": 0.0 if optional_zero else 2.0, "min": lo, "max": 64.0, "step": 0.1,
                               "tooltip": "Aperture f-number N (f/1.4 -> 1.4). Smaller N = stronger bokeh." + zero}),
        "focal_length_mm": ("FLOAT", {"default": 0.0 if optional_zero else 50.0, "min": lo, "max": 2000.0, "step": 0.1,
                                      "tooltip": "Real focal length of the lens in mm." + zero}),
        "focal_length_35mm": ("FLOAT", {"default": 0.0 if optional_zero else 50.0, "min": lo, "max": 5000.0, "step": 0.1,
                                        "tooltip": "35 mm-equivalent focal length in mm (equal to the real one on full frame)." + zero}),
        "focus_distance_m": ("FLOAT", {"default": 0.0 if optional_zero else 2.0, "min": 0.0 if optional_zero else 0.01,
                                       "max": 10000.0, "step": 0.01,
                                       "tooltip": "Distance to the in-focus plane in metres." + zero}),
    }


_K_NOTE = ("Three K outputs: K is for this image's own width (use it for Render Bokeh, stacks and the sweep); "
           "K_512 is the same lens rescaled to a 512 px wide image (the paper's dof-cond, what Stage-1 "
           "expects); K_crop is K_512 divided by the crop factor (dof-cond-crop, full-frame aligned).")


class BokehKFromLens:
    DESCRIPTION = ("Thin-lens bokeh strength K (px*m) from aperture, focal length, focus distance and image size. "
                   + _K_NOTE)
    CATEGORY = category("Calibration")
    FUNCTION = "calibrate"
    RETURN_TYPES = _K_OUT
    RETURN_NAMES = _K_NAMES
    OUTPUT_TOOLTIPS = (
        "K at the given image width: blur radius in px = K x |1/focus - 1/depth|.",
        "K rescaled to a 512 px wide image (the paper's dof-cond).",
        "K at 512 px divided by the crop factor (dof-cond-crop, full-frame aligned).",
        "Human-readable calibration report.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        req = {**_lens_inputs(optional_zero=False), **image_size_inputs()}
        return {"required": req,
                "optional": {"image": ("IMAGE", {"tooltip": "Take width and height from this image."})}}

    def calibrate(self, f_number, focal_length_mm, focal_length_35mm, focus_distance_m, width, height, image=None):
        _, width, height = image_size(image, width, height)
        cal = optics.calibrate(f_number, focal_length_mm, focal_length_35mm, focus_distance_m, width, height)
        finite("Bokeh K from Lens", K=cal.k, K_512=cal.k_512, K_crop=cal.k_crop)
        return (cal.k, cal.k_512, cal.k_crop, cal.summary())


class BokehKFromExif:
    DESCRIPTION = ("Read a photo's EXIF (f-number, focal lengths, focus distance, sensor) and compute K; fill in "
                   "what EXIF lacks (0 = read from EXIF). " + _K_NOTE)
    CATEGORY = category("Calibration")
    FUNCTION = "calibrate"
    RETURN_TYPES = _K_OUT + ("STRING", "IMAGE")
    RETURN_NAMES = _K_NAMES + ("estimated", "image")
    OUTPUT_TOOLTIPS = BokehKFromLens.OUTPUT_TOOLTIPS + (
        "Which values were estimated or given by you rather than read from EXIF.",
        "The photo itself (EXIF orientation applied).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        req = {"image": photo_input()}
        req.update(_lens_inputs(optional_zero=True))
        req["sensor_width_mm"] = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.01,
                                            "tooltip": "Sensor width in mm when EXIF cannot tell it. 0 = estimate."})
        return {"required": req}

    @classmethod
    def IS_CHANGED(cls, image, **_):
        return seam.input_change_key(image)

    @classmethod
    def VALIDATE_INPUTS(cls, image, **_):
        return seam.validate_input_file(image, "image file")

    def calibrate(self, image, f_number, focal_length_mm, focal_length_35mm, focus_distance_m, sensor_width_mm):
        info, pixels = exif.read_photo(seam.input_path(image, "image"))
        for why in info.warnings.values():
            seam.log.warning("BokehDepth: %s: ignored EXIF %s", image, why)
        given = lambda v: float(v) if v and v > 0 else None  # noqa: E731 - 0 means "use EXIF"
        cal = exif.calibrate_from_exif(info, f_number=given(f_number), focal_mm=given(focal_length_mm),
                                       focal_35mm=given(focal_length_35mm), focus_m=given(focus_distance_m),
                                       sensor_width_mm=given(sensor_width_mm))
        est = "; ".join(f"{k}: {v}" for k, v in cal.estimated.items()) or "all values read from EXIF"
        finite("Bokeh K from Photo EXIF", K=cal.k, K_512=cal.k_512, K_crop=cal.k_crop)
        return (cal.k, cal.k_512, cal.k_crop, cal.summary(), est, pixels.to(seam.intermediate_device()))


class BokehKList:
    DESCRIPTION = ("A list of bokeh strengths K for a stack, typed out. Connect a calibrated K (e.g. from Bokeh K "
                   "from Lens / EXIF) and write multiples of it: '0.5K, K, 2K'.")
    CATEGORY = category("Calibration")
    FUNCTION = "make"
    RETURN_TYPES = (K_LIST, "STRING")
    RETURN_NAMES = ("k_list", "summary")
    OUTPUT_TOOLTIPS = ("K values for stack nodes.", "The values as text.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "k_list": ("STRING", {"default": "10, 20, 30", "multiline": False,
                                  "tooltip": "Comma-separated K values (px*m), e.g. '10, 20, 30'; with K connected also "
                                             "multiples of it, e.g. '0.5K, K, 2K'."}),
        }, "optional": {
            "K": ("FLOAT", {"forceInput": True, "tooltip": "A calibrated K (px*m) that entries like '2K' multiply."}),
        }}

    def make(self, k_list, K=None):
        values = optics.parse_k_list(k_list, K)
        return (values, ", ".join(f"{v:g}" for v in values))


class BokehKRange:
    DESCRIPTION = "K values for a stack from k_min to k_max (inclusive) in steps of k_step."
    CATEGORY = category("Calibration")
    FUNCTION = "make"
    RETURN_TYPES = (K_LIST, "STRING")
    RETURN_NAMES = ("k_list", "summary")
    OUTPUT_TOOLTIPS = BokehKList.OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "k_min": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 1000.0, "step": 0.5, "tooltip": "First K (px*m)."}),
            "k_max": ("FLOAT", {"default": 30.0, "min": 0.01, "max": 1000.0, "step": 0.5, "tooltip": "Last K (inclusive)."}),
            "k_step": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 1000.0, "step": 0.5, "tooltip": "Step between K values."}),
        }}

    def make(self, k_min, k_max, k_step):
        values = optics.k_range(k_min, k_max, k_step)
        return (values, ", ".join(f"{v:g}" for v in values))


NODE_CLASS_MAPPINGS = {
    "BokehDepthKFromLens": BokehKFromLens,
    "BokehDepthKFromExif": BokehKFromExif,
    "BokehDepthKList": BokehKList,
    "BokehDepthKRange": BokehKRange,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthKFromLens": "BokehDepth K from Lens",
    "BokehDepthKFromExif": "BokehDepth K from Photo EXIF",
    "BokehDepthKList": "BokehDepth K List",
    "BokehDepthKRange": "BokehDepth K Range",
}

"""Physics nodes (no weights): thin-lens bokeh from depth, bokeh/focus stacks, depth from a bokeh
sweep, depth metrics and a synthetic scene so that a graph runs without any input file."""

from __future__ import annotations

import json

from ..bokehdepth_core import bokeh_from_depth, dfb, focus, labels, metrics, plots, synthetic
from ..bokehdepth_core.types import BokehStack
from . import comfy_seam as seam
from .common import BOKEH_STACK, DEPTH, K_LIST, category, depth_map, expect, finite, image_major, stack_outputs

CAT = category("Physics")


AUTO_FOCUS_MODES = [m for m in focus.FOCUS_MODES if m != "distance"]


def _focus_distance_input():
    return {"focus_distance_m": ("FLOAT", {"default": 2.0, "min": 0.01, "max": 10000.0, "step": 0.01,
                                           "tooltip": "Distance (m) of the in-focus plane."})}


def _auto_focus_inputs():
    return {"focus_mode": (AUTO_FOCUS_MODES, {"default": "auto (edges)", "tooltip":
                           "auto (median): median depth, under focus_mask if one is connected. auto (edges): depth "
                           "of the image's sharpest edges (what a camera's autofocus tends to pick)."})}


_FOCUS_MASK = {"focus_mask": ("MASK", {"tooltip": "Subject mask for 'auto (median)' focus."})}


def _scene_inputs(image_tip: str = "All-in-focus image(s).", depth_tip: str = "Metric depth in metres."):
    return {"image": ("IMAGE", {"tooltip": image_tip}), "depth": (DEPTH, {"tooltip": depth_tip})}


def _k_input(tip: str):
    return ("FLOAT", {"default": 20.0, "min": 0.01, "max": 1000.0, "step": 0.5, "tooltip": tip})


def _look_inputs():
    return {
        "gamma": ("FLOAT", {"default": 2.2, "min": 1.0, "max": 3.0, "step": 0.1,
                            "tooltip": "Blur in linear light (2.2 = sRGB-like images; 1 = blur values as they are)."}),
        "highlight": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                "tooltip": "Brighten near-white pixels before blurring for bright bokeh balls (0 = off)."}),
        "aperture_blades": ("INT", {"default": 0, "min": 0, "max": 16,
                                    "tooltip": "0 = round aperture; 3..16 = polygonal aperture with this many blades."}),
        "blade_rotation": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 360.0, "step": 1.0,
                                     "tooltip": "Rotation of a polygonal aperture in degrees."}),
    }


def _options(gamma, highlight, aperture_blades, blade_rotation):
    return {"gamma": gamma, "highlight": highlight, "blades": aperture_blades, "blade_rotation": blade_rotation}


def _to_out(t):
    return t.to(seam.intermediate_device())


class BokehRenderFromDepth:
    DESCRIPTION = ("Thin-lens bokeh from an image and its metric depth, focused at a given distance: disk blur of "
                   "radius K x |1/focus - 1/depth| px, occlusion-aware, in linear light. To let the depth pick the "
                   "focus use Render Bokeh from Depth (Auto Focus).")
    CATEGORY = CAT
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("image", "focus_distance_m")
    OUTPUT_TOOLTIPS = ("The rendered bokeh image.", "The focus distance used (m), first batch item.")

    @classmethod
    def _inputs(cls, focus_inputs: dict) -> dict:
        req = _scene_inputs(depth_tip="Metric depth in metres (resized to the image if needed).")
        req["K"] = _k_input("Bokeh strength K (px*m) at this image's width, e.g. from BokehDepth K from Lens.")
        req.update(focus_inputs)
        req.update(_look_inputs())
        req["use_confidence"] = ("BOOLEAN", {"default": True, "tooltip":
                                 "Where the depth carries a confidence map, smooth uncertain blur radii toward "
                                 "confident neighbours."})
        return req

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": cls._inputs(_focus_distance_input())}

    def render(self, image, depth, K, focus_distance_m, gamma, highlight, aperture_blades, blade_rotation,
               use_confidence):
        return self._render(image, depth, K, "distance", focus_distance_m, None, gamma, highlight, aperture_blades,
                            blade_rotation, use_confidence)

    @staticmethod
    def _render(image, depth, K, mode, distance, mask, gamma, highlight, aperture_blades, blade_rotation,
                use_confidence):
        out, used = bokeh_from_depth.render_from_depth(
            image, depth_map(depth), float(K), mode, distance, mask=mask, use_confidence=bool(use_confidence),
            device=seam.torch_device(), callback=seam.Progress(1).callback,
            **_options(gamma, highlight, aperture_blades, blade_rotation))
        finite("Render Bokeh from Depth", image=out, focus_distance_m=used)
        return (_to_out(out), float(used[0]))


class BokehRenderFromDepthAutoFocus(BokehRenderFromDepth):
    DESCRIPTION = ("Thin-lens bokeh from an image and its metric depth, focused where the depth says: on the "
                   "median depth (of a subject mask) or on the image's sharpest edges. Outputs the distance chosen.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": cls._inputs(_auto_focus_inputs()), "optional": dict(_FOCUS_MASK)}

    def render(self, image, depth, K, focus_mode, gamma, highlight, aperture_blades, blade_rotation,  # noqa: D102
               use_confidence, focus_mask=None):
        return self._render(image, depth, K, focus_mode, 0.0, focus_mask, gamma, highlight, aperture_blades,
                            blade_rotation, use_confidence)


class BokehStackFromDepth:
    DESCRIPTION = ("Render one bokeh frame per K, focused at a given distance: a physically exact BOKEH_STACK "
                   "(source 'render').")
    CATEGORY = CAT
    FUNCTION = "render"
    RETURN_TYPES = (BOKEH_STACK, "IMAGE", "IMAGE")
    RETURN_NAMES = ("bokeh_stack", "frames", "labelled_frames")
    OUTPUT_TOOLTIPS = ("The stack (frames, K values, reference, focus) for Depth from Bokeh Sweep or Stage-2.",
                       "All frames as one IMAGE batch (image-major: image 0's frames first).",
                       "The same frames with their K written in the corner, for previews.")

    @classmethod
    def _inputs(cls, focus_inputs: dict) -> dict:
        req = _scene_inputs("All-in-focus image(s); they become the stack's reference.")
        req["k_list"] = (K_LIST, {"tooltip": "K values, one frame each (from BokehDepth K List or Synthetic Bokeh "
                                             "Scene)."})
        req.update(focus_inputs)
        req.update(_look_inputs())
        return req

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": cls._inputs(_focus_distance_input())}

    def render(self, image, depth, k_list, focus_distance_m, gamma, highlight, aperture_blades, blade_rotation):
        return self._render(image, depth, k_list, "distance", focus_distance_m, None, gamma, highlight,
                            aperture_blades, blade_rotation)

    @staticmethod
    def _render(image, depth, k_list, mode, distance, mask, gamma, highlight, aperture_blades, blade_rotation):
        stack = bokeh_from_depth.bokeh_stack_from_depth(
            image.to(seam.intermediate_device()), depth_map(depth), k_list, mode, distance, mask=mask,
            device=seam.torch_device(), callback=seam.Progress(len(k_list)).callback,
            **_options(gamma, highlight, aperture_blades, blade_rotation))
        finite("Bokeh Stack from Depth", frames=stack.frames)
        return stack_outputs(stack)


class BokehStackFromDepthAutoFocus(BokehStackFromDepth):
    DESCRIPTION = ("Render one bokeh frame per K, focused where the depth says (median depth of a subject mask, or "
                   "the image's sharpest edges): a physically exact BOKEH_STACK (source 'render').")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": cls._inputs(_auto_focus_inputs()), "optional": dict(_FOCUS_MASK)}

    def render(self, image, depth, k_list, focus_mode, gamma, highlight, aperture_blades, blade_rotation,  # noqa: D102
               focus_mask=None):
        return self._render(image, depth, k_list, focus_mode, 0.0, focus_mask, gamma, highlight, aperture_blades,
                            blade_rotation)


class FocusStackFromDepth:
    DESCRIPTION = "Fixed aperture, focus swept uniformly in disparity across the scene's depth range."
    CATEGORY = CAT
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "STRING", "IMAGE")
    RETURN_NAMES = ("frames", "focus_distances", "labelled_frames")
    OUTPUT_TOOLTIPS = ("Frames, image-major (image 0's frames first), focus moving from far to near.",
                       "Focus distance of every frame (m), per image.",
                       "The same frames with their focus distance written in the corner, for previews.")

    @classmethod
    def INPUT_TYPES(cls):
        req = {
            **_scene_inputs(),
            "K": _k_input("Bokeh strength K (px*m), fixed aperture."),
            "frames": ("INT", {"default": 5, "min": 2, "max": 64, "tooltip": "Number of focus positions."}),
            "margin": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 0.45, "step": 0.01,
                                 "tooltip": "Fraction of the disparity range left out at each end of the sweep."}),
        }
        req.update(_look_inputs())
        return {"required": req}

    def render(self, image, depth, K, frames, margin, gamma, highlight, aperture_blades, blade_rotation):
        out, focus_m = bokeh_from_depth.focus_stack_from_depth(
            image, depth_map(depth), float(K), int(frames), margin, device=seam.torch_device(),
            callback=seam.Progress(int(frames)).callback, **_options(gamma, highlight, aperture_blades, blade_rotation))
        finite("Focus Stack from Depth", frames=out, focus_distances=focus_m)
        text = "\n".join(f"[{i}] " + ", ".join(f"{float(f):.3g} m" for f in row) for i, row in enumerate(focus_m))
        frames = _to_out(image_major(out))
        captions = [f"focus {float(f):.3g} m" for f in focus_m.reshape(-1)]
        return (frames, text, labels.caption(frames, captions))


class DepthFromBokehSweep:
    DESCRIPTION = ("Metric depth from a bokeh stack without any model: per-frame blur radius against the sharp "
                   "reference, then the OLS slope of radius over K (Prop. 4.1.1). Also reports how physically "
                   "consistent the stack is.")
    CATEGORY = CAT
    FUNCTION = "estimate"
    RETURN_TYPES = (DEPTH, "IMAGE", "STRING")
    RETURN_NAMES = ("depth", "confidence", "linearity_report")
    OUTPUT_TOOLTIPS = ("Metric depth (m) with its confidence map.", "Confidence as a grey image (white = reliable).",
                       "How well blur grows linearly with K, per frame and overall.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "bokeh_stack": (BOKEH_STACK, {"tooltip": "Frames at one focus distance with their K values and the sharp reference."}),
            "focus_distance_m": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10000.0, "step": 0.01,
                                           "tooltip": "Focus distance S1 (m) shared by the frames. 0 = take it from the stack."}),
            "side": (["behind", "front", "prior depth"], {"default": "behind", "tooltip":
                     "Which side of the focal plane the scene lies on: behind (farther), front (nearer), or per pixel from prior_depth."}),
            "max_radius": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 256.0, "step": 1.0,
                                     "tooltip": "Largest blur radius (px) searched. 0 = 20% of the image size, at most 64."}),
            "window": ("INT", {"default": 4, "min": 1, "max": 32, "tooltip": "Half-size (px) of the matching window."}),
            "gamma": ("FLOAT", {"default": 2.2, "min": 1.0, "max": 3.0, "step": 0.1,
                                "tooltip": "Compare in linear light, as the frames were blurred (2.2 for photos and rendered stacks)."}),
        }, "optional": {
            "prior_depth": (DEPTH, {"tooltip": "Coarse depth (e.g. a monocular model) deciding front/behind per pixel in 'prior depth' mode."}),
        }}

    def estimate(self, bokeh_stack, focus_distance_m, side, max_radius, window, gamma, prior_depth=None):
        stack = expect(bokeh_stack, BokehStack, "bokeh_stack", BOKEH_STACK, " (from Bokeh Stack from Depth or Stage-1)")
        depth, res = dfb.depth_from_stack(stack, focus_distance_m, side, prior_depth, device=seam.torch_device(),
                                          max_radius=max_radius or None, window=int(window), gamma=gamma,
                                          callback=seam.Progress(1).callback)
        finite("Depth from Bokeh Sweep", depth=depth.depth, confidence=depth.confidence)
        depth.depth, depth.confidence = _to_out(depth.depth), _to_out(depth.confidence)
        preview = depth.confidence.unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()
        return (depth, preview, dfb.linearity_report(res))


class DepthMetricsNode:
    DESCRIPTION = ("AbsRel, SqRel, RMSE, RMSE-log and delta1..3 of a depth prediction against ground truth (metric, "
                   "optional median scaling), and a plot: predicted vs true depth, and the error per depth bin.")
    CATEGORY = CAT
    FUNCTION = "measure"
    RETURN_TYPES = ("STRING", "STRING", "IMAGE")
    RETURN_NAMES = ("report", "json", "plot")
    OUTPUT_TOOLTIPS = ("Readable metrics.", "The same metrics as JSON.",
                       "Left: predicted against ground-truth depth (the green line is perfect). Right: AbsRel per "
                       "ground-truth depth bin with its pixel count.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prediction": (DEPTH, {"tooltip": "Predicted metric depth (m)."}),
            "ground_truth": (DEPTH, {"tooltip": "Ground-truth metric depth (m); pixels <= 0 or non-finite are ignored."}),
            "align": (["none", "median"], {"default": "none", "tooltip": "none: metric as is. median: scale each prediction by median(gt)/median(pred) first."}),
            "min_confidence": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                         "tooltip": "Only score pixels whose prediction confidence is at least this (0 = all)."}),
            "max_depth_m": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100000.0, "step": 1.0,
                                      "tooltip": "Ignore ground truth farther than this (m). 0 = no cap."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Only score pixels where the mask is > 0.5."}),
        }}

    def measure(self, prediction, ground_truth, align, min_confidence, max_depth_m, mask=None):
        pred, gt = depth_map(prediction, "prediction"), depth_map(ground_truth, "ground_truth")
        limits = {"align": align, "max_depth": max_depth_m if max_depth_m > 0 else float("inf"),
                  "min_confidence": min_confidence}
        m = metrics.depth_metrics(pred, gt, mask, **limits)
        plot = plots.depth_error_plot(pred, gt, mask, **limits)
        return (metrics.format_depth_metrics(m), json.dumps(m), _to_out(plot))


class SyntheticBokehScene:
    DESCRIPTION = ("A procedural test scene (SYNTHEBOKEH300 style): textured foreground over a tilted background, "
                   "metric depth, lens settings and one bokeh rendering. No input files needed.")
    CATEGORY = CAT
    FUNCTION = "make"
    RETURN_TYPES = ("IMAGE", DEPTH, "IMAGE", K_LIST, "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("all_in_focus", "depth", "bokeh", "k_list", "K", "focus_distance_m", "settings")
    OUTPUT_TOOLTIPS = ("The sharp image.", "Ground-truth metric depth (m).", "Bokeh rendered with the strongest sampled K.",
                       "The sampled K values (weak to strong).", "The K used for 'bokeh'.",
                       "The focus distance (m), inside the foreground.", "Scene settings as JSON.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "tooltip": "Scene seed: same seed, same scene."}),
            "size": ("INT", {"default": 256, "min": 32, "max": 2048, "step": 8, "tooltip": "Width and height in pixels."}),
            "num_k": ("INT", {"default": 3, "min": 1, "max": 16, "tooltip": "How many K values to sample (f/22 .. f/1.4 equivalent)."}),
        }}

    def make(self, seed, size, num_k):
        scene = synthetic.make_scene(int(seed), int(size), int(num_k))
        k = scene.k_values[-1]
        depth = scene.depth_map()
        depth.depth = _to_out(depth.depth)
        return (_to_out(scene.image), depth, _to_out(scene.render(k)), list(scene.k_values), float(k),
                float(scene.focus_m), json.dumps(scene.settings))


NODE_CLASS_MAPPINGS = {
    "BokehDepthRenderBokeh": BokehRenderFromDepth,
    "BokehDepthRenderBokehAutoFocus": BokehRenderFromDepthAutoFocus,
    "BokehDepthBokehStackFromDepth": BokehStackFromDepth,
    "BokehDepthBokehStackFromDepthAutoFocus": BokehStackFromDepthAutoFocus,
    "BokehDepthFocusStackFromDepth": FocusStackFromDepth,
    "BokehDepthFromBokehSweep": DepthFromBokehSweep,
    "BokehDepthMetrics": DepthMetricsNode,
    "BokehDepthSyntheticScene": SyntheticBokehScene,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthRenderBokeh": "BokehDepth Render Bokeh from Depth",
    "BokehDepthRenderBokehAutoFocus": "BokehDepth Render Bokeh from Depth (Auto Focus)",
    "BokehDepthBokehStackFromDepth": "BokehDepth Bokeh Stack from Depth",
    "BokehDepthBokehStackFromDepthAutoFocus": "BokehDepth Bokeh Stack from Depth (Auto Focus)",
    "BokehDepthFocusStackFromDepth": "BokehDepth Focus Stack from Depth",
    "BokehDepthFromBokehSweep": "BokehDepth Depth from Bokeh Sweep",
    "BokehDepthMetrics": "BokehDepth Depth Metrics",
    "BokehDepthSyntheticScene": "BokehDepth Synthetic Bokeh Scene",
}

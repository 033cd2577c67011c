"""Physics nodes (no weights): thin-lens bokeh from depth, bokeh/focus stacks, depth from a bokeh
sweep, depth metrics and a synthetic scene so that a graph runs without any input file."""

from __future__ import annotations

import json

import torch

from ..bokehdepth_core import dfb, metrics, render, synthetic
from ..bokehdepth_core.types import BokehStack, DepthMap
from . import comfy_seam as seam
from .common import BOKEH_STACK, DEPTH, K_LIST, category

CAT = category("Physics")


def _focus_inputs():
    return {
        "focus_mode": (list(render.FOCUS_MODES), {"default": "distance", "tooltip":
                       "distance: use focus_distance_m. auto (median): median depth (under focus_mask if given). "
                       "auto (edges): depth of the image's sharpest edges."}),
        "focus_distance_m": ("FLOAT", {"default": 2.0, "min": 0.01, "max": 10000.0, "step": 0.01,
                                       "tooltip": "Distance (m) of the in-focus plane in 'distance' mode."}),
    }


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


def _depth_for(image: torch.Tensor, depth: DepthMap) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(depth, DepthMap):
        raise ValueError("depth must be a METRIC_DEPTH (connect a depth model, Load Depth or Synthetic Bokeh Scene)")
    return render.depth_for_image(depth.depth, image, depth.confidence)


def _options(gamma, highlight, aperture_blades, blade_rotation):
    return {"gamma": gamma, "highlight": highlight, "blades": aperture_blades, "blade_rotation": blade_rotation}


def _to_out(t: torch.Tensor) -> torch.Tensor:
    return t.to(seam.intermediate_device())


class BokehRenderFromDepth:
    DESCRIPTION = ("Thin-lens bokeh from an image and its metric depth: disk blur of radius K x |1/focus - 1/depth| px, "
                   "occlusion-aware, in linear light.")
    CATEGORY = CAT
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("image", "focus_distance_m")
    OUTPUT_TOOLTIPS = ("The rendered bokeh image.", "The focus distance used (m), first batch item.")

    @classmethod
    def INPUT_TYPES(cls):
        req = {
            "image": ("IMAGE", {"tooltip": "All-in-focus image(s)."}),
            "depth": (DEPTH, {"tooltip": "Metric depth in metres (resized to the image if needed)."}),
            "K": ("FLOAT", {"default": 20.0, "min": 0.01, "max": 1000.0, "step": 0.5,
                            "tooltip": "Bokeh strength K (px*m) at this image's width, e.g. from Bokeh K from Lens."}),
        }
        req.update(_focus_inputs())
        req.update(_look_inputs())
        req["use_confidence"] = ("BOOLEAN", {"default": True, "tooltip":
                                 "Where the depth carries a confidence map, smooth uncertain blur radii toward confident neighbours."})
        return {"required": req, "optional": {
            "focus_mask": ("MASK", {"tooltip": "Subject mask for 'auto (median)' focus."})}}

    def render(self, image, depth, K, focus_mode, focus_distance_m, gamma, highlight, aperture_blades,
               blade_rotation, use_confidence, focus_mask=None):
        d, conf = _depth_for(image, depth)
        focus = render.resolve_focus(d, image, focus_mode, focus_distance_m, focus_mask)
        dev = seam.torch_device()
        bar = seam.Progress(1)  # the renderer reports its own layer count
        out = render.render_bokeh(image.to(dev), (1.0 / d).to(dev), float(K), (1.0 / focus).to(dev),
                                  confidence=conf.to(dev) if (use_confidence and conf is not None) else None,
                                  callback=bar.callback, **_options(gamma, highlight, aperture_blades, blade_rotation))
        return (_to_out(out), float(focus[0]))


class BokehStackFromDepth:
    DESCRIPTION = "Render one bokeh frame per K at a fixed focus: a physically exact BOKEH_STACK (source 'render')."
    CATEGORY = CAT
    FUNCTION = "render"
    RETURN_TYPES = (BOKEH_STACK, "IMAGE")
    RETURN_NAMES = ("bokeh_stack", "frames")
    OUTPUT_TOOLTIPS = ("The stack (frames, K values, reference, focus) for Depth from Bokeh Sweep or Stage-2.",
                       "All frames as one IMAGE batch (image-major: image 0's frames first).")

    @classmethod
    def INPUT_TYPES(cls):
        req = {
            "image": ("IMAGE", {"tooltip": "All-in-focus image(s); they become the stack's reference."}),
            "depth": (DEPTH, {"tooltip": "Metric depth in metres."}),
            "k_list": (K_LIST, {"tooltip": "K values, one frame each (from Bokeh K List or Synthetic Bokeh Scene)."}),
        }
        req.update(_focus_inputs())
        req.update(_look_inputs())
        return {"required": req}

    def render(self, image, depth, k_list, focus_mode, focus_distance_m, gamma, highlight, aperture_blades, blade_rotation):
        ks = [float(k) for k in k_list]
        if not ks:
            raise ValueError("k_list is empty: give at least one K")
        d, _ = _depth_for(image, depth)
        focus = render.resolve_focus(d, image, focus_mode, focus_distance_m)
        dev = seam.torch_device()
        bar = seam.Progress(len(ks))
        opts = _options(gamma, highlight, aperture_blades, blade_rotation)
        frames = render.bokeh_stack(image.to(dev), (1.0 / d).to(dev), ks, (1.0 / focus).to(dev),
                                    callback=bar.callback, **opts)
        frames = _to_out(frames)
        stack = BokehStack(frames=frames, k_values=torch.tensor(ks), reference=_to_out(image.float()), source="render",
                           meta={"focus_m": [float(f) for f in focus], "renderer": opts})
        b, n = frames.shape[:2]
        return (stack, frames.reshape(b * n, *frames.shape[2:]))


class FocusStackFromDepth:
    DESCRIPTION = "Fixed aperture, focus swept uniformly in disparity across the scene's depth range."
    CATEGORY = CAT
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("frames", "focus_distances")
    OUTPUT_TOOLTIPS = ("Frames, image-major (image 0's frames first), focus moving from far to near.",
                       "Focus distance of every frame (m), per image.")

    @classmethod
    def INPUT_TYPES(cls):
        req = {
            "image": ("IMAGE", {"tooltip": "All-in-focus image(s)."}),
            "depth": (DEPTH, {"tooltip": "Metric depth in metres."}),
            "K": ("FLOAT", {"default": 20.0, "min": 0.01, "max": 1000.0, "step": 0.5, "tooltip": "Bokeh strength K (px*m), fixed aperture."}),
            "frames": ("INT", {"default": 5, "min": 2, "max": 64, "tooltip": "Number of focus positions."}),
            "margin": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 0.45, "step": 0.01,
                                 "tooltip": "Fraction of the disparity range left out at each end of the sweep."}),
        }
        req.update(_look_inputs())
        return {"required": req}

    def render(self, image, depth, K, frames, margin, gamma, highlight, aperture_blades, blade_rotation):
        d, _ = _depth_for(image, depth)
        disp = 1.0 / d
        fds = render.uniform_focus_disparities(disp, int(frames), margin)  # far to near
        dev = seam.torch_device()
        bar = seam.Progress(int(frames))
        out = render.focus_stack(image.to(dev), disp.to(dev), fds.to(dev), float(K), callback=bar.callback,
                                 **_options(gamma, highlight, aperture_blades, blade_rotation))
        b, n = out.shape[:2]
        text = "\n".join(f"[{i}] " + ", ".join(f"{1.0 / float(f):.3g} m" for f in row) for i, row in enumerate(fds))
        return (_to_out(out.reshape(b * n, *out.shape[2:])), text)


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
        if not isinstance(bokeh_stack, BokehStack):
            raise ValueError("bokeh_stack must be a BOKEH_STACK (from Bokeh Stack from Depth or Stage-1)")
        focus = focus_distance_m if focus_distance_m > 0 else bokeh_stack.meta.get("focus_m")
        if focus is None:
            raise ValueError("focus_distance_m is 0 and the stack does not record its focus: type the focus distance (m)")
        if side == "prior depth":
            if prior_depth is None:
                raise ValueError("side is 'prior depth' but no prior_depth is connected")
            h, w = bokeh_stack.frames.shape[2:4]
            side = render.resize_to(prior_depth.depth.float(), h, w)
        dev = seam.torch_device()
        bar = seam.Progress(1)
        res = dfb.depth_from_bokeh_sweep(bokeh_stack.reference.to(dev), bokeh_stack.frames.to(dev),
                                         bokeh_stack.k_values.to(dev), focus,
                                         side=side.to(dev) if isinstance(side, torch.Tensor) else side,
                                         max_radius=max_radius or None, window=int(window), gamma=gamma,
                                         callback=bar.callback)
        report = dfb.linearity_report(res)
        depth = DepthMap(depth=_to_out(res["depth"]), confidence=_to_out(res["confidence"]),
                         meta={"source": "depth_from_bokeh_sweep", "focus_m": res["focus_m"].tolist(),
                               "linearity": res["linearity_overall"].tolist()})
        preview = _to_out(res["confidence"]).unsqueeze(-1).expand(-1, -1, -1, 3).contiguous()
        return (depth, preview, report)


class DepthMetricsNode:
    DESCRIPTION = "AbsRel, SqRel, RMSE, RMSE-log and delta1..3 of a depth prediction against ground truth (metric, optional median scaling)."
    CATEGORY = CAT
    FUNCTION = "measure"
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("report", "json")
    OUTPUT_TOOLTIPS = ("Readable metrics.", "The same metrics as JSON.")

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
        for name, d in (("prediction", prediction), ("ground_truth", ground_truth)):
            if not isinstance(d, DepthMap):
                raise ValueError(f"{name} must be a METRIC_DEPTH")
        pred, gt = prediction.depth.float(), ground_truth.depth.float().to(prediction.depth.device)
        sel = None if mask is None else (mask.float().reshape(-1, *mask.shape[-2:]) > 0.5).to(pred.device)
        if min_confidence > 0 and prediction.confidence is not None:
            conf_ok = prediction.confidence.to(pred.device) >= min_confidence
            sel = conf_ok if sel is None else conf_ok & sel
        m = metrics.depth_metrics(pred, gt, sel, align=align, max_depth=max_depth_m if max_depth_m > 0 else float("inf"))
        return (metrics.format_depth_metrics(m), json.dumps(m))


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
        bokeh = scene.render(k)
        depth = DepthMap(depth=_to_out(scene.depth), meta={"source": "synthetic", "seed": int(seed)})
        settings = {"seed": int(seed), "size": int(size), "k_values": scene.k_values, "f_numbers": scene.f_numbers,
                    "focus_m": scene.focus_m, "focus_disparity": scene.focus_disparity, **scene.meta}
        return (_to_out(scene.image), depth, _to_out(bokeh), list(scene.k_values), float(k), float(scene.focus_m),
                json.dumps(settings))


NODE_CLASS_MAPPINGS = {
    "BokehDepthRenderBokeh": BokehRenderFromDepth,
    "BokehDepthBokehStackFromDepth": BokehStackFromDepth,
    "BokehDepthFocusStackFromDepth": FocusStackFromDepth,
    "BokehDepthFromBokehSweep": DepthFromBokehSweep,
    "BokehDepthMetrics": DepthMetricsNode,
    "BokehDepthSyntheticScene": SyntheticBokehScene,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthRenderBokeh": "Render Bokeh from Depth",
    "BokehDepthBokehStackFromDepth": "Bokeh Stack from Depth",
    "BokehDepthFocusStackFromDepth": "Focus Stack from Depth",
    "BokehDepthFromBokehSweep": "Depth from Bokeh Sweep",
    "BokehDepthMetrics": "Depth Metrics",
    "BokehDepthSyntheticScene": "Synthetic Bokeh Scene",
}

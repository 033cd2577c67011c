"""Physics nodes run end to end without ComfyUI and without any file: scene -> stack -> depth -> metrics."""

import json

import numpy as np
import pytest
import torch

from support import ROOT, load_extension, widget_inputs

EXT = load_extension()
N = EXT.NODE_CLASS_MAPPINGS
EXAMPLES = ROOT / "workflows" / "example_inputs"


def _node(name):
    return N[name]()


def test_registered_with_issue_names():
    names = set(EXT.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert {"BokehDepth Render Bokeh from Depth", "BokehDepth Bokeh Stack from Depth",
            "BokehDepth Focus Stack from Depth", "BokehDepth Depth from Bokeh Sweep", "BokehDepth Depth Metrics",
            "BokehDepth Synthetic Bokeh Scene"} <= names
    for cls in N.values():
        if cls.__module__.endswith(".physics"):
            assert cls.CATEGORY == "BokehDepth/Physics"


@pytest.mark.parametrize("node_id", ["BokehDepthRenderBokeh", "BokehDepthBokehStackFromDepth"])
def test_focus_widgets_follow_the_mode(node_id):
    """A fixed-distance node shows the distance and no mode; its Auto Focus twin the reverse."""
    fixed, auto = N[node_id].INPUT_TYPES(), N[node_id + "AutoFocus"].INPUT_TYPES()
    assert "focus_distance_m" in fixed["required"] and "focus_mode" not in fixed["required"]
    assert "focus_mask" not in fixed.get("optional", {})
    assert "focus_distance_m" not in auto["required"] and "focus_mask" in auto["optional"]
    assert "distance" not in auto["required"]["focus_mode"][0] and len(auto["required"]["focus_mode"][0]) == 2
    assert N[node_id + "AutoFocus"].RETURN_TYPES == N[node_id].RETURN_TYPES


@pytest.fixture(scope="module")
def scene():
    return _node("BokehDepthSyntheticScene").make(seed=1, size=96, num_k=3)


def test_weight_free_graph(scene):
    aif, depth, bokeh, k_list, k, focus, settings = scene
    assert aif.shape == bokeh.shape == (1, 96, 96, 3) and depth.depth.shape == (1, 96, 96)
    assert len(k_list) == 3 and k == k_list[-1] and json.loads(settings)["seed"] == 1
    rendered, used = _node("BokehDepthRenderBokeh").render(aif, depth, k, focus, 2.2, 0.0, 0, 0.0, True)
    assert torch.allclose(rendered, bokeh, atol=1e-5) and used == pytest.approx(focus)
    auto_render = _node("BokehDepthRenderBokehAutoFocus")
    _, auto = auto_render.render(aif, depth, k, "auto (median)", 2.2, 0.0, 6, 10.0, True)
    assert auto == pytest.approx(float(depth.depth.median()), rel=1e-5)
    subject = (depth.depth < focus * 1.5).float()  # the foreground
    _, masked = auto_render.render(aif, depth, k, "auto (median)", 2.2, 0.0, 0, 0.0, True, focus_mask=subject)
    assert masked == pytest.approx(float(depth.depth[subject > 0].median()), rel=1e-5) and masked < auto

    ks = [k, k * 2, k * 3]  # background radii up to ~12 px
    stack, frames, labelled = _node("BokehDepthBokehStackFromDepth").render(aif, depth, ks, focus, 2.2, 0.0, 0, 0.0)
    assert stack.source == "render" and stack.frames.shape == (1, 3, 96, 96, 3) and frames.shape == (3, 96, 96, 3)
    # the labelled copy (8-bit) differs only in the caption box at the top-left corner
    assert labelled.shape == frames.shape and torch.allclose(labelled[:, 48:], frames[:, 48:], atol=0.5 / 255 + 1e-6)
    assert not torch.equal(labelled[:, :16, :48], frames[:, :16, :48])
    assert stack.k_list() == pytest.approx(ks) and stack.meta["focus_m"] == [pytest.approx(focus)]
    auto_stack = _node("BokehDepthBokehStackFromDepthAutoFocus").render(aif, depth, ks, "auto (edges)", 2.2, 0.0, 0, 0.0)[0]
    assert auto_stack.meta["focus_m"][0] != pytest.approx(focus) and auto_stack.frames.shape == stack.frames.shape

    est, preview, report = _node("BokehDepthFromBokehSweep").estimate(stack, 0.0, "behind", 0.0, 4, 2.2)
    assert est.depth.shape == (1, 96, 96) and est.confidence is not None and preview.shape == (1, 96, 96, 3)
    assert "linearity" in report
    text, js, plot = _node("BokehDepthMetrics").measure(est, depth, "none", 0.5, 0.0)
    m = json.loads(js)
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and plot.shape[2] > plot.shape[1]
    # far background amplifies the inverse-depth error (depth = 1 / (1/S1 - delta)), hence the loose bound
    assert "abs_rel" in text and m["valid_pixels"] > 0 and m["abs_rel"] < 0.3
    with pytest.raises(ValueError, match="prior"):
        _node("BokehDepthFromBokehSweep").estimate(stack, 0.0, "prior depth", 0.0, 4, 2.2)


def test_focus_stack_and_batches(scene):
    aif, depth, *_ = scene
    imgs = torch.cat([aif, aif.flip(2)])
    frames, text, labelled = _node("BokehDepthFocusStackFromDepth").render(imgs, depth, 10.0, 3, 0.0, 2.2, 0.0, 0,
                                                                           0.0)
    assert frames.shape == (6, 96, 96, 3) and text.count("[") == 2 and labelled.shape == frames.shape
    d = depth.depth
    assert text.splitlines()[0].startswith(f"[0] {float(d.max()):.3g} m")  # far first


def test_bad_inputs(scene):
    aif, depth, _, k_list, k, focus, _ = scene
    DepthMap = EXT.bokehdepth_core.types.DepthMap
    bad = DepthMap(depth=torch.zeros(1, 96, 96))
    with pytest.raises(ValueError, match="depth must be > 0"):
        _node("BokehDepthRenderBokeh").render(aif, bad, k, focus, 2.2, 0.0, 0, 0.0, True)
    with pytest.raises(ValueError, match="k_list"):
        _node("BokehDepthBokehStackFromDepth").render(aif, depth, [], focus, 2.2, 0.0, 0, 0.0)
    with pytest.raises(ValueError, match="depth must be a METRIC_DEPTH"):
        _node("BokehDepthRenderBokeh").render(aif, "not depth", k, focus, 2.2, 0.0, 0, 0.0, True)
    with pytest.raises(ValueError, match="bokeh_stack must be a BOKEH_STACK"):
        _node("BokehDepthFromBokehSweep").estimate(aif, 0.0, "behind", 0.0, 4, 2.2)
    with pytest.raises(ValueError, match="ground_truth must be a METRIC_DEPTH"):
        _node("BokehDepthMetrics").measure(depth, aif, "none", 0.0, 0.0)


def test_metrics_node_mask_and_confidence(scene):
    _, depth, *_ = scene
    DepthMap = EXT.bokehdepth_core.types.DepthMap
    pred = depth.depth.clone()
    pred[:, :48] *= 2  # the top half is wrong ...
    conf = torch.ones_like(pred)
    conf[:, :48] = 0.2  # ... and flagged as unsure
    prediction = DepthMap(depth=pred, confidence=conf)
    assert json.loads(_node("BokehDepthMetrics").measure(prediction, depth, "none", 0.0, 0.0)[1])["abs_rel"] > 0.4
    assert json.loads(_node("BokehDepthMetrics").measure(prediction, depth, "none", 0.5, 0.0)[1])["abs_rel"] == 0.0
    mask = torch.zeros(1, 96, 96)
    mask[:, 48:] = 1
    m = json.loads(_node("BokehDepthMetrics").measure(prediction, depth, "none", 0.0, 0.0, mask=mask)[1])
    assert m["abs_rel"] == 0.0 and m["valid_pixels"] == 48 * 96


def _load_image(image):
    """ComfyUI's Load Image, for graphs run without ComfyUI: the picture and an empty mask."""
    from PIL import Image

    with Image.open(EXAMPLES / image) as img:
        pixels = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]
    return pixels, torch.zeros(pixels.shape[:3])


def _run_workflow(path, overrides=None):
    """Execute a UI-format graph with our node classes and Load Image (ComfyUI's preview, 3-D view
    and note nodes are skipped)."""
    wf = json.loads(path.read_text())
    by_id = {n["id"]: n for n in wf["nodes"]}
    links = {lid: (src, slot) for lid, src, slot, _d, _ds, _t in wf["links"]}
    results = {}

    def run(nid):
        if nid in results:
            return results[nid]
        n = by_id[nid]
        if n["type"] == "LoadImage":
            results[nid] = _load_image(n["widgets_values"][0])
            return results[nid]
        if n["type"] not in N:
            results[nid] = None
            return None
        cls = N[n["type"]]
        kwargs, values, vi = {}, n["widgets_values"], 0
        for name, _typ, _o in widget_inputs(cls):
            kwargs[name] = values[vi]
            vi += 1
            if vi < len(values) and values[vi] in ("fixed", "randomize"):
                vi += 1
        kwargs.update((overrides or {}).get(n["type"], {}))
        for inp in n["inputs"]:
            if inp["link"] is not None:
                src, slot = links[inp["link"]]
                kwargs[inp.get("widget", {}).get("name", inp["name"])] = run(src)[slot]
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        results[nid] = out["result"] if isinstance(out, dict) else out
        return results[nid]

    for nid in by_id:
        run(nid)
    return {by_id[i]["type"]: r for i, r in results.items() if r is not None}


def _workflow(number: str):
    return next((ROOT / "workflows").glob(f"{number} *.json"))


def test_shipped_workflow_runs_end_to_end():
    out = _run_workflow(_workflow("01"), {"BokehDepthSyntheticScene": {"size": 96}})
    report, js = out["BokehDepthMetrics"][:2]
    assert json.loads(js)["valid_pixels"] > 0
    assert "linearity" in out["BokehDepthFromBokehSweep"][2]
    assert out["BokehDepthBokehStackFromDepth"][2].shape == (4, 96, 96, 3)  # labelled frames, one per K


@pytest.mark.slow
def test_weight_free_example_workflows_run(tmp_path, monkeypatch):
    """The EXIF and interop lessons on the shipped example files: K from the photo's EXIF drives the
    stack; another model's 8-bit depth map drives the renderer, a mesh and an EXR file."""
    monkeypatch.setenv("BOKEHDEPTH_INPUT_DIR", str(EXAMPLES))
    monkeypatch.setenv("BOKEHDEPTH_OUTPUT_DIR", str(tmp_path))
    out = _run_workflow(_workflow("02"))
    k, _k512, _kcrop, summary, _est, photo = out["BokehDepthKFromExif"]
    assert "f/8" in summary and photo.shape == (1, 512, 512, 3)
    ks = [k, 2.857 * k, 5.714 * k]  # f/8, f/2.8, f/1.4
    assert out["BokehDepthKList"][0] == pytest.approx(ks)
    stack = out["BokehDepthBokehStackFromDepth"][0]
    assert stack.k_list() == pytest.approx(ks) and stack.meta["focus_m"] == [pytest.approx(1.21)]

    out = _run_workflow(_workflow("03"))
    k_wide = out["BokehDepthKFromExif"][0]
    assert k_wide == pytest.approx(k * 8 / 1.4, rel=1e-6)  # f_number 1.4 typed over the EXIF f/8
    depth = out["BokehDepthDepthFromImage"][0].depth
    assert 1.0 <= float(depth.min()) and float(depth.max()) <= 4.0
    bokeh, focus_m = out["BokehDepthRenderBokehAutoFocus"]
    assert bokeh.shape == (1, 512, 512, 3) and 1.0 < focus_m < 4.0
    written = sorted(p.name for p in (tmp_path / "BokehDepth").iterdir())
    assert any(n.endswith(".glb") for n in written) and any(n.endswith(".exr") for n in written)

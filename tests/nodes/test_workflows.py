"""Shipped workflows (UI format): they agree with the node definitions (types, slots, widget values),
read as lessons (a note, groups, model entries, text outputs shown) and lay out cleanly (no overlaps,
links left to right), with a thumbnail and example inputs that exist."""

import json
import re

import pytest
from PIL import Image

from support import ROOT, load_extension, widget_inputs

EXT = load_extension()
NODES = EXT.NODE_CLASS_MAPPINGS
FOLDER = ROOT / "workflows"
FILES = sorted(FOLDER.glob("*.json"))
EXAMPLES = FOLDER / "example_inputs"
# Built-in node types used by the workflows; the whole-server check runs them in a real ComfyUI, and
# test_core_types_exist checks the names against the ComfyUI tree when one is available.
CORE = {"LoadImage", "PreviewImage", "PreviewAny", "SaveImage", "ImageBatch", "Preview3D", "UNETLoader",
        "DualCLIPLoader", "VAELoader"}
FRONTEND_ONLY = {"MarkdownNote"}
MODEL_FOLDERS = {"bokehdepth", "diffusion_models", "text_encoders", "vae"}
LOADERS = {"UNETLoader", "DualCLIPLoader", "VAELoader", "BokehDepthLoadBokehAdapter", "BokehDepthLoadDepthModel"}
PICKERS = {"LoadImage": "image", "BokehDepthKFromExif": "image", "BokehDepthCameraFromPhoto": "photo",
           "BokehDepthLoadDepth": "depth_file"}
TEXT_OUTPUTS = {"info", "summary", "report", "linearity_report"}
TITLE_BAR = 30


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _widget_values(cls, values):
    """{widget name: value} of one of our nodes, checking count, ranges and choices."""
    out, vi = {}, 0
    widgets = widget_inputs(cls)
    uploads = sum(1 for _n, _t, o in widgets if o.get("image_upload"))
    controls = sum(1 for n, t, o in widgets if (t == "INT" and n in ("seed", "noise_seed"))
                   or o.get("control_after_generate"))
    assert len(widgets) + controls <= len(values) <= len(widgets) + controls + uploads, (
        f"{len(values)} widget values for {len(widgets)} widgets")
    for name, typ, opts in widgets:
        v = values[vi]
        vi += 1
        if (typ == "INT" and name in ("seed", "noise_seed")) or opts.get("control_after_generate"):
            assert values[vi] in ("fixed", "randomize", "increment", "decrement"), f"{name}: control value"
            vi += 1
        if isinstance(typ, list) and not opts.get("image_upload"):
            assert v in typ, f"{name}={v!r} not among {typ}"
        elif typ in ("INT", "FLOAT"):
            assert isinstance(v, (int, float)) and not isinstance(v, bool), f"{name}={v!r}"
            assert opts.get("min", -1e30) <= v <= opts.get("max", 1e30), f"{name}={v} out of range"
        elif typ == "BOOLEAN":
            assert isinstance(v, bool), f"{name}={v!r}"
        elif typ == "STRING":
            assert isinstance(v, str), f"{name}={v!r}"
        out[name] = v
    assert values[vi:] == ["image"] * (len(values) - vi), "only the upload button's value may follow"
    return out


def test_workflows_are_numbered_with_portable_names():
    assert len(FILES) >= 9
    stems = [p.stem for p in FILES]
    for stem in stems:
        assert re.fullmatch(r"\d\d [A-Za-z0-9][A-Za-z0-9 -]*[A-Za-z0-9]", stem), f"name not portable: {stem!r}"
        assert "  " not in stem
    assert [int(s[:2]) for s in stems] == list(range(1, len(stems) + 1)), "numbers run 01, 02, ..."


@pytest.mark.parametrize("path", FILES, ids=[p.stem[:2] for p in FILES])
def test_thumbnail_beside_workflow(path):
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"missing thumbnail {thumb.name}"
    with Image.open(thumb) as img:
        assert img.format == "JPEG" and img.width == img.height >= 256


@pytest.mark.parametrize("path", FILES, ids=[p.stem[:2] for p in FILES])
def test_workflow_matches_nodes(path):
    wf = _load(path)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_node_id"] >= max(nodes) and wf["last_link_id"] >= max([lk[0] for lk in wf["links"]] or [0])
    for n in wf["nodes"]:
        t = n["type"]
        assert t in NODES or t in CORE or t in FRONTEND_ONLY, f"unknown node type {t}"
        if t not in NODES:
            continue
        cls = NODES[t]
        try:
            _widget_values(cls, n.get("widgets_values", []))
        except AssertionError as e:
            raise AssertionError(f"node {n['id']} ({t}): {e}") from None
        outs = [o["type"] for o in n.get("outputs", [])]
        assert outs == list(cls.RETURN_TYPES), f"node {n['id']} ({t}) outputs {outs}"
        assert [o["name"] for o in n["outputs"]] == list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))
        spec = cls.INPUT_TYPES()
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for inp in n["inputs"]:
            name = inp.get("widget", {}).get("name") or inp["name"]
            assert name in declared or inp["type"] == "IMAGEUPLOAD", f"node {n['id']} ({t}) has no input {name}"
        missing = [k for k, d in spec.get("required", {}).items()
                   if not (isinstance(d[0], list) or d[0] in ("INT", "FLOAT", "STRING", "BOOLEAN"))
                   and not any(i["name"] == k and i["link"] is not None for i in n["inputs"])]
        assert not missing, f"node {n['id']} ({t}): required inputs not connected: {missing}"
    seen = set()
    for lid, src, sslot, dst, dslot, typ in wf["links"]:
        a, b = nodes[src], nodes[dst]
        assert lid not in seen
        seen.add(lid)
        assert a["outputs"][sslot]["type"] == typ and lid in a["outputs"][sslot]["links"], f"link {lid} source"
        assert b["inputs"][dslot]["link"] == lid, f"link {lid} not registered on its target"
        if a["type"] in NODES:
            assert NODES[a["type"]].RETURN_TYPES[sslot] == typ, f"link {lid} type {typ}"
        if b["type"] in NODES:
            spec = NODES[b["type"]].INPUT_TYPES()
            name = b["inputs"][dslot].get("widget", {}).get("name") or b["inputs"][dslot]["name"]
            want = {**spec.get("required", {}), **spec.get("optional", {})}[name][0]
            assert want == typ or want == "*", f"link {lid} {typ} -> {name} ({want})"
    for n in wf["nodes"]:
        for o in n.get("outputs", []):
            assert all(lk in seen for lk in o.get("links") or []), f"node {n['id']} lists a link that does not exist"


@pytest.mark.parametrize("path", FILES, ids=[p.stem[:2] for p in FILES])
def test_workflow_teaches(path):
    """One Markdown note, groups around every other node, model entries on loaders, text shown."""
    wf = _load(path)
    notes = [n for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1 and notes[0]["widgets_values"][0].startswith(f"# {path.stem[:2]} ")
    text = notes[0]["widgets_values"][0]
    boxes = [g["bounding"] for g in wf["groups"]]
    assert len(boxes) >= 3
    for n in wf["nodes"]:
        if n["type"] == "MarkdownNote":
            continue
        x, y = n["pos"]
        w, h = n["size"]
        inside = [b for b in boxes if b[0] <= x and x + w <= b[0] + b[2] and b[1] <= y - TITLE_BAR and y + h <= b[1] + b[3]]
        assert len(inside) == 1, f"node {n['id']} ({n['type']}) is in {len(inside)} groups"
        if n["type"] in LOADERS:
            models = n["properties"].get("models")
            names = [v for v in n["widgets_values"] if isinstance(v, str) and "." in v]
            assert models and sorted(m["name"] for m in models) == sorted(names), f"node {n['id']} models"
            for m in models:
                assert m["directory"] in MODEL_FOLDERS and m["url"].startswith("https://huggingface.co/")
                assert m["name"] in text, f"the note does not name {m['name']}"
        if n["type"] in PICKERS:
            spec = NODES[n["type"]].INPUT_TYPES()["required"] if n["type"] in NODES else None
            index = list(spec).index(PICKERS[n["type"]]) if spec else 0
            name = n["widgets_values"][index]
            assert (EXAMPLES / name).is_file(), f"example input {name} is not shipped"
            assert name in text, f"the note does not say where {name} comes from"
        if n["type"] in NODES:
            for o in n["outputs"]:
                if o["name"] in TEXT_OUTPUTS:
                    assert o["links"], f"node {n['id']} ({n['type']}) output {o['name']} is not shown"


@pytest.mark.parametrize("path", FILES, ids=[p.stem[:2] for p in FILES])
def test_layout_is_clean(path):
    """Nodes (with their title bars) at least 40 px apart, every link running left to right."""
    wf = _load(path)
    rects = {n["id"]: (n["pos"][0], n["pos"][1] - TITLE_BAR, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in wf["nodes"]}
    ids = sorted(rects)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            ra, rb = rects[a], rects[b]
            apart = ra[2] + 40 <= rb[0] or rb[2] + 40 <= ra[0] or ra[3] + 40 <= rb[1] or rb[3] + 40 <= ra[1]
            assert apart, f"nodes {a} and {b} are closer than 40 px"
    for lid, src, _s, dst, _d, _t in wf["links"]:
        assert rects[dst][0] > rects[src][2], f"link {lid} runs right to left"
    assert "ds" not in wf.get("extra", {}), "no stored view: ComfyUI fits the graph to the window"


def test_readme_lists_every_workflow_with_its_thumbnail():
    from urllib.parse import quote

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in FILES:
        assert f"**{path.stem}**" in readme and quote(f"workflows/{path.stem}.jpg") in readme, path.stem


def test_requires_comfyui_matches_the_stage1_patch():
    import importlib

    patch = importlib.import_module(EXT.__name__ + ".nodes.bokeh_patch")
    assert f'requires-comfyui = ">={patch.MIN_COMFYUI}"' in (ROOT / "pyproject.toml").read_text()


def test_core_types_exist(comfyui):
    import importlib

    import nodes as comfy_nodes

    known = set(comfy_nodes.NODE_CLASS_MAPPINGS)
    for extra in ("nodes_preview_any", "nodes_load_3d"):  # ComfyUI loads these at start-up
        known |= set(importlib.import_module(f"comfy_extras.{extra}").NODE_CLASS_MAPPINGS)
    assert CORE <= known, CORE - known

"""Shipped workflows (UI format) agree with the node definitions: types, slots and widget values."""

import json

import pytest

from support import ROOT, load_extension, widget_inputs

EXT = load_extension()
NODES = EXT.NODE_CLASS_MAPPINGS
FILES = sorted((ROOT / "workflows").glob("*.json"))


def test_there_are_workflows():
    assert FILES


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_workflow_matches_nodes(path):
    wf = json.loads(path.read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_node_id"] >= max(nodes)
    for n in wf["nodes"]:
        t = n["type"]
        # Built-in node types are checked against a real ComfyUI by the whole-server check.
        assert t in NODES or not t.startswith("BokehDepth"), f"{path.name}: unknown node type {t}"
        if t not in NODES:
            continue
        cls = NODES[t]
        widgets = widget_inputs(cls)
        extra = sum(1 for name, typ, o in widgets
                    if (typ == "INT" and name in ("seed", "noise_seed")) or o.get("control_after_generate")
                    or o.get("image_upload"))
        values = n.get("widgets_values", [])
        assert len(widgets) <= len(values) <= len(widgets) + extra, (
            f"{path.name}: node {n['id']} ({t}) has {len(values)} widget values for {len(widgets)} widgets")
        vi = 0
        for name, typ, opts in widgets:
            v = values[vi]
            vi += 1
            if isinstance(typ, list) and not opts.get("image_upload"):
                assert v in typ, f"{path.name}: node {n['id']} {name}={v!r} not among {typ}"
            elif typ in ("INT", "FLOAT"):
                assert isinstance(v, (int, float)), f"{path.name}: node {n['id']} {name}={v!r}"
                assert opts.get("min", -1e30) <= v <= opts.get("max", 1e30), f"{path.name}: {name}={v} out of range"
            has_control = (typ == "INT" and name in ("seed", "noise_seed")) or opts.get("control_after_generate") \
                or opts.get("image_upload")
            if has_control and vi < len(values) and values[vi] in ("fixed", "randomize", "increment", "decrement", "image"):
                vi += 1
        outs = list(cls.RETURN_TYPES)
        assert [o["type"] for o in n.get("outputs", [])] == outs, f"{path.name}: node {n['id']} outputs differ"
    for lid, src, sslot, dst, dslot, typ in wf["links"]:
        a, b = nodes[src], nodes[dst]
        if a["type"] in NODES:
            assert NODES[a["type"]].RETURN_TYPES[sslot] == typ, f"{path.name}: link {lid} type {typ}"
        assert b["inputs"][dslot]["link"] == lid, f"{path.name}: link {lid} not registered on its target"
        if b["type"] in NODES:
            spec = NODES[b["type"]].INPUT_TYPES()
            name = b["inputs"][dslot].get("widget", {}).get("name") or b["inputs"][dslot]["name"]
            decl = {**spec.get("required", {}), **spec.get("optional", {})}[name]
            want = decl[0]
            assert want == typ or want == "*" or (isinstance(want, list)), f"{path.name}: link {lid} {typ} -> {want}"

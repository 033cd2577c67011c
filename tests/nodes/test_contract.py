"""Every node class against ComfyUI's classic node contract, without ComfyUI installed."""

import inspect

import pytest

from support import load_extension

EXT = load_extension()
NODES = sorted(EXT.NODE_CLASS_MAPPINGS.items())
BUILTIN_TYPES = {"IMAGE", "MASK", "FLOAT", "INT", "STRING", "BOOLEAN", "LATENT", "MODEL", "CLIP", "VAE", "CONDITIONING"}


def test_extension_exports_nodes():
    assert NODES, "no node registered"
    assert set(EXT.NODE_DISPLAY_NAME_MAPPINGS) == set(EXT.NODE_CLASS_MAPPINGS)
    assert not getattr(EXT.nodes, "SKIPPED", {}), f"node families failed to import: {EXT.nodes.SKIPPED}"
    for name in EXT.NODE_CLASS_MAPPINGS:
        assert name.startswith("BokehDepth"), f"{name}: node ids are prefixed so they never collide with built-ins"


def test_calibration_nodes_present():
    names = set(EXT.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert {"BokehDepth K from Lens", "BokehDepth K from Photo EXIF", "BokehDepth K List", "BokehDepth K Range"} <= names


@pytest.mark.parametrize("name,cls", NODES, ids=[n for n, _ in NODES])
def test_node_contract(name, cls):
    spec = cls.INPUT_TYPES()
    assert isinstance(spec, dict) and set(spec) <= {"required", "optional", "hidden"}
    assert "required" in spec
    params = []
    for section in ("required", "optional"):
        for inp, decl in spec.get(section, {}).items():
            assert isinstance(decl, tuple) and 1 <= len(decl) <= 2, f"{name}.{inp}: (TYPE, options) tuple"
            typ = decl[0]
            assert isinstance(typ, (str, list)), f"{name}.{inp}: type must be a name or a combo list"
            opts = decl[1] if len(decl) == 2 else {}
            assert isinstance(opts, dict)
            assert opts.get("tooltip"), f"{name}.{inp}: every input has a tooltip"
            if typ in ("INT", "FLOAT") and "default" in opts:
                assert opts.get("min", -float("inf")) <= opts["default"] <= opts.get("max", float("inf"))
            if isinstance(typ, list) and typ and "default" in opts:
                assert opts["default"] in typ, f"{name}.{inp}: combo default not among the options"
            params.append(inp)
    assert isinstance(cls.RETURN_TYPES, tuple)
    if hasattr(cls, "RETURN_NAMES"):
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    if hasattr(cls, "OUTPUT_IS_LIST"):
        assert len(cls.OUTPUT_IS_LIST) == len(cls.RETURN_TYPES)
    assert cls.CATEGORY == "BokehDepth" or cls.CATEGORY.startswith("BokehDepth/")
    fn = getattr(cls, cls.FUNCTION)
    sig = inspect.signature(fn)
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    for p in params:
        assert has_kwargs or p in sig.parameters, f"{name}.{cls.FUNCTION} does not accept input {p!r}"
    required = [p.name for p in sig.parameters.values()
                if p.name != "self" and p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for p in required:
        assert p in spec["required"] or p in spec.get("hidden", {}), f"{name}: argument {p!r} has no required input"
    if not cls.RETURN_TYPES:
        assert getattr(cls, "OUTPUT_NODE", False), f"{name}: a node without outputs must be an OUTPUT_NODE"

"""Every node has a help page (web/docs/<node id>.md, what ComfyUI's node library shows) that names
its current inputs and outputs, and the extension tells ComfyUI where the pages are."""

import os

import pytest

from support import ROOT, load_extension

EXT = load_extension()
DOCS = os.path.join(ROOT, "web", "docs")


def test_web_directory_is_declared():
    assert EXT.WEB_DIRECTORY == "./web"
    assert os.path.isdir(os.path.join(ROOT, EXT.WEB_DIRECTORY, "docs"))


@pytest.mark.parametrize("node_id", sorted(EXT.NODE_CLASS_MAPPINGS))
def test_help_page_names_inputs_and_outputs(node_id):
    path = os.path.join(DOCS, f"{node_id}.md")
    assert os.path.isfile(path), f"write {os.path.relpath(path, ROOT)}"
    text = open(path, encoding="utf-8").read()
    cls = EXT.NODE_CLASS_MAPPINGS[node_id]
    assert text.startswith(f"# {EXT.NODE_DISPLAY_NAME_MAPPINGS[node_id]}\n")
    names = [n for group in cls.INPUT_TYPES().values() for n in group]
    names += list(getattr(cls, "RETURN_NAMES", ()))
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"{node_id}.md does not describe {missing}"


def test_display_names_are_prefixed_and_distinct():
    names = EXT.NODE_DISPLAY_NAME_MAPPINGS
    assert set(names) == set(EXT.NODE_CLASS_MAPPINGS)
    for node_id in EXT.NODE_CLASS_MAPPINGS:
        assert names[node_id].startswith("BokehDepth "), node_id
    assert len(set(names.values())) == len(names)

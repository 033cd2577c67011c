"""Weight files are told apart by their tensor names alone, in every form the loaders accept,
without running a pickle."""

import json
import pickle

import pytest
import torch

from bokehdepth_core import stage1, stage2, weight_files
from bokehdepth_core.testing import tiny_transformer
from support import DATA


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    depth = stage2.build_dav2_dsfa("vits").state_dict()
    torch.save({"model": {"module." + k: v for k, v in depth.items()}}, root / "dav2_wrapped.pth")
    torch.save(depth, root / "dav2_legacy.pth", _use_new_zipfile_serialization=False)
    adapter = stage1.BokehAdapter.attach(tiny_transformer(), rank=2, alpha=2)
    adapter.save(str(root / "adapter.bin"))
    adapter.save(str(root / "adapter.safetensors"))
    adapter.save(str(root / "adapter_bare.pt"), bare_keys=True)
    torch.save({"weight": torch.zeros(2)}, root / "other.pth")
    (root / "garbage.ckpt").write_bytes(b"\x00not a weight file" * 50)
    return root


@pytest.mark.parametrize("name, want", [
    ("dav2_wrapped.pth", weight_files.DEPTH_MODEL), ("dav2_legacy.pth", weight_files.DEPTH_MODEL),
    ("adapter.bin", weight_files.ADAPTER), ("adapter.safetensors", weight_files.ADAPTER),
    ("adapter_bare.pt", weight_files.ADAPTER), ("other.pth", weight_files.UNKNOWN),
    ("garbage.ckpt", weight_files.UNKNOWN), ("missing.pth", weight_files.UNKNOWN)])
def test_kind_of_file(files, name, want):
    assert weight_files.kind(str(files / name)) == want


def test_release_layouts_are_classified():
    lora = json.loads((DATA / "bokeh_lora_layout.json").read_text())["tensors"]
    udv2 = [row[0] for row in json.loads((DATA / "udv2_dsfa_vitl14_layout.json").read_text())["tensors"]]
    dav2 = json.loads((DATA / "dav2_dsfa_layouts.json").read_text())["layouts"]
    assert weight_files.classify(lora) == weight_files.ADAPTER
    assert weight_files.classify(udv2) == weight_files.DEPTH_MODEL
    assert {weight_files.classify(v["tensors"]) for v in dav2.values()} == {weight_files.DEPTH_MODEL}
    assert weight_files.classify(list(lora) + udv2) == weight_files.UNKNOWN  # both kinds: neither loader's


def test_pickles_are_read_not_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('ran')" % str(tmp_path / "ran"),))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"pretrained.blocks.0.weight": Boom()}))
    assert weight_files.kind(str(path)) == weight_files.DEPTH_MODEL
    assert not (tmp_path / "ran").exists()


def test_answer_follows_the_file(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"depth_head.x": torch.zeros(1)}, path)
    assert weight_files.kind(str(path)) == weight_files.DEPTH_MODEL
    torch.save({"embedding_layer.0.weight": torch.zeros(3)}, path)  # rewritten: size changes
    assert weight_files.kind(str(path)) == weight_files.ADAPTER

"""The seam inside ComfyUI: fake ComfyUI modules stand in, so the wiring to them is checked offline."""

import importlib.util
import sys
import types

import pytest
import torch

from support import ROOT


class Interrupted(Exception):
    pass


@pytest.fixture
def seam_in_comfy(tmp_path, monkeypatch):
    state = {"interrupt": False, "unloaded": 0, "bars": [], "loads": [], "loaded_size": 100}
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.vae_offload_device = lambda: torch.device("meta")
    mm.load_models_gpu = lambda models, **kw: state["loads"].append((models, kw))
    mm.unload_all_models = lambda: state.__setitem__("unloaded", state["unloaded"] + 1)
    mm.soft_empty_cache = lambda: None

    def throw():
        if state["interrupt"]:
            raise Interrupted()
    mm.throw_exception_if_processing_interrupted = throw

    class Bar:
        def __init__(self, total):
            self.calls = []
            state["bars"].append(self)

        def update_absolute(self, value, total=None):
            self.calls.append((value, total))
    cu = types.ModuleType("comfy.utils")
    cu.ProgressBar = Bar

    mp = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

        def model_size(self):
            return 100

        def loaded_size(self):
            return state["loaded_size"]
    mp.ModelPatcher = ModelPatcher

    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {}

    def add_model_folder_path(name, path, is_default=False):
        paths = fp.folder_names_and_paths.setdefault(name, ([], set()))[0]
        if path in paths:
            paths.remove(path)
        paths.insert(0, path) if is_default else paths.append(path)
    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_full_path = lambda folder, name: None
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.model_patcher, comfy.utils = mm, mp, cu
    for name, mod in {"comfy": comfy, "comfy.model_management": mm, "comfy.model_patcher": mp, "comfy.utils": cu,
                      "folder_paths": fp}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("seam_under_fake_comfy", ROOT / "nodes" / "comfy_seam.py")
    seam = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seam)
    return seam, state, fp


def test_uses_comfy_services(seam_in_comfy):
    seam, state, fp = seam_in_comfy
    assert seam.IN_COMFY
    seam.free_memory()
    assert state["unloaded"] == 1
    bar = seam.Progress(4)
    bar.callback(2, 4)
    bar.callback(9, 4)
    assert state["bars"][0].calls == [(2, 4), (4, 4)]
    state["interrupt"] = True
    with pytest.raises(Interrupted):
        bar.callback(3, 4)  # the user's Cancel stops long work at the next step


def test_managed_model_goes_through_the_model_manager(seam_in_comfy):
    seam, state, _ = seam_in_comfy
    module = torch.nn.Linear(2, 2)
    managed = seam.ManagedModel(module, torch.float16)
    p = managed.patcher
    assert p.model is module and p.load_device == torch.device("cpu") and p.offload_device == torch.device("meta")
    assert managed.load(12345) == torch.device("cpu")
    assert state["loads"] == [([p], {"memory_required": 12345, "force_full_load": True})]
    assert state["unloaded"] == 0
    state["loaded_size"] = 0  # --novram: ComfyUI leaves the weights on the offload device
    assert managed.load(12345) == torch.device("meta")


def test_model_folder_keeps_user_paths(seam_in_comfy):
    seam, _, fp = seam_in_comfy
    fp.add_model_folder_path("bokehdepth", "/user/extra/bokehdepth")  # from extra_model_paths.yaml
    seam.register_model_folder()
    paths = seam.model_folders()
    assert paths[0].endswith("bokehdepth") and paths[0].startswith(fp.models_dir)
    assert "/user/extra/bokehdepth" in paths
    with pytest.raises(FileNotFoundError) as e:
        seam.model_path("DAV2_dsfa_release.pth", where_to_get="the authors' release")
    msg = str(e.value)
    assert "DAV2_dsfa_release.pth" in msg and "/user/extra/bokehdepth" in msg and "authors' release" in msg


def test_loader_choices_and_change_keys(seam_in_comfy, tmp_path):
    seam, _, _ = seam_in_comfy
    assert seam.model_choices(["a.pth", "rel.pth"], "rel.pth") == ["rel.pth", "a.pth"]
    assert seam.model_change_key("missing.pth") == "missing.pth"

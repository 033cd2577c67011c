"""Stage-2 depth nodes: through the extension package without ComfyUI (random-weight vits and
UniDepthV2 files), and inside the real ComfyUI, where the depth model lives under ComfyUI's model
manager."""

import pytest
import torch

from support import UNIDEPTH_SMALL, load_extension, randomize

EXT = load_extension()
N = EXT.NODE_CLASS_MAPPINGS
S2 = EXT.bokehdepth_core.stage2
BokehStack = EXT.bokehdepth_core.types.BokehStack
DepthMap = EXT.bokehdepth_core.types.DepthMap
MiB = 1024 ** 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = S2.build_dav2_dsfa("vits")
    torch.save({"model": {"module." + k: v for k, v in m.state_dict().items()}}, root / "tiny_dsfa_vits.pth")
    torch.manual_seed(0)
    torch.save({"model": randomize(S2.build_unidepthv2_dsfa(UNIDEPTH_SMALL), seed=11).state_dict()},
               root / "UDv2_small.pth")
    return root


@pytest.fixture
def models(model_dir, monkeypatch):
    monkeypatch.setenv("BOKEHDEPTH_MODELS_DIR", str(model_dir))
    return model_dir


def test_registered():
    names = EXT.NODE_DISPLAY_NAME_MAPPINGS
    assert names["BokehDepthLoadDepthModel"] == "BokehDepth Load Depth Model"
    assert names["BokehDepthEstimateDepthStack"] == "BokehDepth Estimate Depth (Bokeh Stack)"
    assert names["BokehDepthEstimateDepth"] == "BokehDepth Estimate Depth"


def test_input_size_widget_stays_within_the_token_budget():
    """Every input_size the widget offers can run (a square image at the largest gives the most
    tokens a frame may have); the tooltip says where the limit comes from."""
    spec = N["BokehDepthEstimateDepth"].INPUT_TYPES()["required"]["input_size"][1]
    with torch.device("meta"):
        vits = S2.build_dav2_dsfa("vits")
    top = spec["max"]
    assert vits.memory_required(top, top, 3, input_size=top) > 0
    with pytest.raises(ValueError, match="input_size"):
        vits.memory_required(top, top, 0, input_size=top + spec["step"])
    assert "tokens" in spec["tooltip"]
    for nid in ("BokehDepthLoadDepthModel", "BokehDepthEstimateDepthStack", "BokehDepthEstimateDepth"):
        assert N[nid].CATEGORY == "BokehDepth/Depth"
    assert N["BokehDepthLoadDepthModel"].RETURN_TYPES[0] == "BOKEHDEPTH_MODEL"


@pytest.mark.slow
def test_load_and_estimate(models):
    loader = N["BokehDepthLoadDepthModel"]
    assert "tiny_dsfa_vits.pth" in loader.INPUT_TYPES()["required"]["model_file"][0]
    managed, info = loader().load("tiny_dsfa_vits.pth", "auto", "auto", 0.0)
    assert "DSFA" in info and "vits" in info and managed.model.attn_scale == "release_sdpa"
    assert managed.patcher is None and managed.dtype == torch.float32  # plain torch outside ComfyUI
    img = torch.rand(2, 28, 42, 3)
    frames = torch.rand(3, 28, 42, 3)
    node = N["BokehDepthEstimateDepthStack"]()
    dm, prev = node.estimate(managed, img, 28, "Spectral", stack_images=frames, k_list=[4.0, 9.0, 20.0])
    assert isinstance(dm, DepthMap) and dm.depth.shape == (2, 28, 42) and prev.shape == (2, 28, 42, 3)
    assert dm.meta["used_stack"] and float(prev.min()) >= 0 and float(prev.max()) <= 1
    want = S2.estimate_depth(managed.model, img, frames, [4.0, 9.0, 20.0], input_size=28)
    assert torch.equal(dm.depth, want.depth)  # the node adds nothing to the core's numbers
    stack = BokehStack(frames=frames.unsqueeze(0).expand(2, -1, -1, -1, -1), k_values=torch.tensor([4.0, 9.0, 20.0]),
                       reference=img)
    dm2, _ = node.estimate(managed, img, 28, "turbo", bokeh_stack=stack)
    assert torch.allclose(dm2.depth, dm.depth, atol=1e-5)
    dm3, prev3 = N["BokehDepthEstimateDepth"]().estimate(managed, img, 28, "Spectral")
    assert dm3.depth.shape == (2, 28, 42) and not dm3.meta["used_stack"]
    assert (dm3.depth - dm.depth).abs().max() > 0
    with pytest.raises(ValueError, match="k_list"):
        node.estimate(managed, img, 28, "Spectral", stack_images=frames, k_list=[4.0, 9.0])
    with pytest.raises(ValueError, match="k_list"):
        node.estimate(managed, img, 28, "Spectral", stack_images=frames)
    with pytest.raises(ValueError, match="bokeh_stack"):
        node.estimate(managed, img, 28, "Spectral")
    for wrong in ("not a model", managed.model):
        with pytest.raises(ValueError, match="BokehDepth Load Depth Model"):
            node.estimate(wrong, img, 28, "Spectral", stack_images=frames, k_list=[1.0, 2.0, 3.0])


def test_unidepth_file_end_to_end(models):
    managed, info = N["BokehDepthLoadDepthModel"]().load("UDv2_small.pth", "fp32", "auto", 0.0)
    assert "UniDepthV2" in info
    model = managed.model
    model.config.update(pixels_min=3000, pixels_max=9000)  # the release budget (>= 200k px) is slow here
    img = torch.rand(1, 40, 60, 3)
    camera, summary = N["BokehDepthCameraIntrinsics"]().make(36.0, 36.0, 10, 10, image=img)  # 35 mm-equivalent 36 mm
    assert camera.shape == (1, 3, 3) and float(camera[0, 0, 0]) == pytest.approx(60.0) and "fx=60.00" in summary
    stack = torch.rand(2, 40, 60, 3)
    depth, preview = N["BokehDepthEstimateDepthStack"]().estimate(
        managed, img, 518, "Spectral", stack_images=stack, k_list=[8.0, 20.0], camera=camera)
    assert type(depth).__name__ == "DepthMap" and depth.intrinsics.shape == (1, 3, 3)
    assert depth.confidence.shape == (1, 40, 60) and preview.shape == (1, 40, 60, 3)
    assert depth.points.shape == (1, 40, 60, 3) and "points" not in depth.meta
    want = model.estimate(img, stack.unsqueeze(0), [[8.0, 20.0]], camera=camera)
    torch.testing.assert_close(depth.depth, want.depth)
    torch.testing.assert_close(depth.points, want.points)
    lo, _ = N["BokehDepthEstimateDepth"]().estimate(managed, img, 518, "Spectral", resolution_level=0)
    hi, _ = N["BokehDepthEstimateDepth"]().estimate(managed, img, 518, "Spectral", resolution_level=9)
    assert lo.meta["network_size"] != hi.meta["network_size"]  # the node passes the level through
    k_pred, conf, text = N["BokehDepthDepthCamera"]().split(depth)
    torch.testing.assert_close(k_pred, want.intrinsics)
    assert float(conf.max()) == pytest.approx(1.0) and "FoV" in text


def test_loaders_list_only_what_they_read(models):
    from bokehdepth_core.testing import tiny_transformer

    adapter = EXT.bokehdepth_core.stage1.BokehAdapter.attach(tiny_transformer(), rank=2, alpha=2)
    adapter.save(str(models / "my_adapter.safetensors"))
    (models / "notes.pth").write_bytes(b"not weights")
    depth_files = N["BokehDepthLoadDepthModel"].INPUT_TYPES()["required"]["model_file"][0]
    adapter_files = N["BokehDepthLoadBokehAdapter"].INPUT_TYPES()["required"]["adapter_file"][0]
    assert depth_files == ["DAV2_dsfa_release.pth", "UDv2_dsfa_release.pth", "UDv2_small.pth", "tiny_dsfa_vits.pth"]
    assert adapter_files == ["bokeh_lora.bin", "my_adapter.safetensors"]


def test_missing_file_error_names_file_folder_and_source(models):
    with pytest.raises(FileNotFoundError) as e:
        N["BokehDepthLoadDepthModel"]().load("DAV2_dsfa_release.pth", "auto", "auto", 0.0)
    msg = str(e.value)
    assert "DAV2_dsfa_release.pth" in msg and str(models) in msg and "github.com/fogradio/BokehDepth" in msg


# --------------------------------------------------------------------------- inside the real ComfyUI

FAKE_DEVICE = torch.device("cpu", 0)  # a "GPU" for ComfyUI's accounting: not torch.device("cpu")


@pytest.fixture
def manager(comfyui, ext_in_comfyui, models, monkeypatch):
    """ComfyUI's real model manager with an empty list of loaded models; ``unload_all_models`` fails.
    The test files are ComfyUI's 'bokehdepth' model folder."""
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "bokehdepth", ([str(models)], set()))
    mm = comfyui.model_management
    monkeypatch.setattr(mm, "current_loaded_models", [])

    def refuse():
        raise AssertionError("the depth path must not unload every model")
    monkeypatch.setattr(mm, "unload_all_models", refuse)
    return mm


@pytest.fixture
def vram(manager, monkeypatch):
    """A fake small GPU budget on a device ComfyUI does not treat as the CPU, so that its own
    load_models_gpu / free_memory accounting runs: free memory = budget - weights loaded there.
    ComfyUI's fixed inference floor (0.8 GiB + reserve) is set to 0 so that a run's own
    memory estimate decides."""
    mm = manager
    state = {"budget": 0}

    def free(dev=None, torch_free_too=False):
        used = sum(m.model_loaded_memory() for m in mm.current_loaded_models if m.device == FAKE_DEVICE)
        left = state["budget"] - used
        return (left, 0) if torch_free_too else left
    monkeypatch.setattr(mm, "get_torch_device", lambda: FAKE_DEVICE)
    monkeypatch.setattr(mm, "get_free_memory", free)
    monkeypatch.setattr(mm, "get_total_memory", lambda dev=None, torch_total_too=False:
                        (state["budget"], state["budget"]) if torch_total_too else state["budget"])
    monkeypatch.setattr(mm, "minimum_inference_memory", lambda: 0)
    monkeypatch.setattr(mm, "extra_reserved_memory", lambda: 0)
    return state


def _loaded(mm):
    return [m.model for m in mm.current_loaded_models]


def _other_model(comfy, size):
    """Another model of the user's (a stand-in that declares ``size`` bytes of weights)."""
    return comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), load_device=FAKE_DEVICE,
                                            offload_device=torch.device("cpu"), size=size)


def _weight_bytes(model):
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_depth_model_runs_under_comfyui_model_manager(manager, ext_in_comfyui):
    mm = manager
    nodes = ext_in_comfyui.NODE_CLASS_MAPPINGS
    managed, info = nodes["BokehDepthLoadDepthModel"]().load("tiny_dsfa_vits.pth", "auto", "auto", 0.0)
    assert managed.patcher is not None and managed.load_device == mm.get_torch_device()
    assert managed.offload_device == mm.vae_offload_device() and managed.dtype == torch.float32
    assert _loaded(mm) == []  # loading the file does not touch the GPU
    img, frames = torch.rand(1, 28, 42, 3), torch.rand(2, 28, 42, 3)
    node = nodes["BokehDepthEstimateDepthStack"]()
    dm, _ = node.estimate(managed, img, 28, "Spectral", stack_images=frames, k_list=[4.0, 12.0])
    (entry,) = mm.current_loaded_models
    assert entry.model is managed.patcher and entry.model_memory() == _weight_bytes(managed.model)
    assert 100 * MiB < entry.model_memory() < 200 * MiB  # vits + DSFA in fp32
    again, _ = node.estimate(managed, img, 28, "Spectral", stack_images=frames, k_list=[4.0, 12.0])
    assert mm.current_loaded_models == [entry] and torch.equal(again.depth, dm.depth)  # kept, not reloaded
    # the same numbers as the extension without ComfyUI
    plain, _ = N["BokehDepthLoadDepthModel"]().load("tiny_dsfa_vits.pth", "auto", "auto", 0.0)
    want, _ = N["BokehDepthEstimateDepthStack"]().estimate(plain, img, 28, "Spectral", stack_images=frames,
                                                           k_list=[4.0, 12.0])
    assert torch.equal(dm.depth, want.depth) and dm.depth.device == mm.intermediate_device()
    # ComfyUI evicts it when memory is requested for something else
    mm.free_memory(1e30, mm.get_torch_device())
    assert _loaded(mm) == [] and managed.patcher.loaded_size() == 0


def test_memory_estimate_reaches_the_manager(manager, ext_in_comfyui, monkeypatch):
    mm = manager
    calls = []
    real = mm.load_models_gpu

    def spy(models, memory_required=0, **kw):
        calls.append((models, memory_required, kw))
        return real(models, memory_required=memory_required, **kw)
    monkeypatch.setattr(mm, "load_models_gpu", spy)
    nodes = ext_in_comfyui.NODE_CLASS_MAPPINGS
    managed, _ = nodes["BokehDepthLoadDepthModel"]().load("tiny_dsfa_vits.pth", "auto", "auto", 0.0)
    img = torch.rand(1, 30, 40, 3)
    nodes["BokehDepthEstimateDepthStack"]().estimate(managed, img, 56, "Spectral", stack_images=torch.rand(3, 30, 40, 3),
                                                     k_list=[4.0, 9.0, 20.0])
    nodes["BokehDepthEstimateDepth"]().estimate(managed, img, 56, "Spectral")
    (stack_call, single_call) = calls
    assert stack_call[0] == [managed.patcher] and stack_call[2] == {"force_full_load": True}
    assert stack_call[1] == managed.model.memory_required(30, 40, 3, torch.float32, input_size=56)
    assert single_call[1] == managed.model.memory_required(30, 40, 0, torch.float32, input_size=56)
    assert stack_call[1] > single_call[1] > 0  # four encoder frames instead of one


def test_comfyui_accounting_keeps_and_evicts_as_memory_allows(vram, manager, comfyui, ext_in_comfyui):
    mm = manager
    nodes = ext_in_comfyui.NODE_CLASS_MAPPINGS
    managed, _ = nodes["BokehDepthLoadDepthModel"]().load("tiny_dsfa_vits.pth", "auto", "auto", 0.0)
    assert managed.load_device == FAKE_DEVICE
    weights = _weight_bytes(managed.model)
    run = 32 * MiB  # the working memory a run asks for
    other = _other_model(comfyui, 256 * MiB)
    need = 256 * MiB + 1.1 * weights + run  # ComfyUI frees for 1.1 x weights + the run's memory

    vram["budget"] = need + MiB  # room for both: the user's model stays
    mm.load_models_gpu([other])
    assert managed.load(run) == FAKE_DEVICE
    assert set(_loaded(mm)) == {other, managed.patcher} and managed.model.device == FAKE_DEVICE

    mm.free_memory(vram["budget"] - 256 * MiB - weights - MiB, FAKE_DEVICE)  # fits beside both: nothing moves
    assert set(_loaded(mm)) == {other, managed.patcher}

    mm.free_memory(vram["budget"] - 256 * MiB, FAKE_DEVICE)  # something else needs the depth model's room
    assert _loaded(mm) == [other]
    assert managed.patcher.loaded_size() == 0 and managed.model.device == managed.offload_device

    vram["budget"] = need - MiB  # no room for both: ComfyUI makes room for the depth run
    assert managed.load(run) == FAKE_DEVICE
    assert _loaded(mm) == [managed.patcher]

    img = torch.rand(1, 28, 42, 3)  # a node run reloads it after an eviction, same numbers
    first, _ = nodes["BokehDepthEstimateDepth"]().estimate(managed, img, 28, "Spectral")
    mm.free_memory(vram["budget"], FAKE_DEVICE)
    assert _loaded(mm) == []
    second, _ = nodes["BokehDepthEstimateDepth"]().estimate(managed, img, 28, "Spectral")
    assert _loaded(mm) == [managed.patcher] and torch.equal(first.depth, second.depth)

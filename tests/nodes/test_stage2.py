"""Stage-2 depth nodes through the extension package (no ComfyUI), on a random-weight vits file."""

import pytest
import torch

from support import load_extension

EXT = load_extension()
N = EXT.NODE_CLASS_MAPPINGS
S2 = EXT.bokehdepth_core.stage2
BokehStack = EXT.bokehdepth_core.types.BokehStack
DepthMap = EXT.bokehdepth_core.types.DepthMap


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = S2.build_dav2_dsfa("vits")
    torch.save({"model": {"module." + k: v for k, v in m.state_dict().items()}}, root / "tiny_dsfa_vits.pth")
    return root


@pytest.fixture
def models(model_dir, monkeypatch):
    monkeypatch.setenv("BOKEHDEPTH_MODELS_DIR", str(model_dir))
    return model_dir


def test_registered():
    names = EXT.NODE_DISPLAY_NAME_MAPPINGS
    assert names["BokehDepthLoadDepthModel"] == "Load BokehDepth Depth Model"
    assert names["BokehDepthEstimateDepthStack"] == "Estimate Depth (Bokeh Stack)"
    assert names["BokehDepthEstimateDepth"] == "Estimate Depth"
    for nid in ("BokehDepthLoadDepthModel", "BokehDepthEstimateDepthStack", "BokehDepthEstimateDepth"):
        assert N[nid].CATEGORY == "BokehDepth/Depth"
    assert N["BokehDepthLoadDepthModel"].RETURN_TYPES[0] == "BOKEHDEPTH_MODEL"


@pytest.mark.slow
def test_load_and_estimate(models):
    loader = N["BokehDepthLoadDepthModel"]
    assert "tiny_dsfa_vits.pth" in loader.INPUT_TYPES()["required"]["model_file"][0]
    model, info = loader().load("tiny_dsfa_vits.pth", "auto", "auto", 0.0)
    assert "DSFA" in info and "vits" in info and model.attn_scale == "release_sdpa"
    img = torch.rand(2, 28, 42, 3)
    frames = torch.rand(3, 28, 42, 3)
    node = N["BokehDepthEstimateDepthStack"]()
    dm, prev = node.estimate(model, img, 28, "Spectral", stack_images=frames, k_list=[4.0, 9.0, 20.0])
    assert isinstance(dm, DepthMap) and dm.depth.shape == (2, 28, 42) and prev.shape == (2, 28, 42, 3)
    assert dm.meta["used_stack"] and float(prev.min()) >= 0 and float(prev.max()) <= 1
    stack = BokehStack(frames=frames.unsqueeze(0).expand(2, -1, -1, -1, -1), k_values=torch.tensor([4.0, 9.0, 20.0]),
                       reference=img)
    dm2, _ = node.estimate(model, img, 28, "turbo", bokeh_stack=stack)
    assert torch.allclose(dm2.depth, dm.depth, atol=1e-5)
    dm3, prev3 = N["BokehDepthEstimateDepth"]().estimate(model, img, 28, "Spectral")
    assert dm3.depth.shape == (2, 28, 42) and not dm3.meta["used_stack"]
    assert (dm3.depth - dm.depth).abs().max() > 0
    with pytest.raises(ValueError, match="k_list"):
        node.estimate(model, img, 28, "Spectral", stack_images=frames, k_list=[4.0, 9.0])
    with pytest.raises(ValueError, match="k_list"):
        node.estimate(model, img, 28, "Spectral", stack_images=frames)
    with pytest.raises(ValueError, match="bokeh_stack"):
        node.estimate(model, img, 28, "Spectral")
    with pytest.raises(ValueError, match="Load BokehDepth Depth Model"):
        node.estimate("not a model", img, 28, "Spectral", stack_images=frames, k_list=[1.0, 2.0, 3.0])


def test_missing_file_error_names_file_folder_and_source(models):
    with pytest.raises(FileNotFoundError) as e:
        N["BokehDepthLoadDepthModel"]().load("DAV2_dsfa_release.pth", "auto", "auto", 0.0)
    msg = str(e.value)
    assert "DAV2_dsfa_release.pth" in msg and str(models) in msg and "github.com/fogradio/BokehDepth" in msg

"""Interop nodes without ComfyUI: depth out as IMAGE/MASK and ControlNet maps, depth in from ComfyUI's
MoGe / Depth Anything 3 geometry dicts and from metric images, feeding the renderer node."""

import pytest
import torch

from support import load_extension

EXT = load_extension()
N = EXT.NODE_CLASS_MAPPINGS
DepthMap = EXT.bokehdepth_core.types.DepthMap
cam = EXT.bokehdepth_core.camera


def _depth():
    d = torch.linspace(1.0, 5.0, 12 * 16).reshape(1, 12, 16)
    return DepthMap(depth=d)


def test_registered_in_the_interop_category():
    for node_id in ("BokehDepthDepthToImage", "BokehDepthControlNetDepth", "BokehDepthDepthFromMoGe",
                    "BokehDepthDepthFromDA3", "BokehDepthDepthFromMetricImage"):
        assert N[node_id].CATEGORY == "BokehDepth/Interop"
        assert EXT.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("BokehDepth ")
    assert N["BokehDepthDepthFromMoGe"].INPUT_TYPES()["required"]["moge_geometry"][0] == "MOGE_GEOMETRY"
    assert N["BokehDepthDepthFromDA3"].INPUT_TYPES()["required"]["da3_geometry"][0] == "DA3_GEOMETRY"


def test_depth_out_round_trips_through_metric_image_and_mask():
    dm = _depth()
    img, mask = N["BokehDepthDepthToImage"]().convert(dm)
    assert img.shape == (1, 12, 16, 3) and float(img.max()) == pytest.approx(5.0)
    back, preview, info = N["BokehDepthDepthFromMetricImage"]().convert(1.0, image=img)
    assert torch.equal(back.depth, dm.depth) and preview.shape == (1, 12, 16, 3) and "m" in info
    mm, _, _ = N["BokehDepthDepthFromMetricImage"]().convert(0.5, mask=mask)
    assert torch.allclose(mm.depth, dm.depth * 0.5)
    with pytest.raises(ValueError, match="connect an image or a mask"):
        N["BokehDepthDepthFromMetricImage"]().convert(1.0)


def test_controlnet_map_near_white():
    (img,) = N["BokehDepthControlNetDepth"]().convert(_depth(), "minmax")
    assert img.shape == (1, 12, 16, 3) and img[0, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert img[0, -1, -1].tolist() == [0.0, 0.0, 0.0]


def test_core_geometry_dicts_drive_the_render_node():
    depth = torch.full((1, 12, 16), 2.0)
    depth[0, :, 8:] = 6.0
    image = torch.rand(1, 12, 16, 3)
    k_norm = cam.intrinsics_matrix(20.0, 20.0, 8.0, 6.0)[0] / torch.tensor([[16.0], [12.0], [1.0]])
    moge = {"depth": depth, "intrinsics": k_norm[None], "mask": torch.ones(1, 12, 16, dtype=torch.bool),
            "points": torch.zeros(1, 12, 16, 3), "image": image}
    da3 = {"depth": depth / 2, "image": image, "mode": "mono", "sky": torch.zeros(1, 12, 16)}
    from_moge, _, _ = N["BokehDepthDepthFromMoGe"]().convert(moge, 1.0)
    from_da3, _, info = N["BokehDepthDepthFromDA3"]().convert(da3, 2.0, "invalid")
    assert torch.allclose(from_moge.intrinsics[0], cam.intrinsics_matrix(20.0, 20.0, 8.0, 6.0)[0])
    render = N["BokehDepthRenderBokeh"]()
    args = (20.0, 2.0, 2.2, 0.0, 0, 0.0, False)
    a, _ = render.render(image, from_moge, *args)
    b, _ = render.render(image, from_da3, *args)
    c, _ = render.render(image, DepthMap(depth=depth), *args)
    assert torch.allclose(a, c, atol=1e-6) and torch.allclose(b, c, atol=1e-6)
    with pytest.raises(ValueError, match="DA3_GEOMETRY"):
        N["BokehDepthDepthFromDA3"]().convert({"image": image}, 1.0, "keep")

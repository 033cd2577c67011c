"""Interop: depth as plain IMAGE/MASK and ControlNet maps, and depth from ComfyUI's MoGe and Depth
Anything 3 geometry dicts (built here to the layouts ComfyUI documents) driving our renderer,
stacks and metrics."""

import pytest
import torch

from bokehdepth_core import bokeh_from_depth, interop, metrics, pointcloud, synthetic
from bokehdepth_core import camera as cam
from bokehdepth_core.types import DepthMap

H, W = 48, 64
K_PX = cam.intrinsics_matrix(50.0, 52.0, 31.0, 25.0)  # pixels, centres at u + 0.5


def _scene():
    scene = synthetic.make_scene(1, 64, 2)
    image = torch.nn.functional.interpolate(scene.image.permute(0, 3, 1, 2), size=(H, W),
                                            mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    depth = torch.nn.functional.interpolate(scene.depth_map().depth[:, None], size=(H, W), mode="nearest")[:, 0]
    return image.contiguous(), depth.contiguous()


def _moge_geometry(depth, image):
    """MOGE_GEOMETRY as ComfyUI's MoGeInference returns it: normalised intrinsics (fx / W, fy / H,
    cx / W, cy / H), OpenCV points, a boolean mask, +inf depth where masked."""
    k_norm = K_PX[0] / torch.tensor([[W], [H], [1.0]])
    mask = torch.ones_like(depth, dtype=torch.bool)
    mask[:, :2] = False
    d = torch.where(mask, depth, torch.full_like(depth, float("inf")))
    points = pointcloud.depth_to_points(depth, K_PX)
    points = torch.where(mask[..., None], points, torch.full_like(points, float("inf")))
    return {"points": points, "depth": d, "intrinsics": k_norm[None], "mask": mask, "image": image}


def _da3_geometry(depth, image, multiview=True):
    """DA3_GEOMETRY as ComfyUI's DA3Inference returns it: pixel intrinsics [1,S,3,3] whose pixel
    centres sit at integer coordinates, raw confidence, sky probability."""
    k_da3 = K_PX.clone()
    k_da3[:, 0, 2] -= 0.5
    k_da3[:, 1, 2] -= 0.5
    sky = torch.zeros_like(depth)
    sky[:, :3] = 0.9
    geo = {"depth": depth, "image": image, "mode": "multiview" if multiview else "mono", "sky": sky,
           "confidence": torch.rand_like(depth) * 5}
    if multiview:
        geo.update(intrinsics=k_da3[None], extrinsics=torch.eye(4)[None, None, :3])
    return geo


def test_depth_as_image_and_mask_keep_metres_and_zero_invalid():
    d = torch.tensor([[[0.5, 3.0], [float("nan"), -1.0]]])
    img, mask = interop.depth_as_image(d)
    assert img.shape == (1, 2, 2, 3) and torch.equal(img[..., 0], img[..., 2])
    assert mask.tolist() == [[[0.5, 3.0], [0.0, 0.0]]] and torch.equal(img[..., 1], mask)


def test_controlnet_image_is_inverse_depth_near_white():
    d = torch.tensor([[[1.0, 2.0, 4.0, float("inf")]]])
    img = interop.controlnet_image(d)
    assert img.shape == (1, 1, 4, 3) and torch.equal(img[..., 0], img[..., 1])
    v = img[0, 0, :, 0]
    assert v[0] == 1.0 and v[2] == 0.0 and v[3] == 0.0
    assert float(v[1]) == pytest.approx((1 / 2 - 1 / 4) / (1 - 1 / 4), abs=1e-6)  # even in 1/depth


def test_moge_layout_becomes_pixels_camera_points_and_confidence():
    image, depth = _scene()
    dm = interop.depth_from_moge(_moge_geometry(depth, image))
    assert torch.allclose(dm.intrinsics, K_PX, atol=1e-5)
    assert torch.isinf(dm.depth[:, :2]).all() and torch.equal(dm.depth[:, 2:], depth[:, 2:])
    assert dm.confidence[:, :2].max() == 0 and dm.confidence[:, 2:].min() == 1
    # MoGe's own points agree with unprojecting its depth through the converted camera
    ours = pointcloud.depth_to_points(dm.depth[:, 2:], dm.intrinsics)
    assert torch.allclose(dm.points[:, 2:], pointcloud.depth_to_points(dm.depth, dm.intrinsics)[:, 2:], atol=1e-4)
    assert ours.shape[1] == H - 2
    pano = interop.depth_from_moge({"depth": depth, "points": torch.zeros(1, H, W, 3), "mask": None, "image": image})
    assert pano.intrinsics is None and pano.points is None and "equirectangular" in pano.meta["projection"]


def test_da3_layout_shifts_pixel_centres_and_handles_sky():
    image, depth = _scene()
    dm = interop.depth_from_da3(_da3_geometry(depth, image))
    assert torch.allclose(dm.intrinsics, K_PX, atol=1e-5)
    assert torch.equal(dm.depth, depth) and dm.confidence.shape == depth.shape
    no_sky = interop.depth_from_da3(_da3_geometry(depth, image), sky="invalid", scale=2.0)
    assert torch.isinf(no_sky.depth[:, :3]).all() and torch.equal(no_sky.depth[:, 3:], 2 * depth[:, 3:])
    mono = interop.depth_from_da3(_da3_geometry(depth, image, multiview=False))
    assert mono.intrinsics is None and mono.meta["source"] == "Depth Anything 3 (mono)"


def test_core_geometry_drives_renderer_stack_sweep_inputs_and_metrics():
    image, depth = _scene()
    reference = bokeh_from_depth.render_from_depth(image, DepthMap(depth=depth), 20.0, "distance", 1.5)[0]
    moge = interop.depth_from_moge(_moge_geometry(depth, image))
    moge.depth[:, :2] = depth[:, :2]  # the masked rows are invalid in MoGe's dict; compare on full depth
    for dm in (moge, interop.depth_from_da3(_da3_geometry(depth, image))):
        out, focus = bokeh_from_depth.render_from_depth(image, dm, 20.0, "distance", 1.5, use_confidence=False)
        assert torch.allclose(out, reference, atol=1e-6) and float(focus[0]) == 1.5
        smoothed = bokeh_from_depth.render_from_depth(image, dm, 20.0, "distance", 1.5)[0]  # their confidence
        assert torch.isfinite(smoothed).all() and not torch.allclose(smoothed, reference, atol=1e-6)
        stack = bokeh_from_depth.bokeh_stack_from_depth(image, dm, [10.0, 20.0], "distance", 1.5)
        assert stack.frames.shape == (1, 2, H, W, 3) and torch.allclose(stack.frames[0, 1], reference[0], atol=1e-6)
        m = metrics.depth_metrics(dm, DepthMap(depth=depth))
        assert m["abs_rel"] == pytest.approx(0.0, abs=1e-7) and m["delta1"] == 1.0


def test_bad_geometry_is_named():
    with pytest.raises(ValueError, match="MOGE_GEOMETRY.*'depth'"):
        interop.depth_from_moge({"points": torch.zeros(1, 2, 2, 3)})
    with pytest.raises(ValueError, match="DA3_GEOMETRY"):
        interop.depth_from_da3(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="sky"):
        interop.depth_from_da3({"depth": torch.ones(1, 2, 2)}, sky="far")
    with pytest.raises(ValueError, match="'confidence' has shape"):
        interop.depth_from_da3({"depth": torch.ones(1, 2, 2), "confidence": torch.ones(1, 3, 3)})

"""Depth from a bokeh sweep on rendered synthetic scenes (paper Prop. 4.1.1, Eq. 28)."""

import pytest
import torch

from bokehdepth_core import dfb, render, synthetic
from bokehdepth_core.types import BokehStack, DepthMap


def _sweep(seed=3, size=128, flat_patch=False, r_max=20.0, ks=(8.0, 14.0, 20.0)):
    """A synthetic scene entirely behind the focal plane, radii about 2..r_max px."""
    scene = synthetic.make_scene(seed, size)
    img = scene.image.clone()
    if flat_patch:
        img[:, 40:88, 8:56] = torch.tensor([0.5, 0.45, 0.4])
    disp = scene.disparity
    fd = float(disp.max()) * 1.25
    span = float((fd - disp).max())
    k = [r_max / span * x / max(ks) for x in ks]
    frames = render.bokeh_stack(img, disp, k, fd)
    return img, disp, fd, k, frames


@pytest.fixture(scope="module")
def sweep():
    img, disp, fd, k, frames = _sweep(flat_patch=True)
    res = dfb.depth_from_bokeh_sweep(img, frames, k, 1.0 / fd, side="behind")
    return img, disp, fd, k, frames, res


def test_delta_accuracy_on_confident_pixels(sweep):
    img, disp, fd, k, frames, res = sweep
    true_delta = fd - disp
    radii = max(k) * true_delta
    assert 1.5 < float(radii.min()) and float(radii.max()) <= 20.01
    conf = res["confidence"] > 0.5
    assert float(conf.float().mean()) > 0.4
    rel = (res["delta"] - true_delta).abs() / true_delta
    assert float(rel[conf].median()) <= 0.10
    # the depth follows: S2 = 1 / (1/S1 - Delta)
    depth_rel = (res["depth"] - 1 / disp).abs() * disp
    assert float(depth_rel[conf].median()) <= 0.10
    # and the per-frame radii are linear in K
    assert float(res["linearity_overall"][0]) > 0.9
    assert torch.allclose(res["k_consistency"][0], torch.ones(3), atol=0.1)


def test_confidence_low_on_textureless_area(sweep):
    res = sweep[-1]
    flat = res["confidence"][0, 52:76, 20:44]
    textured = res["confidence"][0, :, 72:]
    assert float(flat.mean()) < 0.2
    assert float(textured.mean()) > 2 * float(flat.mean()) + 0.2


def test_side_front_and_prior_map(sweep):
    img, disp, fd, k, frames, res = sweep
    img, disp, frames = img[:, :48, -48:], disp[:, :48, -48:], frames[:, :, :48, -48:]  # keep it quick
    s1 = 1.0 / fd
    front = dfb.depth_from_bokeh_sweep(img, frames, k, s1, side="front", max_radius=24)
    assert bool((front["depth"] < s1 + 1e-4).all())  # front places everything nearer than focus
    prior = torch.full_like(disp, 10.0)  # a coarse prior says: farther than focus
    by_prior = dfb.depth_from_bokeh_sweep(img, frames, k, s1, side=prior, max_radius=24)
    assert torch.allclose(by_prior["depth"], dfb.depth_from_bokeh_sweep(img, frames, k, s1, max_radius=24)["depth"])
    mask = torch.zeros_like(disp, dtype=torch.bool)
    by_mask = dfb.depth_from_bokeh_sweep(img, frames, k, s1, side=mask, max_radius=24)
    assert torch.allclose(by_mask["depth"], front["depth"])


def test_inconsistent_stack_is_flagged(sweep):
    img, disp, fd, k, frames, res = sweep
    shuffled = frames[:, [2, 0, 1]]  # blur no longer grows with K
    bad = dfb.depth_from_bokeh_sweep(img, shuffled, k, 1.0 / fd)
    assert float(bad["linearity_overall"][0]) < float(res["linearity_overall"][0]) - 0.05 or \
        not bool(((bad["k_consistency"][0] - 1).abs() < 0.2).all())
    assert "NOT consistent" in dfb.linearity_report(bad)
    assert "consistent with a thin lens" in dfb.linearity_report(res)


def test_bad_input():
    ref = torch.rand(1, 32, 32, 3)
    frames = torch.rand(1, 3, 32, 32, 3)
    with pytest.raises(ValueError, match="at least 2"):
        dfb.depth_from_bokeh_sweep(ref, frames[:, :1], [10.0], 2.0)
    with pytest.raises(ValueError, match="frames"):
        dfb.depth_from_bokeh_sweep(ref, [torch.rand(1, 32, 32, 3), torch.rand(1, 30, 32, 3)], [1.0, 2.0], 2.0)
    with pytest.raises(ValueError, match="k_values"):
        dfb.depth_from_bokeh_sweep(ref, frames, [1.0, 0.0, 2.0], 2.0)
    with pytest.raises(ValueError, match="k_values"):
        dfb.depth_from_bokeh_sweep(ref, frames, [1.0, 2.0], 2.0)
    with pytest.raises(ValueError, match="focus_m"):
        dfb.depth_from_bokeh_sweep(ref, frames, [1.0, 2.0, 3.0], 0.0)
    with pytest.raises(ValueError, match="side"):
        dfb.depth_from_bokeh_sweep(ref, frames, [1.0, 2.0, 3.0], 2.0, side="left")
    with pytest.raises(ValueError, match="frames"):
        dfb.depth_from_bokeh_sweep(ref, torch.rand(1, 3, 32, 30, 3), [1.0, 2.0, 3.0], 2.0)
    with pytest.raises(ValueError, match="at least 2"):
        dfb.depth_from_bokeh_sweep(ref, [torch.rand(1, 32, 32, 3)], [1.0], 2.0)
    with pytest.raises(ValueError, match="side prior depth map"):
        dfb.depth_from_bokeh_sweep(ref, frames, [1.0, 2.0, 3.0], 2.0, side=torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match="side"):
        dfb.depth_from_bokeh_sweep(ref, frames, [1.0, 2.0, 3.0], 2.0, side=None)


def test_depth_from_stack(sweep):
    img, disp, fd, k, frames, res = sweep
    crop = (slice(None), slice(None, 48), slice(-48, None))
    stack = BokehStack(frames=frames[:, :, :48, -48:], k_values=torch.tensor(k), reference=img[crop],
                       meta={"focus_m": [1.0 / fd]})
    depth, full = dfb.depth_from_stack(stack, max_radius=24)  # the focus the stack recorded
    direct = dfb.depth_from_bokeh_sweep(img[crop], frames[:, :, :48, -48:], k, 1.0 / fd, max_radius=24)
    assert isinstance(depth, DepthMap) and torch.equal(depth.depth, direct["depth"])
    assert torch.equal(depth.confidence, direct["confidence"]) and depth.meta["source"] == "depth_from_bokeh_sweep"
    assert full["linearity_overall"].shape == (1,)
    # a coarse prior at a quarter of the size decides the side per pixel (here: all behind)
    prior = DepthMap(depth=torch.full((1, 12, 12), 50.0))
    by_prior, _ = dfb.depth_from_stack(stack, side="prior depth", prior_depth=prior, max_radius=24)
    assert torch.equal(by_prior.depth, depth.depth)
    front, _ = dfb.depth_from_stack(stack, 1.0 / fd, side="front", max_radius=24)
    assert bool((front.depth <= 1.0 / fd + 1e-4).all())
    with pytest.raises(ValueError, match="prior_depth"):
        dfb.depth_from_stack(stack, side="prior depth")
    stack.meta.clear()
    with pytest.raises(ValueError, match="focus"):
        dfb.depth_from_stack(stack)

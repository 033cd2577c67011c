"""Stage-2 input checks (images, stacks, K values) at the estimate boundary, stacks given as IMAGE
batches, and the network-tensor checks of a forward."""

import logging

import pytest
import torch

from support import dav2_vits
from bokehdepth_core.stage2 import estimate_depth
from bokehdepth_core.stage2.inputs import check_inputs, network_stack, stack_from_images
from bokehdepth_core.types import BokehStack


def test_shapes_are_normalised():
    img = torch.rand(2, 6, 8, 3, dtype=torch.float64)
    frames = torch.rand(3, 6, 8, 3)
    image, stack, k = check_inputs(img, frames, [4.0, 9.0, 20.0])  # one stack shared by both images
    assert image.dtype == torch.float32 and image.shape == (2, 6, 8, 3)
    assert stack.shape == (2, 3, 6, 8, 3) and torch.equal(stack[1], frames)
    assert k.shape == (2, 3) and k[1].tolist() == [4.0, 9.0, 20.0]
    _, stack, k = check_inputs(img, frames.unsqueeze(0), [[4.0, 9.0, 20.0], [5.0, 10.0, 21.0]])
    assert stack.shape == (2, 3, 6, 8, 3) and k[1].tolist() == [5.0, 10.0, 21.0]
    _, _, k3 = check_inputs(img, frames, torch.tensor([[[4.0], [9.0], [20.0]]]))  # [B,N,1]
    assert k3.shape == (2, 3)
    one, none_stack, none_k = check_inputs(img[0])
    assert one.shape == (1, 6, 8, 3) and none_stack is None and none_k is None
    _, empty, _ = check_inputs(img, torch.rand(2, 0, 6, 8, 3), [])
    assert empty is None


def test_bokeh_stack_carries_its_k():
    img = torch.rand(1, 6, 8, 3)
    bs = BokehStack(frames=torch.rand(1, 2, 6, 8, 3), k_values=torch.tensor([3.0, 12.0]), reference=img)
    _, stack, k = check_inputs(img, bs)
    assert torch.equal(stack, bs.frames) and k.tolist() == [[3.0, 12.0]]
    _, _, k = check_inputs(img, bs, [5.0, 6.0])  # explicit K wins
    assert k.tolist() == [[5.0, 6.0]]


def test_stack_resized_to_image_and_k_without_stack_ignored(caplog):
    img = torch.rand(1, 28, 42, 3)
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        _, stack, _ = check_inputs(img, torch.rand(1, 2, 20, 24, 3), [3.0, 9.0])
        check_inputs(img, None, [3.0])
    assert stack.shape == (1, 2, 28, 42, 3) and 0 <= float(stack.min()) and float(stack.max()) <= 1
    assert "resizing the stack" in caplog.text and "k_values given without a stack" in caplog.text


@pytest.mark.parametrize("args, match", [
    ((torch.rand(1, 3, 28, 42),), r"image must be \[B,H,W,3\]"),
    (("image.png",), "image must be a torch tensor"),
    ((torch.rand(1, 28, 42, 3), torch.rand(1, 2, 28, 42, 3), [3.0, 9.0, 12.0]), "one K per stack frame"),
    ((torch.rand(1, 28, 42, 3), torch.rand(1, 2, 28, 42, 3), None), "no k_values"),
    ((torch.rand(1, 28, 42, 3), torch.rand(1, 2, 28, 42, 3), [1.0, float("nan")]), "k_values must be finite"),
    ((torch.rand(1, 28, 42, 3), torch.rand(1, 2, 28, 42, 3), [1.0, 0.0]), r"k_values must be finite numbers > 0"),
    ((torch.rand(1, 28, 42, 3), torch.rand(1, 2, 28, 42, 3), "10, 20"), "parse it with optics.parse_k_list"),
    ((torch.rand(2, 28, 42, 3), torch.rand(3, 2, 28, 42, 3), [1.0, 2.0]), "one stack per image"),
    ((torch.rand(1, 28, 42, 3), torch.rand(2, 28, 42), [1.0, 2.0]), r"stack must be \[B,N,H,W,3\]"),
])
def test_bad_inputs_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        check_inputs(*args)


def test_non_finite_images_are_refused():
    img = torch.rand(1, 6, 8, 3)
    nan = img.clone()
    nan[0, 3, 4, 1] = float("nan")
    with pytest.raises(ValueError, match="image contains NaN"):
        check_inputs(nan)
    stack = torch.rand(1, 2, 6, 8, 3)
    stack[0, 1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="stack contains NaN"):
        check_inputs(img, stack, [1.0, 2.0])


def test_estimate_checks_at_the_boundary():
    vits = dav2_vits()
    img = torch.rand(1, 28, 42, 3)
    with pytest.raises(ValueError, match="one K per stack frame"):
        estimate_depth(vits, img, torch.rand(1, 2, 28, 42, 3), [3.0, 9.0, 12.0], input_size=28)
    with pytest.raises(ValueError, match="image contains NaN"):
        vits.estimate(img * float("nan"), input_size=28)
    with pytest.raises(ValueError, match="Stage-2 depth model"):
        estimate_depth(torch.nn.Linear(2, 2), img)


def test_stack_from_images():
    frames = torch.rand(6, 4, 5, 3)
    stack, k = stack_from_images(frames, [1.0, 2.0, 3.0], batch=2)  # B*N frames in image order
    assert stack.shape == (2, 3, 4, 5, 3) and torch.equal(stack[1, 0], frames[3])
    assert k.tolist() == [[1.0, 2.0, 3.0]] * 2
    shared, _ = stack_from_images(frames[:3], [1.0, 2.0, 3.0], batch=2)
    assert torch.equal(shared[1], frames[:3])
    with pytest.raises(ValueError, match="k_list"):
        stack_from_images(frames, [1.0, 2.0], batch=2)
    with pytest.raises(ValueError, match="k_list"):
        stack_from_images(frames, None, batch=2)
    with pytest.raises(ValueError, match="k_list is empty"):
        stack_from_images(frames, [], batch=2)
    for bad in ("frames.png", frames[..., 0], frames[..., :2], frames[:0], frames * 255):
        with pytest.raises(ValueError, match="stack_images"):
            stack_from_images(bad, [1.0, 2.0, 3.0], batch=2)


def test_network_stack_checks_forward_tensors():
    x = torch.randn(2, 3, 28, 42)
    assert network_stack(x, None, None) == (None, None)
    stack, k = network_stack(x, torch.randn(2, 3, 3, 28, 42), torch.ones(2, 3, 1))
    assert k.shape == (2, 3)
    with pytest.raises(ValueError, match="focus_stack"):
        network_stack(x, torch.randn(2, 3, 3, 14, 42), torch.ones(2, 3))
    with pytest.raises(ValueError, match="k_stack"):
        network_stack(x, torch.randn(2, 3, 3, 28, 42), None)

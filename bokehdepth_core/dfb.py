"""Depth from a bokeh sweep (paper Proposition 4.1.1, proof in supplementary Sec. 9).

Frames of one scene at the same focus distance ``S1`` differ only in ``K``; a pixel's blur radius
obeys ``r_i = K_i * Delta`` with ``Delta = |1/S1 - 1/S2|`` (Eq. 26). Per frame we estimate ``r_i``
by matching the frame, in a small window, against the sharp reference blurred by a bank of disks
(with parabolic sub-radius refinement); then ``Delta = sum K_i r_i / sum K_i^2`` (Eq. 28, OLS
through the origin) and ``S2 = 1 / (1/S1 -+ Delta)``, the sign given by ``side``.

How well the ``(K_i, r_i)`` pairs lie on one line through the origin (``linearity``) also tells how
physically consistent any bokeh stack is, including generated ones.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .checks import aperture_blades, integer, k_table, map_like, number, per_item, stack_frames
from .psf import SupportBlur, covering_radius, radius_grid, with_support
from .types import BokehStack, DepthMap, ProgressFn

SIDES = ("behind", "front", "prior depth")
MAX_DEPTH_M = 1000.0


def _box(x: torch.Tensor, radius: int, stride: int = 1) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, shrinking at the borders, every ``stride`` px; ``x [B,C,H,W]``."""
    if radius <= 0:
        return x[..., ::stride, ::stride]
    k = 2 * radius + 1  # separable: two 1-D passes cost 2k instead of k^2 per pixel
    x = F.avg_pool2d(x, (1, k), stride=(1, stride), padding=(0, radius), count_include_pad=False)
    return F.avg_pool2d(x, (k, 1), stride=(stride, 1), padding=(radius, 0), count_include_pad=False)


def _parabola_vertex(r0, r1, r2, e0, e1, e2):
    """Abscissa of the parabola through three (radius, error) points, kept within [r0, r2]."""
    a = (r1 - r0) * (e1 - e2)
    c = (r1 - r2) * (e1 - e0)
    den = a - c
    num = (r1 - r0) * a - (r1 - r2) * c
    x = r1 - 0.5 * num / torch.where(den.abs() > 1e-12, den, torch.ones_like(den))
    x = torch.where(den.abs() > 1e-12, x, r1)
    return torch.minimum(torch.maximum(x, r0), r2)


def estimate_radii(reference: torch.Tensor, frames: torch.Tensor, radii: Sequence[float], window: int = 4,
                   gamma: float = 2.2, blades: int = 0, stride: Optional[int] = None,
                   callback: ProgressFn = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame blur radius ``[B,N,H,W]`` (px) and the best window error ``[B,N,H,W]``.

    Each frame is compared with the reference blurred by every radius of ``radii`` (ascending,
    starting at 0), in linear light, with the same border normalisation as the renderer. Window
    errors are evaluated every ``stride`` px (default 2 from 512 px up, else 1) and the radius
    maps upsampled: the window already smooths them over ``2*window+1`` px.
    """
    b, n, h, w, _ = frames.shape
    if stride is None:
        stride = 2 if min(h, w) >= 512 else 1
    ref = reference.clamp(0, 1).pow(gamma).permute(0, 3, 1, 2)
    frm = frames.clamp(0, 1).pow(gamma).permute(0, 1, 4, 2, 3)  # [B,N,3,H,W]
    # One forward FFT of the reference for the whole bank; each radius costs one kernel FFT and one
    # inverse FFT, normalised at the frame border like the renderer.
    blur = SupportBlur(with_support(ref), max(radii))
    # Streaming arg-min: keep only the best error and its two neighbours, not the whole bank.
    best_e = best_j = e_before = e_after = prev = None
    for j, r in enumerate(radii):
        bank = ref if r <= 0 else blur(r, blades)
        diff = frm - bank.unsqueeze(1)
        e = _box((diff * diff).sum(2).reshape(b * n, 1, h, w), window, stride)[:, 0]  # [B*N, H', W']
        if best_e is None:
            best_e, best_j = e, torch.zeros_like(e, dtype=torch.long)
            e_before, e_after = e.clone(), e.clone()
        else:
            e_after = torch.where(best_j == j - 1, e, e_after)
            better = e < best_e
            best_e = torch.where(better, e, best_e)
            best_j = torch.where(better, torch.full_like(best_j, j), best_j)
            e_before = torch.where(better, prev, e_before)
        prev = e
        if callback is not None:
            callback(j + 1, len(radii))
    rad = torch.tensor(list(radii), device=best_e.device, dtype=best_e.dtype)
    jc = best_j.clamp(1, len(radii) - 2)
    fine = _parabola_vertex(rad[jc - 1], rad[jc], rad[jc + 1], e_before, best_e, e_after)
    interior = (best_j > 0) & (best_j < len(radii) - 1)
    est = torch.where(interior, fine, rad[best_j])
    if stride > 1:
        est = F.interpolate(est.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        best_e = F.interpolate(best_e.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return est.reshape(b, n, h, w), best_e.reshape(b, n, h, w)


def _side_sign(side, focus_m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """+1 where the scene lies behind the focal plane, -1 in front, ``[B,H,W]`` for the images ``like``.
    A per-pixel ``side`` (boolean mask or prior depth) is resized to them."""
    if isinstance(side, str):
        if side not in SIDES[:2]:
            raise ValueError(f"side must be 'behind', 'front' or a per-pixel prior map, got {side!r}")
        return torch.full(like.shape[:3], 1.0 if side == "behind" else -1.0, device=like.device)
    if not isinstance(side, (torch.Tensor, DepthMap)):
        raise ValueError("side must be 'behind', 'front', a boolean 'behind' mask or a prior depth map (m)")
    if isinstance(side, torch.Tensor) and side.dtype == torch.bool:
        behind = map_like(side.float(), like, "side mask", resize=True) > 0.5
    else:
        behind = map_like(side, like, "side prior depth map", resize=True, positive=True) >= focus_m.view(-1, 1, 1)
    return torch.where(behind, 1.0, -1.0).float()


def depth_from_bokeh_sweep(reference: torch.Tensor, frames, k_values, focus_m,
                           side: Union[str, torch.Tensor, DepthMap] = "behind", *, max_radius: Optional[float] = None,
                           window: int = 4, gamma: float = 2.2, texture_threshold: float = 1e-4,
                           residual_scale: float = 0.15, blades: int = 0, callback: ProgressFn = None) -> dict:
    """Estimate inverse-depth offset, depth and confidence from a bokeh sweep.

    reference ``[B,H,W,3]`` (sharp), frames ``[B,N,H,W,3]`` (or a list of N images), ``k_values``
    ``[N]`` or ``[B,N]`` (px*m, > 0), ``focus_m`` the shared focus distance (m). ``side``: "behind"
    (S2 = 1/(1/S1 - Delta)), "front" (1/(1/S1 + Delta)), a boolean per-pixel "behind" mask, or a prior
    depth map in metres (behind where the prior is farther than S1); masks and priors are resized to
    the frames.

    Returns ``delta`` ``[B,H,W]`` (1/m), ``depth`` ``[B,H,W]`` (m, capped at 1000), ``radius``
    ``[B,N,H,W]`` (px), ``confidence`` ``[B,H,W]`` (texture x fit), ``linearity`` ``[B,H,W]``
    (R^2 of the line through the origin), ``linearity_overall`` ``[B]`` (confidence-weighted),
    ``k_consistency`` ``[B,N]`` (median measured/expected radius per frame; 1 = physical),
    ``texture`` ``[B,H,W]`` and ``radii`` (the bank).
    """
    reference, frames = stack_frames(frames, reference, min_frames=2)
    b, n, h, w, _ = frames.shape
    dev = reference.device
    k = k_table(k_values, b, frames=n, device=dev)
    s1 = per_item("focus_m", focus_m, b, dev, positive=True)  # metres
    window = integer("window", window, 1, 256)
    gamma = number("gamma", gamma, "in (0, 10] (2.2 for photos and rendered stacks)", maximum=10.0)
    texture_threshold = number("texture_threshold", texture_threshold)
    residual_scale = number("residual_scale", residual_scale)
    blades = aperture_blades(blades)
    if max_radius is None:
        max_radius = min(64.0, 0.2 * max(h, w))
    max_radius = number("max_radius", max_radius, "> 1 px", minimum=1.0)
    # larger radii all blur the frame to its mean: one of them is enough
    radii = radius_grid(min(max_radius, covering_radius(h, w, blades) * 1.1), rel_step=0.08)
    sign = _side_sign(side, s1, reference)

    r_hat, err = estimate_radii(reference, frames, radii, window=window, gamma=gamma, blades=blades, callback=callback)
    kk = k.view(b, n, 1, 1)
    delta = (kk * r_hat).sum(1) / (kk * kk).sum(1)  # Eq. 28
    fit = kk * delta.unsqueeze(1)
    res = ((r_hat - fit) ** 2).mean(1).sqrt()
    rel_res = res / ((fit ** 2).mean(1).sqrt() + 0.5)
    ss = (r_hat ** 2).sum(1)
    linearity = torch.where(ss > 1e-6, 1 - ((r_hat - fit) ** 2).sum(1) / ss.clamp_min(1e-6), torch.ones_like(ss)).clamp(0, 1)

    lin_ref = reference.clamp(0, 1).pow(gamma).permute(0, 3, 1, 2)
    var = (_box(lin_ref * lin_ref, window + 2) - _box(lin_ref, window + 2) ** 2).sum(1).clamp_min(0)
    texture = var / (var + texture_threshold)
    fit_conf = torch.exp(-(rel_res / residual_scale) ** 2)
    saturated = (r_hat >= radii[-1] - 1e-4).any(1)
    confidence = texture * fit_conf * (~saturated).float()

    disp = 1.0 / s1.view(b, 1, 1) - sign * delta
    too_far = disp <= 1.0 / MAX_DEPTH_M
    depth = torch.where(too_far, torch.full_like(disp, MAX_DEPTH_M), 1.0 / disp.clamp_min(1.0 / MAX_DEPTH_M))
    confidence = torch.where(too_far, torch.zeros_like(confidence), confidence)

    wsum = confidence.sum((1, 2)).clamp_min(1e-6)
    lin_overall = (linearity * confidence).sum((1, 2)) / wsum
    k_cons = []
    for bi in range(b):
        m = (confidence[bi] > 0.5) & (delta[bi] > 1e-6)
        if int(m.sum()) < 16:
            k_cons.append(torch.full((n,), float("nan"), device=dev))
            continue
        ratio = r_hat[bi][:, m] / (k[bi].view(n, 1) * delta[bi][m].view(1, -1))
        k_cons.append(ratio.median(1).values)
    return {
        "delta": delta, "depth": depth, "radius": r_hat, "confidence": confidence, "linearity": linearity,
        "linearity_overall": lin_overall, "k_consistency": torch.stack(k_cons), "texture": texture,
        "match_error": err, "radii": radii, "focus_m": s1, "k_values": k,
    }


def depth_from_stack(stack: BokehStack, focus_m: Optional[float] = None, side: str = "behind",
                     prior_depth: Optional[DepthMap] = None, *, device=None, **options) -> tuple[DepthMap, dict]:
    """:func:`depth_from_bokeh_sweep` of a BokehStack: ``(DepthMap with confidence, full result)``.

    ``focus_m`` None (or 0) takes the focus the stack recorded; ``side`` is one of :data:`SIDES`,
    "prior depth" deciding front/behind per pixel from ``prior_depth``. Work runs on ``device``
    (default: the frames'); the DepthMap comes back on the frames' device.
    """
    if not isinstance(stack, BokehStack):
        raise ValueError(f"stack must be a BokehStack, got {type(stack).__name__}")
    focus = focus_m if focus_m else stack.meta.get("focus_m")
    if focus is None:
        raise ValueError("focus_distance_m is 0 and the stack does not record its focus: give the focus distance (m)")
    if side == "prior depth":
        if prior_depth is None:
            raise ValueError("side is 'prior depth' but no prior_depth is given: connect a coarse depth map")
        side = prior_depth
    home = stack.frames.device
    dev = device if device is not None else home
    res = depth_from_bokeh_sweep(stack.reference.to(dev), stack.frames.to(dev), stack.k_values.to(dev), focus,
                                 side=side, **options)
    depth = DepthMap(depth=res["depth"].to(home), confidence=res["confidence"].to(home),
                     meta={"source": "depth_from_bokeh_sweep", "focus_m": res["focus_m"].tolist(),
                           "linearity": res["linearity_overall"].tolist()})
    return depth, res


def linearity_report(result: dict) -> str:
    """Plain-text summary of how well each stack obeys ``r_i = K_i * Delta``."""
    lines = []
    b = result["delta"].shape[0]
    for bi in range(b):
        conf = result["confidence"][bi]
        frac = float((conf > 0.5).float().mean())
        kc = result["k_consistency"][bi]
        ks = result["k_values"][bi]
        per = ", ".join(f"K={float(kv):g}: {float(c):.2f}" for kv, c in zip(ks, kc))
        lin = float(result["linearity_overall"][bi])
        if frac < 0.01:
            verdict = "NOT consistent with one thin lens: no pixel's blur scales with K (or the scene lacks texture)"
        elif lin > 0.9 and bool(((kc - 1).abs() < 0.2).all()):
            verdict = "consistent with a thin lens"
        else:
            verdict = "NOT consistent with one thin lens (blur does not scale with K)"
        lines.append(
            f"[{bi}] linearity R^2 = {lin:.3f} (confidence-weighted); confident pixels {100 * frac:.1f}%; "
            f"measured/expected blur per frame: {per}; {verdict}; focus {float(result['focus_m'][bi]):.3g} m")
    return "\n".join(lines)

"""The UniDepthV2 + DSFA release's training losses (``unidepth/ops/losses``), with its config's
settings: SILog (log input, sqrt output, 0.15 of the squared mean added back), SelfDistill on the
two augmented copies of each image, ray regression (camera), edge-guided local SSI with a global
term, and the confidence loss; each weighted as in ``config_v2_vitl14_DSFA_*.json``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FNS = {
    "sqrt": lambda x: torch.sqrt(x + 1e-4),
    "log": lambda x: torch.log(x + 1e-4),
    "log1i": lambda x: torch.log(1 + 50 / (1e-4 + x)),
    "linear": lambda x: x,
}


def masked_mean(data, mask, dim):
    if mask is None:
        return data.mean(dim=dim, keepdim=True)
    mask = mask.float()
    return (torch.nan_to_num(data, nan=0.0) * mask).sum(dim=dim, keepdim=True) / mask.sum(dim=dim, keepdim=True).clamp(min=1.0)


def masked_mean_var(data, mask, dim):
    mask = mask.float()
    n = mask.sum(dim=dim, keepdim=True).clamp(min=1.0)
    mean = (data * mask).sum(dim=dim, keepdim=True) / n
    return mean, (mask * (data - mean) ** 2).sum(dim=dim, keepdim=True) / n


def ssi(inp, target, mask, dim):
    """Scale-shift normalisation on the points inside 1.96 std of both maps."""
    det = inp.detach()
    im, iv = masked_mean_var(det, mask, dim)
    tm, tv = masked_mean_var(target, mask, dim)
    isd, tsd = iv.clip(min=1e-6).sqrt(), tv.clip(min=1e-6).sqrt()
    stable = (det > im - 1.96 * isd) & (det < im + 1.96 * isd) & (target > tm - 1.96 * tsd) & (target < tm + 1.96 * tsd) & mask
    im, iv = masked_mean_var(inp, stable, dim)
    tm, tv = masked_mean_var(target, stable, dim)
    return (inp - im) / FNS["sqrt"](iv), (target - tm) / FNS["sqrt"](tv), stable


def silog(pred, target, mask, si, integrated: float = 0.15, eps: float = 1e-5):
    """Per-image SILog ``[B]`` over the last two dims (the release config's dims [-2, -1])."""
    pred, target = pred.float(), target.float()
    mask = mask.bool() & torch.isfinite(pred) & torch.isfinite(target)
    err = torch.nan_to_num(FNS["log"](pred.clamp(min=eps)) - FNS["log"](target.clamp(min=eps)), nan=0.0, posinf=0.0, neginf=0.0)
    m = mask.float()
    n = m.sum(dim=(-2, -1))
    mean = (err * m).sum(dim=(-2, -1)) / n.clamp(min=1.0)
    sq = (err.square() * m).sum(dim=(-2, -1)) / n.clamp(min=1.0)
    mean, sq = torch.where(n > 0, mean, torch.zeros_like(mean)), torch.where(n > 0, sq, torch.zeros_like(sq))
    var = torch.clamp(sq - mean.square(), min=0.0)
    mean, var = mean.reshape(mean.shape[0], -1).mean(-1), var.reshape(var.shape[0], -1).mean(-1)
    if integrated > 0:
        var = var + integrated * mean ** 2 * (1 - si.int())
    var = torch.clamp(torch.where(var.isfinite(), var, torch.zeros_like(var)), min=0.0)
    return torch.nan_to_num(FNS["sqrt"](var), nan=0.0, posinf=0.0, neginf=0.0)


def ray_regression(pred_rays, gt_rays):
    """Camera loss on rays ``[B,3,H,W]``: sqrt of the row-mean squared error, ``[B,H]`` (the release
    reduces over the last dim only). Zero error gives sqrt(1e-4): with ground-truth rays given to
    the decoder, as in the release's training, the term is that constant."""
    err = (pred_rays.float() - gt_rays.float()).square().mean(dim=1)
    return FNS["sqrt"](masked_mean(err, None, [-1]).squeeze(-1))


def self_distill(depth, intrinsics, mask, flips, eps: float = 1e-5):
    """Consistency of the two copies (0, 1) of each image after undoing flip and zoom ``[B]``."""
    chunks = depth.shape[0] // 2
    mask = F.interpolate(mask.float(), size=depth.shape[-2:], mode="nearest")
    in0, in1, ms = [], [], []
    for x, m, cam, fl in zip(depth.chunk(chunks), mask.chunk(chunks), intrinsics.chunk(chunks), flips.chunk(chunks)):
        x0, x1 = x
        m0, m1 = m
        fx0, fx1, cx0, cx1, cy0, cy1 = cam[0, 0, 0], cam[1, 0, 0], cam[0, 0, 2], cam[1, 0, 2], cam[0, 1, 2], cam[1, 1, 2]
        if bool(fl[0]) ^ bool(fl[1]):
            x0, m0 = torch.flip(x0, dims=(2,)), torch.flip(m0, dims=(2,))
            cx0 = x0.shape[-1] - cx0
        zoom = float(fx1 / fx0)
        x0 = F.interpolate(x0[None], scale_factor=zoom, mode="bilinear")[0]
        m0 = F.interpolate(m0[None], scale_factor=zoom, mode="nearest")[0]
        left = int(cx1 - (cx0 - 0.5) * zoom - 0.5)
        top = int(cy1 - (cy0 - 0.5) * zoom - 0.5)
        right, bottom = x1.shape[-1] - left - x0.shape[-1], x1.shape[-2] - top - x0.shape[-2]
        pad = (max(0, left), max(0, right), max(0, top), max(0, bottom))
        x0, m0 = F.pad(x0, pad), F.pad(m0, pad)
        ct, cb, cl, cr = max(0, -top), max(0, -bottom), max(0, -left), max(0, -right)
        x0 = x0[:, ct: x0.shape[-2] - cb, cl: x0.shape[-1] - cr]
        m0 = m0[:, ct: m0.shape[-2] - cb, cl: m0.shape[-1] - cr]
        in0.append(x0)
        in1.append(x1)
        ms.append(torch.logical_and(m0, m1))
    in0, in1, ms = torch.stack(in0), torch.stack(in1), torch.stack(ms)

    def one(a, b):
        return FNS["sqrt"](masked_mean((a - b).square().mean(dim=1), ms, [-2, -1]) + eps)
    return torch.cat([one(in0, in1.detach()), one(in1, in0.detach())], 0).reshape(-1)


def _edges(image, valid):
    c = image.shape[1]
    dx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=image.device).reshape(1, 1, 3, 3)
    dy = dx.transpose(-1, -2)
    gx = (F.conv2d(image, dx.repeat(c, 1, 1, 1), groups=c, padding="same") / 8).square().mean(1, keepdim=True).sqrt()
    gy = (F.conv2d(image, dy.repeat(c, 1, 1, 1), groups=c, padding="same") / 8).square().mean(1, keepdim=True).sqrt()
    e = torch.sqrt(gx ** 2 + gy ** 2)
    e[:, :, :3], e[:, :, -3:], e[:, :, :, :3], e[:, :, :, -3:] = 0, 0, 0, 0
    e[~valid.bool()] = 0
    return e


def _strong_edges(edges, quantile: float = 0.9, reshape: int = 14):
    small = F.interpolate(edges, scale_factor=1 / reshape, mode="bilinear", align_corners=False)
    flat = small.flatten(1)
    sel = flat > torch.quantile(flat, quantile, dim=-1, keepdim=True)
    n = sel.sum(-1)
    if (n < 10).any():
        sel[n < 10] = sel[n < 10] | (torch.rand_like(flat[n < 10]) > quantile)
        n = sel.sum(-1)
    k = int(n.min())
    idx = torch.stack([torch.nonzero(x, as_tuple=False)[:k].squeeze() for x in sel])
    return torch.stack([idx // small.shape[-1], idx % small.shape[-1]], dim=-1) * reshape


def _patches(t, coords, size: int):
    """``[B,C,H,W]`` -> ``[B, N, size*size]`` windows centred on ``coords`` (zero padded)."""
    half = size // 2
    padded = F.pad(t, (half, half, half, half))
    out = []
    for img, cs in zip(padded, coords.int()):
        out.append(torch.stack([img[..., y: y + 2 * half + 1, x: x + 2 * half + 1] for y, x in cs.reshape(-1, 2).tolist()]))
    return torch.stack(out).reshape(t.shape[0], -1, size * size)


def edge_guided_ssi(pred, target, mask, image, validity, min_samples: int = 6, eps: float = 1e-5, training: bool = True):
    """Local SSI on patches around strong image edges plus the global SSI term ``[B]`` (log1i input)."""
    mask = mask.bool()
    inp, tgt = FNS["log1i"](pred.float()), FNS["log1i"](target.float())
    valid = (F.conv2d(validity.float(), torch.ones(1, 1, 3, 3, device=validity.device), padding=1) == 9).float()
    coords = _strong_edges(_edges(image, valid))
    k = int((np.random.uniform(0.04, 0.08) if training else 0.05) * min(inp.shape[-2:]))
    k = k + int(k % 2 == 0)
    b = inp.shape[0]
    pi, pt = _patches(inp, coords, k), _patches(tgt, coords, k)
    pm = _patches(mask.float(), coords, k).bool()
    pi, pt, pm = ssi(pi, pt, pm, [-1])
    err = (pi - pt).abs().clamp(min=eps)
    local = FNS["sqrt"](masked_mean(err, pm, [-1]).squeeze(-1).clamp(min=eps))
    local = masked_mean(local, pm.sum(-1) >= min_samples, [-1]).squeeze(-1)
    gi, gt, gm = ssi(inp.reshape(b, 1, -1), tgt.reshape(b, 1, -1), mask.reshape(b, 1, -1), [-1])
    glob = FNS["sqrt"](masked_mean((gi - gt).abs().clamp(min=eps), gm, [-1]).squeeze(-1).clamp(min=eps)).squeeze(-1)
    return torch.stack([local.reshape(b), glob.reshape(b)]).mean(0)


def confidence_loss(log_conf, pred, gt, mask):
    """|(median-rescaled) depth error - confidence| on valid pixels, sqrt output ``[B]``."""
    b, c = gt.shape[:2]
    mask = mask.bool().reshape(b, -1)
    gt, pred = gt.float().reshape(b, c, -1), pred.float().reshape(b, c, -1)
    pred = torch.stack([p * torch.median(g[:, m]) / torch.median(p[:, m]) for p, g, m in zip(pred, gt, mask)])
    err = torch.abs((pred - gt).norm(dim=1) - log_conf.float().reshape(b, -1))
    return FNS["sqrt"](masked_mean(err, mask, [-1]).squeeze(-1))

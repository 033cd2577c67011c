"""Stage-1 bokeh adapter: release layout, the processor against its equations, loading, sampling."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from bokehdepth_core import stage1
from bokehdepth_core.optics import normalize_k
from support import DATA
from bokehdepth_core.stage1 import BokehAdapter, sample_bokeh_stack
from bokehdepth_core.testing import tiny_image, tiny_kontext_pipeline, tiny_transformer

LAYOUT = DATA / "bokeh_lora_layout.json"  # the release file's keys/shapes


def _randomize(adapter: BokehAdapter, seed: int = 0, std: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _inputs(tr, batch=2, n_img=12, n_txt=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = tr.config
    img = torch.randn(batch, n_img, cfg.in_channels, generator=g)
    txt = torch.randn(batch, n_txt, cfg.joint_attention_dim, generator=g)
    pooled = torch.randn(batch, cfg.pooled_projection_dim, generator=g)
    img_ids = torch.randint(0, 8, (n_img, 3), generator=g).float()
    txt_ids = torch.zeros(n_txt, 3)
    return dict(hidden_states=img, encoder_hidden_states=txt, pooled_projections=pooled,
                timestep=torch.tensor([0.5] * batch), guidance=torch.tensor([3.5] * batch),
                img_ids=img_ids, txt_ids=txt_ids, return_dict=False)


def _run(tr, inputs):
    with torch.no_grad():
        return tr(**inputs)[0]


# --------------------------------------------------------------------------- layout

def test_layout_matches_release_on_meta():
    from diffusers import FluxTransformer2DModel

    ref = json.loads(LAYOUT.read_text())
    cfg = dict(ref["config"]["transformer"])
    cfg["axes_dims_rope"] = tuple(cfg["axes_dims_rope"])
    with torch.device("meta"):
        tr = FluxTransformer2DModel(**cfg)
    ad = BokehAdapter.attach(tr)  # release defaults: blocks 0-56, rank/alpha 128, q and k adapters
    got = {k: list(v.shape) for k, v in ad.state_dict().items()}
    assert got == ref["tensors"]
    procs = list(tr.attn_processors.items())
    assert len(procs) == 57 and all(isinstance(p, stage1.BokehAttnProcessor) for _, p in procs)
    for i, (name, p) in enumerate(procs):  # global index order = the release's adapter_modules.{i}
        assert p.index == i and name.startswith(ref["adapter_module_index"][str(i)] + ".")


# --------------------------------------------------------------------------- formulation

def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(x, cos, sin):  # x [B,H,S,D]; interleaved pairs (x0,x1) -> (x0 c - x1 s, x1 c + x0 s)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 0::2]
    return torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1).flatten(-2)


def _lowrank(mod, x, alpha, rank):
    return (x @ mod.down.weight.T @ mod.up.weight.T) * (alpha / rank)


def _reference_attention(attn, layer, emb, alpha, rank, h, e, rope):
    """The release's processor written from the equations, in the authors' [B,H,S,D] layout,
    with the bokeh attention computed as a real attention over the to_k_dof/to_v_dof token."""
    B, H = h.shape[0], attn.heads
    q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)
    q = q + _lowrank(layer.to_q_adp, q, alpha, rank)
    k = k + _lowrank(layer.to_k_adp, k, alpha, rank)
    split = lambda t: t.view(B, -1, H, t.shape[-1] // H).transpose(1, 2)  # noqa: E731
    q = _rms(split(q), attn.norm_q.weight, attn.norm_q.eps)
    k = _rms(split(k), attn.norm_k.weight, attn.norm_k.eps)
    v = split(v)
    if e is not None:
        eq = _rms(split(attn.add_q_proj(e)), attn.norm_added_q.weight, attn.norm_added_q.eps)
        ek = _rms(split(attn.add_k_proj(e)), attn.norm_added_k.weight, attn.norm_added_k.eps)
        q, k, v = torch.cat([eq, q], 2), torch.cat([ek, k], 2), torch.cat([split(attn.add_v_proj(e)), v], 2)
    cos, sin = rope
    q, k = _rope(q, cos, sin), _rope(k, cos, sin)
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = w @ v
    if emb is not None:
        kd = split(_lowrank(layer.to_k_dof, emb, alpha, rank)[:, None])
        vd = split(_lowrank(layer.to_v_dof, emb, alpha, rank)[:, None])
        wd = torch.softmax(q @ kd.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        out = out + wd @ vd
    out = out.transpose(1, 2).reshape(B, -1, H * q.shape[-1])
    if e is None:
        return out
    txt, img = out[:, : e.shape[1]], out[:, e.shape[1]:]
    return attn.to_out[0](img), attn.to_add_out(txt)


@pytest.fixture(scope="module")
def tr():
    return tiny_transformer(seed=3)


@pytest.mark.parametrize("layer_index", [0, 3], ids=["double", "single"])
def test_processor_matches_equations(tr, layer_index):
    rank, alpha = 4, 8.0
    ad = BokehAdapter.attach(tr, rank=rank, alpha=alpha)
    try:
        _randomize(ad, seed=layer_index)
        ks = [7.0, 45.0]  # 45 is clamped to 30 in the conditioning
        ad.set_k(ks)
        name, proc = list(tr.attn_processors.items())[layer_index]
        attn = tr.get_submodule(name[: -len(".processor")])
        g = torch.Generator().manual_seed(5)
        n_txt, n_img, dim = 4, 9, attn.inner_dim
        ids = torch.randint(0, 6, (n_txt + n_img, 3), generator=g).float()
        rope = tr.pos_embed(ids)
        with torch.no_grad():
            emb = ad.embedding_layer(torch.tensor([[normalize_k(k)] for k in ks]))
            torch.testing.assert_close(emb[1], ad.embedding_layer(torch.tensor([1.0])))  # K=45 acts as K=30
        layer = ad.adapter_modules[layer_index]
        with torch.no_grad():
            if layer_index < tr.config.num_layers:
                h, e = torch.randn(2, n_img, dim, generator=g), torch.randn(2, n_txt, dim, generator=g)
                got = attn(h, e, image_rotary_emb=rope)
                want = _reference_attention(attn, layer, emb, alpha, rank, h, e, rope)
                for a, b in zip(got, want):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
            else:
                h = torch.randn(2, n_txt + n_img, dim, generator=g)
                got = attn(h, image_rotary_emb=rope)
                want = _reference_attention(attn, layer, emb, alpha, rank, h, None, rope)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
                base = proc.base(attn, h, image_rotary_emb=rope)
                assert (got - base).abs().max() > 1e-3, "the adapter must change the output"
    finally:
        ad.detach()


def test_detach_restores_base_exactly_and_clear_keeps_qk(tr):
    inputs = _inputs(tr)
    base = _run(tr, inputs)
    ad = BokehAdapter.attach(tr, rank=4, alpha=4)
    _randomize(ad, seed=9)
    ad.set_k([5.0, 25.0])
    cond = _run(tr, inputs)
    assert (cond - base).abs().max() > 1e-3
    ad.clear()
    cleared = _run(tr, inputs)
    assert (cleared - cond).abs().max() > 1e-4 and (cleared - base).abs().max() > 1e-4
    # clear() == the processors with only the q/k adapters: zero the bokeh value path instead
    with torch.no_grad():
        saved = [m.to_v_dof.up.weight.clone() for m in ad.adapter_modules]
        for m in ad.adapter_modules:
            m.to_v_dof.up.weight.zero_()
    ad.set_k([5.0, 25.0])
    assert torch.equal(_run(tr, inputs), cleared)
    with torch.no_grad():
        for m, w in zip(ad.adapter_modules, saved):
            m.to_v_dof.up.weight.copy_(w)
    ad.detach()
    assert not any(isinstance(p, stage1.BokehAttnProcessor) for p in tr.attn_processors.values())
    assert torch.equal(_run(tr, inputs), base)
    assert not any(".processor." in k for k in tr.state_dict()), "the transformer's state dict is untouched"


def test_batch_element_follows_its_own_k(tr):
    inputs = _inputs(tr, batch=2)
    ad = BokehAdapter.attach(tr, rank=4, alpha=4)
    try:
        _randomize(ad, seed=2)
        ad.set_k([3.0, 20.0])
        both = _run(tr, inputs)
        one = {k: (v[1:] if isinstance(v, torch.Tensor) and v.shape[0] == 2 and k not in ("img_ids", "txt_ids") else v)
               for k, v in inputs.items()}
        ad.set_k([20.0])
        torch.testing.assert_close(_run(tr, one), both[1:], rtol=1e-4, atol=1e-5)
    finally:
        ad.detach()


def test_partial_blocks_keep_global_indices(tr):
    ad = BokehAdapter.attach(tr, blocks="1,3-4", rank=2, alpha=2)
    try:
        idx = sorted({int(k.split(".")[1]) for k in ad.state_dict() if k.startswith("adapter_modules.")})
        assert idx == [1, 3, 4]
        kinds = [type(p).__name__ for p in tr.attn_processors.values()]
        assert [k == "BokehAttnProcessor" for k in kinds] == [False, True, False, True, True]
    finally:
        ad.detach()
    with pytest.raises(ValueError, match="blocks"):
        BokehAdapter.attach(tr, blocks="0-9")


def test_file_with_leading_blocks_attaches_to_the_full_transformer(tr, tmp_path):
    ad = BokehAdapter.attach(tr, blocks="0-2", rank=2, alpha=2)
    path = ad.save(str(tmp_path / "first3.bin"))
    ad.detach()
    loaded = BokehAdapter.from_file(path)
    assert loaded.num_layers == 3
    loaded.attach_to(tr)
    try:
        kinds = [type(p).__name__ == "BokehAttnProcessor" for p in tr.attn_processors.values()]
        assert kinds == [True, True, True, False, False] and loaded.num_layers == 5
        assert sorted(loaded.state_dict()) == sorted(stage1.read_state_dict(path))
    finally:
        loaded.detach()


# --------------------------------------------------------------------------- loading

@pytest.mark.parametrize("ext", [".bin", ".safetensors"])
@pytest.mark.parametrize("bare", [False, True], ids=["prefixed", "bare"])
def test_round_trip(tr, tmp_path, ext, bare):
    ad = BokehAdapter.attach(tr, rank=4, alpha=4)
    try:
        _randomize(ad, seed=11)
        path = ad.save(str(tmp_path / f"adapter{ext}"), bare_keys=bare)
        want = {k: v.clone() for k, v in ad.state_dict().items()}
    finally:
        ad.detach()
    if bare:
        raw = stage1.read_state_dict(path)
        assert any(k.startswith("0.") for k in raw) and not any(k.startswith("adapter_modules") for k in raw)
    fresh = BokehAdapter.from_file(path)
    assert (fresh.rank, fresh.blocks, fresh.num_layers) == (4, [0, 1, 2, 3, 4], 5)
    for k, v in want.items():
        assert torch.equal(fresh.state_dict()[k], v), k
    again = BokehAdapter.attach(tr, rank=4, alpha=4).load(path)
    try:
        for k, v in want.items():
            assert torch.equal(again.state_dict()[k], v), k
    finally:
        again.detach()


def test_wrong_rank_and_block_count_errors(tr, tmp_path):
    ad = BokehAdapter.attach(tr, rank=4, alpha=4)
    path = ad.save(str(tmp_path / "r4.bin"))
    ad.detach()
    ad8 = BokehAdapter.attach(tr, rank=8, alpha=8)
    try:
        with pytest.raises(ValueError, match="rank 4.*rank=4"):
            ad8.load(path)
    finally:
        ad8.detach()
    small = tiny_transformer(seed=0, num_layers=1, num_single_layers=1)
    with pytest.raises(ValueError, match="another architecture"):
        BokehAdapter.attach(small, rank=4, alpha=4).load(path)
    with pytest.raises(ValueError, match="FLUX.1-Kontext-dev"):
        BokehAdapter.from_file(path).attach_to(small)
    junk = tmp_path / "junk.safetensors"
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.zeros(2)}, str(junk))
    with pytest.raises(ValueError, match="not a BokehDepth Stage-1 adapter"):
        BokehAdapter.from_file(str(junk))


# --------------------------------------------------------------------------- sampling

@pytest.fixture(scope="module")
def pipe_and_adapter():
    pipe = tiny_kontext_pipeline(seed=0)
    ad = BokehAdapter.attach(pipe.transformer, rank=4, alpha=4)
    _randomize(ad, seed=4, std=0.1)
    return pipe, ad


def _arr(frames):
    return np.stack([np.asarray(f, dtype=np.int16) for f in frames])


@pytest.mark.slow
def test_sampler_deterministic_batched_and_aligned(pipe_and_adapter):
    pipe, ad = pipe_and_adapter
    img = tiny_image(40, 72, seed=2)  # -> 64x32 after alignment to 16
    ks = [2.0, 12.0, 30.0]
    seen = []
    a = sample_bokeh_stack(pipe, ad, img, ks, num_inference_steps=3, seed=7, max_sequence_length=32, callback=lambda d, n: seen.append((d, n)))
    b = sample_bokeh_stack(pipe, ad, img, ks, num_inference_steps=3, seed=7, max_sequence_length=32)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert len(a) == 3 and all(f.size == (64, 32) for f in a)
    assert np.array_equal(_arr(a), _arr(b)), "same seed -> identical stack"
    assert np.abs(_arr(a)[0] - _arr(a)[2]).mean() > 0.5, "frames differ with K"
    single = [sample_bokeh_stack(pipe, ad, img, [k], num_inference_steps=3, seed=7, max_sequence_length=32)[0] for k in ks]
    assert np.abs(_arr(single) - _arr(a)).max() <= 2, "batch call equals frame-by-frame calls"
    c = sample_bokeh_stack(pipe, ad, img, ks, num_inference_steps=3, seed=8, max_sequence_length=32)
    assert not np.array_equal(_arr(a), _arr(c))
    assert ad.k_values is None and ad.transformer is pipe.transformer  # cleared, still attached


def test_sampler_bad_input(pipe_and_adapter, caplog):
    pipe, ad = pipe_and_adapter
    with pytest.raises(ValueError, match="k_values"):
        sample_bokeh_stack(pipe, ad, tiny_image(32, 32), [], num_inference_steps=1)
    with pytest.raises(ValueError, match="image.*16x16"):
        sample_bokeh_stack(pipe, ad, tiny_image(12, 40), [10.0], num_inference_steps=1)
    with pytest.raises(ValueError, match="image"):
        sample_bokeh_stack(pipe, ad, torch.rand(2, 32, 32, 3), [10.0], num_inference_steps=1)
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        out = sample_bokeh_stack(pipe, ad, tiny_image(32, 32), [0.5, 31.0], num_inference_steps=1,
                                 color_transfer=True)
    assert len(out) == 2 and "outside the adapter's trained range" in caplog.text


def test_prompts_carry_raw_k():
    assert stage1.build_prompt(stage1.PROMPT_TEMPLATE, 45.0).startswith("Set dof_cond = 45.00 (stronger")
    assert stage1.build_prompt("f/{aperture:.1f}", 10.0) == "f/3.0"
    with pytest.raises(ValueError, match="prompt_template"):
        stage1.build_prompt("{nope}", 1.0)


def test_callback_can_cancel(pipe_and_adapter):
    pipe, ad = pipe_and_adapter

    class Cancelled(Exception):
        pass

    def cb(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        sample_bokeh_stack(pipe, ad, tiny_image(32, 32), [10.0], num_inference_steps=3, max_sequence_length=32, callback=cb)
    assert ad.k_values is None


def test_load_kontext_pipeline_local_folder(tmp_path, pipe_and_adapter):
    pipe, _ = pipe_and_adapter
    folder = tmp_path / "kontext"
    pipe.save_pretrained(str(folder))
    loaded = stage1.load_kontext_pipeline(str(folder), dtype=torch.float32, device="cpu")
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in b), name
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        stage1.load_kontext_pipeline(str(tmp_path), dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="offload"):
        stage1.load_kontext_pipeline(str(folder), dtype=torch.float32, device="cpu", offload="disk")


def test_color_transfer_matches_reference_stats():
    from PIL import Image

    from bokehdepth_core import color

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    back = color.lab8_to_rgb8(color.rgb8_to_lab8(rgb))
    assert np.abs(back.astype(int) - rgb).max() <= 1
    ref = Image.fromarray(rng.integers(60, 200, (20, 24, 3), dtype=np.uint8))
    tgt = Image.fromarray((rng.integers(0, 120, (16, 16, 3))).astype(np.uint8))
    out = color.color_transfer_lab(ref, tgt)
    lab_ref = color.rgb8_to_lab8(np.asarray(ref))
    lab_out = color.rgb8_to_lab8(np.asarray(out))
    assert np.abs(lab_ref.mean((0, 1)) - lab_out.mean((0, 1))).max() < 3.0


def test_single_file_transformer_goes_through_local_config(tmp_path, pipe_and_adapter):
    """The folder's config is found offline; a file that is not a FLUX transformer is refused clearly."""
    from safetensors.torch import save_file

    pipe, _ = pipe_and_adapter
    folder = tmp_path / "kontext"
    pipe.save_pretrained(str(folder))
    bogus = tmp_path / "not_a_transformer.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(3, 2)}, str(bogus))
    with pytest.raises(ValueError, match="transformer_file.*not a FLUX.1 transformer"):
        stage1.load_kontext_pipeline(str(folder), dtype=torch.float32, device="cpu", transformer_file=str(bogus))


def test_adapter_dtype_own_or_transformer(tmp_path):
    tr16 = tiny_transformer(seed=1).to(torch.bfloat16)
    inputs = {k: (v.to(torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() and k not in ("img_ids", "txt_ids") else v)
              for k, v in _inputs(tr16).items()}
    ad = BokehAdapter.attach(tr16, rank=4, alpha=4, dtype=torch.float32)  # kept in fp32, cast back to bf16
    _randomize(ad, seed=1)
    ad.set_k([4.0, 8.0])
    out = _run(tr16, inputs)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert ad.embedding_layer[0].weight.dtype == torch.float32
    path = ad.save(str(tmp_path / "a.safetensors"))
    ad.detach()
    loaded = BokehAdapter.from_file(path).attach_to(tr16)  # "auto": the transformer's dtype, as the release runs it
    try:
        assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    finally:
        loaded.detach()

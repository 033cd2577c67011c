"""Tiny random-weight FLUX.1-Kontext pipeline built offline, for tests, the demo and benchmarks.

Every part is constructed in code (transformer, VAE, CLIP and T5 encoders and their tokenizers):
nothing is read from the hub or disk. The shapes follow the real model where it matters to the
bokeh adapter (double blocks before single blocks, joint text+image attention with RoPE, a VAE
that downsamples 8x so images align to 16 px like FLUX).
"""

from __future__ import annotations

import torch

TINY_TRANSFORMER = dict(
    patch_size=1,
    in_channels=16,  # 4 latent channels x 2x2 packing
    out_channels=None,
    num_layers=2,
    num_single_layers=3,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    guidance_embeds=True,
    axes_dims_rope=(4, 6, 6),
)


def _bytes_to_unicode() -> dict[int, str]:
    """The printable-character stand-ins byte-level BPE uses for raw bytes (GPT-2 / CLIP convention)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def tiny_clip_tokenizer(model_max_length: int = 77):
    """A CLIP BPE tokenizer whose vocabulary is single byte-characters (no merges)."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for ch in _bytes_to_unicode().values():
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = model_max_length
    return tok


def tiny_t5_tokenizer(model_max_length: int = 512):
    """A T5 unigram tokenizer over lowercase/uppercase letters, digits and punctuation."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:=()-_'\"!?/"
    pieces += [(c, -3.0) for c in alphabet] + [("\u2581" + c, -2.5) for c in alphabet]
    tok = T5TokenizerFast(vocab=pieces, extra_ids=0)
    tok.model_max_length = model_max_length
    return tok


def tiny_transformer(seed: int = 0, **overrides):
    from diffusers import FluxTransformer2DModel

    cfg = dict(TINY_TRANSFORMER, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FluxTransformer2DModel(**cfg).eval()


def tiny_kontext_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32, num_layers: int = 2,
                          num_single_layers: int = 3):
    """A FluxKontextPipeline with random weights, a few MB in all, built without any download."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok = tiny_clip_tokenizer()
    t5_tok = tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = tiny_transformer(seed, num_layers=num_layers, num_single_layers=num_single_layers)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
            sample_size=32, use_quant_conv=False, use_post_quant_conv=False,
            shift_factor=0.0609, scaling_factor=1.5035,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(clip_tok), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
            bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id,
        ))
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=len(t5_tok), d_model=32, d_ff=37, d_kv=8, num_layers=1, num_heads=2,
            relative_attention_num_buckets=8, decoder_start_token_id=0,
            pad_token_id=t5_tok.pad_token_id, eos_token_id=t5_tok.eos_token_id,
        ))
    pipe = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tok,
        text_encoder_2=text_encoder_2.eval(), tokenizer_2=t5_tok, transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def tiny_image(height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth random test picture ``[1,H,W,3]`` in 0..1 (ComfyUI IMAGE layout)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return img.permute(0, 2, 3, 1).contiguous()

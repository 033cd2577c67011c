"""Tiny FLUX.1-Kontext parts held by ComfyUI's own classes (MODEL, CLIP, VAE), with the same
random weights as a diffusers pipeline, for checks of the native Stage-1 against the diffusers path.

ComfyUI hard-codes a few sizes, so the parts are shaped to fit: its Flux detector assumes FLUX.1
sizes (the config is passed here; the key conversion is ComfyUI's own), its VAE uses
GroupNorm(32) and an explicit ddconfig, its Flux latent format has 16 channels (scale 0.3611,
shift 0.1159), its CLIP token table has 49408 rows and its T5 uses 32 relative buckets up to
distance 128 with a gated-GELU MLP. Requires the real ComfyUI to be importable (``comfyui`` fixture).
"""

from __future__ import annotations

import types
from pathlib import Path

import torch

from bokehdepth_core.testing import tiny_clip_tokenizer, tiny_t5_tokenizer, tiny_transformer

LATENT_CHANNELS = 16
SCALE, SHIFT = 0.3611, 0.1159  # ComfyUI's Flux latent format
VAE_CHANNELS = (32, 32, 64, 64)
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- transformer / MODEL

def flux_transformer(seed: int = 0, num_layers: int = 2, num_single_layers: int = 2):
    """A diffusers Flux transformer on 16-channel latents (64 after 2x2 packing)."""
    return tiny_transformer(seed, in_channels=4 * LATENT_CHANNELS, num_layers=num_layers,
                            num_single_layers=num_single_layers)


def comfy_model(transformer, dtype: torch.dtype = torch.float32):
    """ComfyUI's Flux (``model_base.Flux`` in a ModelPatcher) holding ``transformer``'s weights."""
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.supported_models

    cfg = transformer.config
    unet_config = dict(
        image_model="flux", in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=2,
        vec_in_dim=cfg.pooled_projection_dim, context_in_dim=cfg.joint_attention_dim,
        hidden_size=cfg.num_attention_heads * cfg.attention_head_dim, mlp_ratio=4.0,
        num_heads=cfg.num_attention_heads, depth=cfg.num_layers, depth_single_blocks=cfg.num_single_layers,
        axes_dim=list(cfg.axes_dims_rope), theta=10000, qkv_bias=True, guidance_embed=True,
    )
    config = comfy.supported_models.Flux(unet_config)
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, "")
    # the conversion writes some tensors in place (scale/shift swaps): give it copies
    sd = comfy.model_detection.convert_diffusers_mmdit({k: v.clone() for k, v in transformer.state_dict().items()}, "")
    model.load_model_weights(sd, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


# --------------------------------------------------------------------------- VAE

def diffusers_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=VAE_CHANNELS, layers_per_block=1,
            latent_channels=LATENT_CHANNELS, norm_num_groups=32, sample_size=32, use_quant_conv=True,
            use_post_quant_conv=True, shift_factor=SHIFT, scaling_factor=SCALE,
        )
    return vae.eval()


def comfy_vae(vae):
    import comfy.sd

    ddconfig = dict(double_z=True, z_channels=LATENT_CHANNELS, resolution=256, in_channels=3, out_ch=3,
                    ch=VAE_CHANNELS[0], ch_mult=[c // VAE_CHANNELS[0] for c in VAE_CHANNELS], num_res_blocks=1,
                    attn_resolutions=[], dropout=0.0)
    return comfy.sd.VAE(sd={k: v.clone() for k, v in vae.state_dict().items()}, device=CPU, dtype=torch.float32,
                        config={"params": {"embed_dim": LATENT_CHANNELS, "ddconfig": ddconfig}})


# --------------------------------------------------------------------------- text encoders / CLIP

CLIP_CONFIG = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                   max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=32)
T5_CONFIG = dict(d_model=32, d_ff=37, d_kv=8, num_layers=1, num_heads=2, relative_attention_num_buckets=32,
                 relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dense_act_fn="gelu_new",
                 is_gated_act=True, decoder_start_token_id=0, layer_norm_epsilon=1e-6)
COMFY_CLIP_VOCAB = 49408  # comfy.clip_model.CLIPEmbeddings' fixed table size


def text_encoders(seed: int = 0):
    """(clip tokenizer, CLIPTextModel, t5 tokenizer, T5EncoderModel) with random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok, t5_tok = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(clip_tok), bos_token_id=clip_tok.bos_token_id,
                                            eos_token_id=clip_tok.eos_token_id, pad_token_id=clip_tok.pad_token_id,
                                            **CLIP_CONFIG)).eval()
        t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), pad_token_id=t5_tok.pad_token_id,
                                     eos_token_id=t5_tok.eos_token_id, **T5_CONFIG)).eval()
    return clip_tok, clip, t5_tok, t5


def comfy_clip(clip_tok, clip, t5_tok, t5, folder: Path):
    """ComfyUI's CLIP object (Flux tokenizer and text-encoder classes) on the tiny encoders; the
    tokenizers are saved to ``folder`` because ComfyUI's tokenizers load from a path."""
    import comfy.sd
    import comfy.text_encoders.flux as flux
    import comfy.text_encoders.t5
    from comfy import sd1_clip
    from transformers import CLIPTokenizer, T5TokenizerFast

    clip_dir, t5_dir = folder / "clip_tokenizer", folder / "t5_tokenizer"
    clip_tok.save_pretrained(str(clip_dir))
    t5_tok.save_pretrained(str(t5_dir))

    class Tokenizer(flux.FluxTokenizer):
        def __init__(self, embedding_directory=None, tokenizer_data={}):
            self.clip_l = sd1_clip.SDTokenizer(str(clip_dir), embedding_directory=embedding_directory,
                                               embedding_size=CLIP_CONFIG["hidden_size"], tokenizer_class=CLIPTokenizer,
                                               tokenizer_data=tokenizer_data)
            self.t5xxl = sd1_clip.SDTokenizer(str(t5_dir), embedding_directory=embedding_directory, pad_with_end=False,
                                              embedding_size=T5_CONFIG["d_model"], embedding_key="t5xxl",
                                              tokenizer_class=T5TokenizerFast, has_start_token=False,
                                              pad_to_max_length=False, max_length=99999999, min_length=256,
                                              tokenizer_data=tokenizer_data)

    clip_cfg = dict(CLIP_CONFIG, bos_token_id=clip_tok.bos_token_id, eos_token_id=clip_tok.eos_token_id)
    t5_cfg = dict(T5_CONFIG, vocab_size=len(t5_tok), dense_act_fn="gelu_pytorch_tanh", model_type="t5")

    class TextModel(flux.FluxClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            torch.nn.Module.__init__(self)
            self.clip_l = sd1_clip.SDClipModel(device=device, dtype=dtype, textmodel_json_config=dict(clip_cfg),
                                               return_projected_pooled=False, model_options=model_options,
                                               special_tokens={"start": clip_tok.bos_token_id,
                                                               "end": clip_tok.eos_token_id,
                                                               "pad": clip_tok.eos_token_id})
            self.t5xxl = sd1_clip.SDClipModel(device=device, dtype=dtype, textmodel_json_config=dict(t5_cfg),
                                              model_class=comfy.text_encoders.t5.T5, special_tokens={"end": 1, "pad": 0},
                                              model_options=dict(model_options, model_name="t5xxl"))
            self.dtypes = {dtype}

    target = types.SimpleNamespace(clip=TextModel, tokenizer=Tokenizer, params={})
    out = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32, "load_device": CPU,
                                                      "offload_device": CPU, "initial_device": CPU})
    clip_sd = {("text_model." + k if not k.startswith("text_model.") else k): v for k, v in clip.state_dict().items()}
    table = clip_sd["text_model.embeddings.token_embedding.weight"]
    clip_sd["text_model.embeddings.token_embedding.weight"] = torch.cat(
        [table, torch.zeros(COMFY_CLIP_VOCAB - table.shape[0], table.shape[1])])
    out.cond_stage_model.clip_l.load_sd(clip_sd)
    out.cond_stage_model.t5xxl.load_sd(t5.state_dict())
    return out


# --------------------------------------------------------------------------- everything

def kontext(folder: Path, seed: int = 0, num_layers: int = 2, num_single_layers: int = 2):
    """The same tiny FLUX.1-Kontext twice: a diffusers pipeline and ComfyUI's (MODEL, CLIP, VAE)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline

    transformer = flux_transformer(seed, num_layers, num_single_layers)
    vae = diffusers_vae(seed + 1)
    clip_tok, clip, t5_tok, t5 = text_encoders(seed + 2)
    pipe = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True), vae=vae, text_encoder=clip,
        tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    comfy = types.SimpleNamespace(model=comfy_model(transformer), vae=comfy_vae(vae),
                                  clip=comfy_clip(clip_tok, clip, t5_tok, t5, folder))
    return pipe, comfy

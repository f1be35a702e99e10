"""Test helper (not a test module): tiny random-weight diffusers pipelines built from configs:
InstructPix2Pix, FLUX.1 Kontext, and Qwen-Image-Edit / -Plus without their text encoder.

Each is saved with ``save_pretrained(safe_serialization=True)`` and loaded back by the tests through
the same ``DiffusersEditor`` code path real weights take. Nothing here touches the network: the
CLIP tokenizer is written locally (a byte-level vocab and an empty merges file), the T5 one is a
character-level Unigram vocabulary built in memory.

Sizes are chosen for speed on two CPU cores: the VAE has 4 blocks so latents are image/8 (with 2
blocks the latents are image/2 and the same edit is about 50 times slower).
"""

from __future__ import annotations

import json
from pathlib import Path

TOKENIZER_MAX_LENGTH = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tiny_clip_tokenizer(dest: Path) -> Path:
    """A byte-level CLIP tokenizer: every byte is a token (with and without the end-of-word mark)."""
    dest.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (dest / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return dest


def build_tiny_instruct_pix2pix(dest: Path) -> Path:
    """Build, save and return a folder holding a tiny random ``StableDiffusionInstructPix2PixPipeline``.

    Deterministic: the weights come from ``torch.manual_seed(0)``. ``safety_checker`` is None (the
    real checker is a full CLIP vision model), so the folder's model_index.json records it as null.
    """
    import torch
    from diffusers import (
        AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    dest = Path(dest)
    tok_dir = write_tiny_clip_tokenizer(dest / "_tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=TOKENIZER_MAX_LENGTH,
                                              local_files_only=True)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=8,  # 4 noisy latent channels + 4 channels of the source image's latents
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 8, 8),  # 4 blocks: 3 downsamplings, latents are image/8
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=16,
    ))
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    )
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    out = dest / "tiny-instruct-pix2pix"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def write_tiny_t5_tokenizer():
    """A character-level T5 tokenizer (Unigram, as T5's own), built in memory: no sentencepiece file."""
    import string

    from transformers import T5Tokenizer

    chars = sorted(set(string.printable.strip()))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [(c, -2.0) for c in chars] + [("\u2581" + c, -2.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _tiny_latent_vae():
    """An AutoencoderKL with latents at image/8 (as FLUX's), 4 latent channels, no mid-block attention:
    a one-megapixel image encodes in about a second on one CPU thread."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=2, sample_size=64, use_quant_conv=False,
        use_post_quant_conv=False, mid_block_add_attention=False, shift_factor=0.0609, scaling_factor=1.5035,
    )


def build_tiny_flux_kontext(dest: Path) -> Path:
    """Build, save and return a folder holding a tiny random ``FluxKontextPipeline``.

    Components as in diffusers' own Kontext tests (a one-layer FluxTransformer2DModel, CLIP and T5
    text encoders from tiny configs), with two changes: the VAE keeps FLUX's image/8 latents, so the
    pipeline's sizes (preferred resolutions, multiples of 16) are the real ones; and both tokenizers
    are built here, offline.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    dest = Path(dest)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tiny_clip_tokenizer(dest / "_tokenizer_src")),
                                              model_max_length=TOKENIZER_MAX_LENGTH, local_files_only=True)
    tokenizer_2 = write_tiny_t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=TOKENIZER_MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, projection_dim=32,
    ))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    pipe = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_tiny_latent_vae(), text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
    )
    out = dest / "tiny-flux-kontext"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


QWEN_PROMPT_DIM = 16  # width of the stand-in prompt embeddings (the transformer's joint_attention_dim)


def build_tiny_qwen_image_edit(dest: Path, plus: bool = False) -> Path:
    """Build, save and return a folder holding a tiny random Qwen-Image-Edit pipeline (``plus``: the
    2509 pipeline) WITHOUT its Qwen2.5-VL text encoder, tokenizer and processor: the processor needs
    torchvision, which is not installed. Load it with ``qwen_edit_without_text_encoder``."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPipeline, QwenImageEditPlusPipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True], latents_mean=[0.0] * 4,
                                 latents_std=[1.0] * 4)  # 3 downsamplings: latents are image/8, as Qwen's
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=QWEN_PROMPT_DIM, axes_dims_rope=(4, 6, 6),
    )
    cls = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    pipe = cls(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
               processor=None, transformer=transformer)
    out = dest / ("tiny-qwen-image-edit-plus" if plus else "tiny-qwen-image-edit")
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def qwen_edit_without_text_encoder(base: type) -> type:
    """A subclass of a real Qwen edit pipeline class, under the same name, whose ``encode_prompt`` (the
    Qwen2.5-VL text encoder) is replaced: it records the ``image`` it is handed, which is exactly what the
    vision-language encoder would read, and returns fixed random embeddings. Everything else (sizes,
    resizing, latents, transformer, VAE) is the real pipeline."""
    import torch

    def encode_prompt(self, prompt, image=None, device=None, num_images_per_prompt=1, prompt_embeds=None,
                      prompt_embeds_mask=None, max_sequence_length=1024):
        type(self).vision_inputs.append(image)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n = len(prompts) * num_images_per_prompt
        generator = torch.Generator().manual_seed(sum(map(len, prompts)))
        embeds = torch.randn(n, 7, QWEN_PROMPT_DIM, generator=generator).to(self._execution_device)
        return embeds, torch.ones(n, 7, dtype=torch.long, device=self._execution_device)

    return type(base.__name__, (base,), {
        "encode_prompt": encode_prompt, "vision_inputs": [], "__module__": base.__module__,
        "_optional_components": [*base._optional_components, "text_encoder", "tokenizer", "processor"],
    })

"""Test helper (not a test module): a tiny random-weight InstructPix2Pix pipeline built from configs.

It is saved with ``save_pretrained(safe_serialization=True)`` and loaded back by the tests through
the same ``DiffusersEditor`` code path real weights take. Nothing here touches the network: the
CLIP tokenizer is written locally (a byte-level vocab and an empty merges file).

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

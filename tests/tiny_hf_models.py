"""Test helper (not a test module): tiny random-weight transformers checkpoints built from configs.

Each builder saves a model (safetensors) and its processor with ``save_pretrained`` into ``dest``
and returns ``dest``; the tests load them back through the same code path real weights take
(``from_pretrained(folder, local_files_only=True)``). Nothing here touches the network: the
ShieldGemma 2 tokenizer is a byte-level BPE built locally with ``tokenizers``.

Weights are deterministic (``torch.manual_seed``). Sizes are chosen for speed on two CPU cores:
each model has one layer, width 16, 32x32 images in 8x8 patches; building and loading one takes
well under a second once transformers is imported.
"""

from __future__ import annotations

from pathlib import Path

TINY_IMAGE = 32
_VISION = dict(image_size=TINY_IMAGE, patch_size=8, hidden_size=16, intermediate_size=32,
               num_hidden_layers=1, num_attention_heads=2)
_TEXT = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
             num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=1, eos_token_id=2)

# The tiny ShieldGemma 2 tokenizer's special tokens, in id order (Gemma's names).
SG2_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                      "<start_of_image>", "<end_of_image>", "<image_soft_token>")
SG2_ANSWER_TOKENS = ("Yes", "No")
SG2_IMAGE_TOKENS = 4  # mm_tokens_per_image: (32 / 8)^2 patches average-pooled 2x2 -> 4 tokens

# Same structure as ShieldGemma 2's template (image, then the policy definition wrapped in the
# instruction, then the model turn); the instruction here is our own short wording.
SG2_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- for item in message['content'] -%}"
    "{{ '<start_of_turn>user\\n' }}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}"
    "{{ 'Judge the image against this safety policy.\\n<BEGIN_SAFETY_POLICY>\\n' + item['text'] + "
    "'\\n</END_SAFETY_POLICY>\\nDoes the image violate the above policy? Answer Yes or No.<end_of_turn>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<start_of_turn>model\\n' }}"
    "{%- endfor -%}"
)


def build_tiny_clip(dest: Path, seed: int = 0) -> Path:
    """A tiny ``CLIPModel`` (projection_dim 8) and a PIL ``CLIPImageProcessor`` (resize + crop to 32)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    dest = Path(dest)
    config = CLIPConfig(text_config=dict(_TEXT), vision_config=dict(_VISION), projection_dim=8)
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(dest, safe_serialization=True)
    CLIPImageProcessorPil(size={"shortest_edge": TINY_IMAGE},
                          crop_size={"height": TINY_IMAGE, "width": TINY_IMAGE}).save_pretrained(dest)
    return dest


def build_tiny_siglip(dest: Path, seed: int = 0) -> Path:
    """A tiny ``SiglipModel`` (embedding dim 16) and a PIL ``SiglipImageProcessor`` (resize to 32x32)."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    dest = Path(dest)
    config = SiglipConfig(text_config=dict(_TEXT), vision_config=dict(_VISION))
    torch.manual_seed(seed)
    SiglipModel(config).eval().save_pretrained(dest, safe_serialization=True)
    SiglipImageProcessorPil(size={"height": TINY_IMAGE, "width": TINY_IMAGE}).save_pretrained(dest)
    return dest


def build_tiny_sg2_tokenizer():
    """A byte-level BPE tokenizer with Gemma's special tokens and 'Yes'/'No' as whole tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in SG2_SPECIAL_TOKENS + SG2_ANSWER_TOKENS:
        vocab[token] = len(vocab)
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SG2_SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, normalized=False) for t in SG2_ANSWER_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                              "eoi_token": "<end_of_image>"},
    )


def build_tiny_shieldgemma2(dest: Path, seed: int = 0) -> Path:
    """A tiny ``ShieldGemma2ForImageClassification`` (SigLIP vision + one Gemma 3 layer) and its processor.

    The text layer uses full attention (the default sliding window would hide the image tokens
    from the last position) and a larger init scale, so the answer depends on the image. The
    multimodal projection (initialised to zeros by transformers) is filled with random values for
    the same reason. ``yes_token_index``/``no_token_index`` point at the tokenizer's 'Yes'/'No'.
    """
    import torch
    from transformers import (
        Gemma3ImageProcessorPil, ShieldGemma2Config, ShieldGemma2ForImageClassification, ShieldGemma2Processor,
    )

    dest = Path(dest)
    tokenizer = build_tiny_sg2_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SG2_SPECIAL_TOKENS + SG2_ANSWER_TOKENS}
    config = ShieldGemma2Config(
        text_config=dict(
            model_type="gemma3_text", vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
            query_pre_attn_scalar=8, max_position_embeddings=512, sliding_window=64,
            layer_types=["full_attention"], initializer_range=0.5,
            pad_token_id=ids["<pad>"], eos_token_id=ids["<eos>"], bos_token_id=ids["<bos>"],
        ),
        vision_config=dict(model_type="siglip_vision_model", **_VISION),
        mm_tokens_per_image=SG2_IMAGE_TOKENS,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        yes_token_index=ids["Yes"],
        no_token_index=ids["No"],
    )
    torch.manual_seed(seed)
    model = ShieldGemma2ForImageClassification(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("mm_input_projection_weight"):
                param.normal_(0.0, 0.5)
    model.save_pretrained(dest, safe_serialization=True)
    processor = ShieldGemma2Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": TINY_IMAGE, "width": TINY_IMAGE}),
        tokenizer=tokenizer,
        chat_template=SG2_CHAT_TEMPLATE,
        image_seq_length=SG2_IMAGE_TOKENS,
        policy_definitions={"dangerous": "No Dangerous Content: a tiny test policy."},
    )
    processor.save_pretrained(dest)
    return dest

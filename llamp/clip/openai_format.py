"""Conversion between OpenAI CLIP checkpoints and Hugging Face ``CLIPModel``.

OpenAI's files (``ViT-B-16.pt`` as cached by ``clip.load``) store one
``in_proj`` matrix per attention layer and projections as ``[in, out]``
matrices; Hugging Face splits q/k/v and stores ``nn.Linear`` weights
``[out, in]``. The architecture hyper-parameters are not stored at all: they
follow from tensor shapes, with OpenAI's convention of 64-wide heads.
"""
from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel

from .tokenizer import CONTEXT_LENGTH

HEAD_WIDTH = 64  # OpenAI CLIP: heads = width // 64, on both towers
BOS_ID, EOS_ID = 49406, 49407

# (OpenAI name inside a residual block, Hugging Face name inside an encoder layer)
_BLOCK_PARAMS = [
    ("attn.out_proj.weight", "self_attn.out_proj.weight"),
    ("attn.out_proj.bias", "self_attn.out_proj.bias"),
    ("ln_1.weight", "layer_norm1.weight"),
    ("ln_1.bias", "layer_norm1.bias"),
    ("ln_2.weight", "layer_norm2.weight"),
    ("ln_2.bias", "layer_norm2.bias"),
    ("mlp.c_fc.weight", "mlp.fc1.weight"),
    ("mlp.c_fc.bias", "mlp.fc1.bias"),
    ("mlp.c_proj.weight", "mlp.fc2.weight"),
    ("mlp.c_proj.bias", "mlp.fc2.bias"),
]
# Tensors outside the blocks: (OpenAI, Hugging Face, transposed?)
_TOP_PARAMS = [
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight", False),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight", False),
    ("ln_final.weight", "text_model.final_layer_norm.weight", False),
    ("ln_final.bias", "text_model.final_layer_norm.bias", False),
    ("text_projection", "text_projection.weight", True),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding", False),
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight", False),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight", False),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight", False),
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias", False),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight", False),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias", False),
    ("visual.proj", "visual_projection.weight", True),
    ("logit_scale", "logit_scale", False),
]
# (OpenAI block prefix, Hugging Face layer prefix)
_TOWERS = [("transformer.resblocks", "text_model.encoder.layers"),
           ("visual.transformer.resblocks", "vision_model.encoder.layers")]


def _num_blocks(state_dict: dict, prefix: str) -> int:
    return len({k[len(prefix) + 1:].split(".")[0] for k in state_dict if k.startswith(prefix + ".")})


def config_from_openai(state_dict: dict[str, torch.Tensor]) -> CLIPConfig:
    """Derive the architecture of an OpenAI ViT CLIP checkpoint from its tensor shapes."""
    if "visual.proj" not in state_dict:
        raise ValueError("only ViT CLIP checkpoints can be converted (this looks like a ResNet CLIP)")
    text_width = state_dict["ln_final.weight"].shape[0]
    vision_width = state_dict["visual.conv1.weight"].shape[0]
    patch = state_dict["visual.conv1.weight"].shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    projection_dim = state_dict["text_projection"].shape[1]
    text_config = dict(
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        hidden_size=text_width,
        intermediate_size=4 * text_width,
        num_hidden_layers=_num_blocks(state_dict, "transformer.resblocks"),
        num_attention_heads=max(1, text_width // HEAD_WIDTH),
        max_position_embeddings=state_dict["positional_embedding"].shape[0],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=projection_dim,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    vision_config = dict(
        hidden_size=vision_width,
        intermediate_size=4 * vision_width,
        num_hidden_layers=_num_blocks(state_dict, "visual.transformer.resblocks"),
        num_attention_heads=max(1, vision_width // HEAD_WIDTH),
        image_size=patch * grid,
        patch_size=patch,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=projection_dim,
    )
    return CLIPConfig(text_config=text_config, vision_config=vision_config,
                      projection_dim=projection_dim)


def openai_to_hf(state_dict: dict[str, torch.Tensor]) -> CLIPModel:
    """Build a Hugging Face ``CLIPModel`` (fp32, eval mode) holding an OpenAI checkpoint's weights."""
    sd = {k: v.float() for k, v in state_dict.items()
          if k not in ("input_resolution", "context_length", "vocab_size")}
    model = CLIPModel(config_from_openai(sd))
    hf: dict[str, torch.Tensor] = {}
    for src, dst, transpose in _TOP_PARAMS:
        hf[dst] = sd[src].t().contiguous() if transpose else sd[src]
    for src_prefix, dst_prefix in _TOWERS:
        for i in range(_num_blocks(sd, src_prefix)):
            src, dst = f"{src_prefix}.{i}", f"{dst_prefix}.{i}"
            for name, weight_or_bias in (("in_proj_weight", "weight"), ("in_proj_bias", "bias")):
                q, k, v = sd[f"{src}.attn.{name}"].chunk(3, dim=0)
                hf[f"{dst}.self_attn.q_proj.{weight_or_bias}"] = q
                hf[f"{dst}.self_attn.k_proj.{weight_or_bias}"] = k
                hf[f"{dst}.self_attn.v_proj.{weight_or_bias}"] = v
            for src_name, dst_name in _BLOCK_PARAMS:
                hf[f"{dst}.{dst_name}"] = sd[f"{src}.{src_name}"]
    missing, unexpected = model.load_state_dict(hf, strict=False)
    # position_ids are buffers the model creates itself
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"OpenAI->HF conversion left missing={missing} unexpected={unexpected}")
    return model.eval()


def hf_to_openai(model: CLIPModel) -> dict[str, torch.Tensor]:
    """The OpenAI-format state dict of a Hugging Face ``CLIPModel`` (inverse of ``openai_to_hf``)."""
    hf = model.state_dict()
    sd: dict[str, torch.Tensor] = {}
    for dst, src, transpose in _TOP_PARAMS:
        sd[dst] = hf[src].t().contiguous() if transpose else hf[src].clone()
    for dst_prefix, src_prefix in _TOWERS:
        n = len({k.split(".")[3] for k in hf if k.startswith(src_prefix + ".")})
        for i in range(n):
            src, dst = f"{src_prefix}.{i}", f"{dst_prefix}.{i}"
            for name, weight_or_bias in (("in_proj_weight", "weight"), ("in_proj_bias", "bias")):
                sd[f"{dst}.attn.{name}"] = torch.cat(
                    [hf[f"{src}.self_attn.{p}_proj.{weight_or_bias}"] for p in "qkv"], dim=0)
            for dst_name, src_name in _BLOCK_PARAMS:
                sd[f"{dst}.{dst_name}"] = hf[f"{src}.{src_name}"].clone()
    if sd["positional_embedding"].shape[0] != CONTEXT_LENGTH:
        raise ValueError("OpenAI CLIP format needs a 77-token text context")
    return sd

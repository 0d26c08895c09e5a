"""The real-width setup the CPU benchmarks share: random-weight CLIP ViT-B/16, one LLaMA-2-7B-shaped decoder
layer, texture class names, and a knowledge cache written by the build's own writer.

The LLM folder holds only the last decoder layer and the final norm (all the
prompt decoder reads), so everything fits in a few GB of RAM. The cache is
written in the dtype asked (fp32, the build's default, or bf16, what
``python -m llm_prompts build --dtype bfloat16`` writes) from the same random
draws, so a bf16 cache holds the fp32 cache's values rounded.
"""
from __future__ import annotations

import os

import torch

# DTD's first 24 classes (its base half), as class names go into prompts.
DTD_BASE = ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked",
            "crosshatched", "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid",
            "grooved", "honeycombed", "interlaced", "knitted", "lacelike", "lined", "marbled"]
# DTD's 47 texture names (base half first), then one more texture word: every class count reads alike.
CLASSNAMES = DTD_BASE + [
    "matted", "meshed", "paisley", "perforated", "pitted", "pleated", "polka-dotted", "porous", "potholed", "scaly",
    "smeared", "spiralled", "sprinkled", "stained", "stratified", "striped", "studded", "swirly", "veined",
    "waffled", "woven", "wrinkled", "zigzagged", "corrugated"]
DATASET = "DescribableTextures"  # the zero-shot prompts of DTD, whose class names these are
THREADS, BATCH, NUM_TEMPLATES, CACHE_LENGTH = 2, 4, 11, 96


def class_names(n: int) -> list[str]:
    """``n`` distinct class names: the 48 texture names first, then two of them as one name ("banded blotchy",
    ..., every ordered pair of two different names, nearest neighbours first): 2,304 names in all.

    Past 48 classes the names are two words, 2 to 6 CLIP tokens (mean 4), as multi-word names such as
    ImageNet's ("great white shark", "loggerhead sea turtle") are, rather than numbered names whose
    tokens would all be digits.
    """
    k = len(CLASSNAMES)
    pairs = [f"{CLASSNAMES[i]} {CLASSNAMES[(i + shift) % k]}" for shift in range(1, k) for i in range(k)]
    names = CLASSNAMES + pairs
    if not 1 <= n <= len(names):
        raise ValueError(f"class count must lie in 1..{len(names)}, got {n}")
    return names[:n]


def real_width_clip():
    """CLIP ViT-B/16's shapes (text 512 x 12 layers, vision 768 x 12, patch 16, 224 px) with random weights."""
    from transformers import CLIPConfig, CLIPModel

    from llamp.clip.loading import LoadedCLIP
    from llamp.clip.tokenizer import build_clip_tokenizer

    config = CLIPConfig(text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                                         num_hidden_layers=12, hidden_act="quick_gelu", eos_token_id=49407),
                        vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                           num_hidden_layers=12, image_size=224, patch_size=16,
                                           hidden_act="quick_gelu"),
                        projection_dim=512)
    return LoadedCLIP(CLIPModel(config).eval(), build_clip_tokenizer(), "random ViT-B/16")


def write_real_width_llm(folder: str) -> None:
    """LLaMA-2-7B's config with random weights for layer 31 and the final norm only."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm

    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
    config.save_pretrained(folder)
    layer, norm = LlamaDecoderLayer(config, layer_idx=31), LlamaRMSNorm(4096)
    tensors = {f"model.layers.31.{k}": v.to(torch.bfloat16) for k, v in layer.state_dict().items()}
    tensors["model.norm.weight"] = norm.weight.detach().to(torch.bfloat16)
    save_file(tensors, os.path.join(folder, "model.safetensors"))


def write_models(folder: str) -> dict[str, str]:
    """The CLIP folder and the one-layer LLM checkpoint under ``folder``; their paths by name."""
    paths = {name: os.path.join(folder, name) for name in ("clip", "llm")}
    torch.manual_seed(0)
    real_width_clip().model.save_pretrained(paths["clip"])
    os.makedirs(paths["llm"])
    write_real_width_llm(paths["llm"])
    return paths


def write_assets(folder: str, classnames: list[str]) -> dict[str, str]:
    """CLIP folder, one-layer LLM checkpoint and knowledge cache (fp32, every template) under ``folder``."""
    from llamp.clip.loading import load_clip

    paths = write_models(folder)
    paths["cache"] = os.path.join(folder, "cache")
    write_cache(paths["cache"], classnames, paths["llm"], load_clip("ViT-B/16", paths["clip"]))
    return paths


def write_cache(folder: str, classnames: list[str], llm: str, clip, num_templates: int = NUM_TEMPLATES,
                dtype: torch.dtype | str = torch.float32) -> None:
    """Random keys/values, masks and targets, written by the build's own writer with what it records:
    ``num_templates`` query templates, the keys and values stored in ``dtype`` (float32 or bfloat16)."""
    from llamp.knowledge_cache.files import KV_DTYPES, dtype_name
    from llamp.knowledge_cache.writer import CacheWriter
    from llamp.llm.identity import llm_identity
    from llamp.llm.weights import llm_layer_sha256

    dtype = KV_DTYPES[dtype] if isinstance(dtype, str) else dtype
    kept = [llm_identity(llm)["num_hidden_layers"] - 1]
    identity = llm_identity(llm, llm_layer_sha256(llm, kept))
    writer = CacheWriter(folder, {
        "dataset": DATASET, "classnames": classnames, "llm": identity, "kept_layers": kept, "dtype": dtype_name(dtype),
        "query_templates": [f"random template {t}: {{}}" for t in range(num_templates)], "layout": "contiguous"})
    n, gen = len(classnames), torch.Generator().manual_seed(0)
    shape = (n, identity["num_key_value_heads"], CACHE_LENGTH, identity["head_dim"])
    for t in range(num_templates):
        lengths = torch.randint(CACHE_LENGTH // 2, CACHE_LENGTH + 1, (n,), generator=gen)
        lengths[0] = CACHE_LENGTH  # the longest row fills the template's padded length
        mask = (torch.arange(CACHE_LENGTH) >= CACHE_LENGTH - lengths[:, None]).long()  # left padding
        # drawn in fp32 whatever the dtype (the same values in every dtype), each cast before the next is drawn
        kv = {kept[0]: tuple(torch.randn(shape, generator=gen).to(dtype) for _ in range(2))}
        writer.write_template(t, kv, mask, input_sha256=f"random-{t}")
        del kv
    writer.write_targets(torch.randn(n, clip.model.config.projection_dim, generator=gen), "random-targets",
                         clip={"source": clip.source, "text_sha256": clip.text_sha256()})
    writer.finish()


def cache_bytes(folder: str, class_counts: list[int]) -> dict:
    """Bytes per class of the cache on disk (all its templates, and per template, in its stored dtype) and on
    the device for one step (one template) in fp32 and bf16."""
    from llamp.knowledge_cache.reader import KnowledgeCache
    from llamp.knowledge_cache.staging import KVStager

    cache = KnowledgeCache.open(folder)
    on_disk = cache.bytes_on_disk() / cache.num_classes
    out = {"dtype": str(cache.dtype).removeprefix("torch."), "templates": cache.num_templates,
           "disk_bytes_per_class": on_disk, "disk_bytes_per_class_template": on_disk / cache.num_templates,
           "device_bytes_per_class": {}}
    for dtype in (torch.float32, torch.bfloat16):  # fp32: the CPU trainer; bf16: PREC bf16 on CUDA
        per_class = []
        for n in class_counts:
            kv = KVStager(cache, cache.select(class_names(n)), torch.device("cpu"), dtype).get(0)
            per_class.append(kv_bytes(kv) / n)
            del kv
        out["device_bytes_per_class"][str(dtype).removeprefix("torch.")] = max(per_class)
    return out


def kv_bytes(kv) -> int:
    """Bytes of one template's staged rows (keys, values and mask), as they sit on the device."""
    return sum(t.numel() * t.element_size() for t in (*kv.keys, *kv.values, kv.mask))

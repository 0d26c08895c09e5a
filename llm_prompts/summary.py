"""A readable summary of a cache folder (``python -m llm_prompts inspect DIR``)."""
from __future__ import annotations

import os

from llamp.knowledge_cache.files import DESCRIPTIONS_FILE, METADATA_FILE
from llamp.knowledge_cache.reader import KnowledgeCache

from .descriptions import read_descriptions
from .layouts import LAYOUTS
from .targets import POOLED


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def summarize(folder: str, num_descriptions: int = 3, verify: bool = False) -> str:
    cache = KnowledgeCache.open(folder, allow_incomplete=True)
    if verify:
        cache.verify()
    meta, llm = cache.metadata, cache.llm
    lines = [f"knowledge cache {cache.folder} ({'complete' if cache.complete else 'INCOMPLETE build'})"]
    shown = ", ".join(cache.classnames[:8]) + (", ..." if cache.num_classes > 8 else "")
    lines.append(f"dataset   {cache.dataset}: {cache.num_classes} classes: {shown}")
    lines.append(f"LLM       {llm.get('source')} ({llm.get('model_type')}): hidden {llm['hidden_size']}, "
                 f"{llm['num_hidden_layers']} layers (kept {cache.kept_layers}), {llm['num_attention_heads']} heads, "
                 f"{llm['num_key_value_heads']} kv heads x {llm['head_dim']}, rope theta "
                 f"{(llm.get('rope') or {}).get('rope_theta')}; config sha256 {str(llm.get('config_sha256'))[:12]}...")
    layout = LAYOUTS.get(cache.layout)
    lines.append(f"layout    {cache.layout}" + (f": {layout.summary}" if layout else "")
                 + ("" if meta.get("layout") else " (not recorded: built before layouts were)"))
    lines.append(f"dtype     {meta['dtype']} (the LLM ran in it; keys/values stored in it); "
                 f"noun phrases: {meta.get('noun_phrases')}")
    source = meta.get("query_template_file")
    if source:
        origin = "built-in" if source.get("builtin") else "--query-templates"
        lines.append(f"wording   {source.get('file')} ({origin}, sha256 {str(source.get('sha256'))[:12]}...)")
    else:
        lines.append("wording   (source not recorded)")
    prompt = meta.get("prompt") or {}
    if prompt:
        lines.append(f"          system {prompt.get('system')!r}; user {prompt.get('user_prefix')!r} + template; "
                     f"answer opens {prompt.get('answer_start')!r}")

    lines.append(f"templates {cache.num_templates} ({len(cache.available_templates)} built):")
    for index, template in enumerate(cache.query_templates):
        entry = cache.template_info(index)
        if entry is None:
            lines.append(f"  t{index:02d}  (not built)  {template}")
            continue
        lengths = cache.lengths(index)
        lines.append(f"  t{index:02d}  K,V {cache.kv_shape(index)} x {len(cache.kept_layers)} layer(s), tokens "
                     f"{int(lengths.min())}-{int(lengths.max())}, {human_bytes(entry['bytes'])}  {template}")
    targets = meta.get("targets")
    if targets:
        source = (targets.get("clip_template_source") or {}).get("source", "built-in")
        # caches built before recipes were recorded made the pooled targets
        recipe = targets.get("recipe") or f"{POOLED} (not recorded: built before recipes were)"
        lines.append(f"targets   [{cache.num_classes}, {targets['embed_dim']}] from CLIP "
                     f"{(targets.get('clip') or {}).get('source')}; {len(targets.get('clip_templates', []))} "
                     f"CLIP template(s) ({'our wording' if source == 'built-in' else source}); recipe {recipe}")
    else:
        lines.append("targets   (not built)")

    sizes = {}
    with os.scandir(cache.folder) as entries:
        for e in entries:
            if e.is_file():
                kind = ("keys/values" if e.name.startswith("kv_t") else
                        "descriptions" if e.name == DESCRIPTIONS_FILE else
                        "metadata" if e.name == METADATA_FILE else "targets" if e.name.startswith("targets") else
                        "other")
                sizes[kind] = sizes.get(kind, 0) + e.stat().st_size
    parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in sorted(sizes.items()))
    lines.append(f"on disk   {human_bytes(sum(sizes.values()))} ({sum(sizes.values())} bytes: {parts})")

    records = list(read_descriptions(os.path.join(cache.folder, DESCRIPTIONS_FILE)).values())
    lines.append(f"descriptions ({len(records)} in {DESCRIPTIONS_FILE}):")
    for record in records[:num_descriptions]:
        lines.append(f"  [{record.get('class')} / t{int(record.get('template_index', 0)):02d}] "
                     f"{record.get('answer_start')} {record.get('answer')}")
        lines.append(f"      noun phrases: {'; '.join(record.get('noun_phrases') or [])}")
    return "\n".join(lines)

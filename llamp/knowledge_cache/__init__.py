"""The LLaMP knowledge cache on disk: what each class's LLM run left behind, stored as data.

One folder per (dataset, LLM), built by ``python -m llm_prompts build``::

    metadata.json          everything that is not a tensor (written last, after every file)
    descriptions.jsonl     the LLM's answers and their noun phrases, one JSON object a line
                           (read and written by ``llm_prompts.descriptions``; not needed for training)
    kv_t00.safetensors     query template 0: for every kept decoder layer L
                             layers.L.keys / layers.L.values  [classes, kv_heads, seq, head_dim]
                             attention_mask                   [classes, seq] (int8, 1 = token)
    kv_t01.safetensors     ... one file per query template
    targets.safetensors    targets [classes, embed]: normalised CLIP distillation targets (fp32)

Three modules, one idea each:

* ``files``: the format's names (files, tensor keys, dtypes), ``metadata.json``
  and where a cache goes by default;
* ``writer``: :class:`~llamp.knowledge_cache.writer.CacheWriter`, file by file, resumable;
* ``reader``: :class:`~llamp.knowledge_cache.reader.KnowledgeCache`, validating on
  open, reading only the rows asked for.

The LLM's identity recorded in ``metadata["llm"]`` is ``llamp.llm.identity``'s.
"""

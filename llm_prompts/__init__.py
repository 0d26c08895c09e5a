"""Building LLaMP's knowledge caches: what a chat LLM knows about each class, precomputed.

For every class and query template the LLM describes the class; the noun
phrases of the answer are kept, the LLM's attention keys/values over
prompt + answer opening + noun phrases (by default laid out as the authors'
release lays them out) are cached for its last decoder layers, and CLIP
features of the phrases give one distillation target per class. The result
is a folder in the format of ``llamp.knowledge_cache``, which the trainer
reads.

Modules: ``queries`` (query templates and chat prompt), ``layouts`` (the
token sequences: prompt and cached sequence), ``generation``,
``noun_phrases``, ``descriptions`` (descriptions.jsonl), ``kv`` (key/value
extraction), ``targets`` (distillation targets), ``build`` (the resumable
pipeline), ``dataset`` (class names through Dassl), ``summary`` (inspect);
the command line is ``python -m llm_prompts build|inspect``.
"""

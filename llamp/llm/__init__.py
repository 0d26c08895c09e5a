"""The LLM from local files: ``identity`` (which LLM: folder, config, the identity a cache records),
``weights`` (chosen tensors from its safetensors shards, layer digests), ``tail`` (its last decoder
layers, final norm and rotary embedding, and which families the prompt decoder can drive)."""

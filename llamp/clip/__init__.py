"""CLIP from local files: ``loading`` (the one backbone every trainer uses), ``tokenizer`` (offline, from
openai-clip's BPE file), ``openai_format`` (OpenAI checkpoints to and from Hugging Face's format)."""

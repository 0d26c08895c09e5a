"""Tiny models in Hugging Face format, for tests and the demo.

    python -m llamp.tiny --out DIR [--random-weights]

writes ``DIR/clip`` (a CLIP with the real 49408-token vocabulary and tokenizer
files, 64-wide towers) and ``DIR/llm`` (a Llama chat model, hidden 64, with a
small byte-level BPE tokenizer that has a chat template and, like LLaMA-2's,
adds a BOS token when tokenising). Everything downstream loads them through
the same code as the real models.

The CLIP is pre-trained for a minute or two on captioned Synthetic-style
drawings (llamp/tiny_clip_pretraining.py), so that zero-shot accuracy on
Synthetic is well above chance and prompt learning has something to improve;
``--random-weights`` keeps the random-weight CLIP. The LLM's weights are random.
Everything is seeded: two runs on one machine write identical tensors.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import torch
from transformers import CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .clip_tokenizer import CONTEXT_LENGTH, build_clip_tokenizer
from .quiet import quiet_logs
from .tiny_clip_pretraining import pretrain_clip

# Widths differ on purpose (text 64, vision 96, joint 48) so that a width mix-up fails loudly.
# Heads follow OpenAI's 64-wide convention so the model round-trips through the .pt format.
TINY_CLIP = dict(
    text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=1, max_position_embeddings=CONTEXT_LENGTH,
                     hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=49406,
                     eos_token_id=49407, pad_token_id=49407),
    vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=2,
                       num_attention_heads=1, image_size=224, patch_size=32,
                       hidden_act="quick_gelu", layer_norm_eps=1e-5),
    projection_dim=48,
)
TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False)
LLM_SPECIAL_TOKENS = {"bos": "<s>", "eos": "</s>", "unk": "<unk>"}
LLM_VOCAB_SIZE = 1024

# A Llama-2-style chat template: system prompt folded into the first user turn.
CHAT_TEMPLATE = (
    "{% set sys = '' %}"
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ bos_token }}[INST] "
    "{% if loop.first and sys %}<<SYS>>\n{{ sys }}\n<</SYS>>\n\n{% endif %}"
    "{{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}"
    "{% endfor %}"
)


def _training_corpus() -> list[str]:
    """Plain English for the tiny LLM's BPE merges (content hardly matters)."""
    words = ("a the of and with in on is are as appears photo type pet flower food aircraft car "
             "texture scene action satellite image object describe distinctive appearance sentence "
             "red green blue yellow circle square triangle star shape colour color small large "
             "round sharp edges corners bright dark background white black helpful assistant you "
             "one long short tail wings wheels body fur leaves petals stripes spots pattern").split()
    return [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4


def build_llm_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Llama-style special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=LLM_SPECIAL_TOKENS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=LLM_VOCAB_SIZE, show_progress=False,
        special_tokens=[LLM_SPECIAL_TOKENS["unk"], LLM_SPECIAL_TOKENS["bos"], LLM_SPECIAL_TOKENS["eos"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    # Like LLaMA-2's tokenizer, a BOS is added on tokenisation (add_special_tokens=True), so a
    # rendered chat text, which already starts with the BOS text, tokenises to two BOS tokens.
    bos_id = tok.token_to_id(LLM_SPECIAL_TOKENS["bos"])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{LLM_SPECIAL_TOKENS['bos']} $A",
                                      pair=f"{LLM_SPECIAL_TOKENS['bos']} $A {LLM_SPECIAL_TOKENS['bos']} $B:1",
                                      special_tokens=[(LLM_SPECIAL_TOKENS["bos"], bos_id)]),
    ])
    # No pad token, like LLaMA-2: code that batches must pick one itself.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=LLM_SPECIAL_TOKENS["bos"], eos_token=LLM_SPECIAL_TOKENS["eos"],
        unk_token=LLM_SPECIAL_TOKENS["unk"], chat_template=CHAT_TEMPLATE, model_max_length=1024)


PRETRAINING_RECORD = "pretraining.json"  # in a pre-trained tiny CLIP's folder: the recipe and its losses


def write_tiny_clip(folder: str, seed: int = 0, pretrained: bool = True, log_every: int = 0) -> None:
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**TINY_CLIP))
    tokenizer = build_clip_tokenizer()
    if pretrained:
        record = pretrain_clip(model, tokenizer, log_every=log_every)
        with open(os.path.join(folder, PRETRAINING_RECORD), "w") as f:
            json.dump(record, f, indent=1)
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def is_pretrained(clip_folder: str) -> bool:
    return os.path.isfile(os.path.join(clip_folder, PRETRAINING_RECORD))


def write_tiny_llm(folder: str, seed: int = 0, max_shard_size: str = "100KB") -> None:
    tokenizer = build_llm_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **TINY_LLAMA)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    # Small shards, so loaders that read single layers meet a sharded checkpoint.
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(folder)


def write_tiny_models(out: str, force: bool = False, pretrained: bool = True,
                      log_every: int = 0) -> dict[str, str]:
    """Write ``out/clip`` and ``out/llm`` (each atomically); keep existing ones unless ``force``.

    An existing CLIP of the other kind (random weights where ``pretrained`` is asked, or the reverse)
    is replaced.
    """
    paths = {"clip": os.path.join(out, "clip"), "llm": os.path.join(out, "llm")}
    writers = {"clip": lambda folder: write_tiny_clip(folder, pretrained=pretrained, log_every=log_every),
               "llm": write_tiny_llm}
    os.makedirs(out, exist_ok=True)
    for name, path in paths.items():
        other_kind = name == "clip" and os.path.isdir(path) and is_pretrained(path) != pretrained
        if os.path.isdir(path) and not force and not other_kind:
            continue
        tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=out)
        try:
            writers[name](tmp)
            if os.path.isdir(path):
                shutil.rmtree(path)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write clip/ and llm/ into")
    parser.add_argument("--force", action="store_true", help="overwrite existing models")
    parser.add_argument("--random-weights", action="store_true",
                        help="keep the CLIP's random weights (skip its pre-training)")
    parser.add_argument("--log-every", type=int, default=0, help="print the pre-training loss every N steps")
    args = parser.parse_args(argv)
    quiet_logs()
    paths = write_tiny_models(args.out, force=args.force, pretrained=not args.random_weights,
                              log_every=args.log_every)
    print(json.dumps(paths))


if __name__ == "__main__":
    main()

"""Tiny random chat LLMs of several families, for tests and the demo: the same code paths as the real models.

    python -m llamp.tiny.llms --out DIR [--family llama2 llama3 mistral qwen2 gemma gemma2]

writes ``DIR/<family>``: a 2-layer, 64-wide model of that family saved as
sharded safetensors, with a byte-level BPE tokenizer whose special tokens,
BOS behaviour and chat template resemble the family's.

* ``llama2``  the demo's and most tests' LLM (``python -m llamp.tiny`` writes it as
  ``llm``): LLaMA-2's ``[INST]``/``<<SYS>>`` markup, BOS added on tokenisation (so a
  rendered chat starts with two), no pad token; what each other one brings beyond it:
* ``llama3``  grouped-query attention (4 query heads share 1 key/value head),
  ``llama3`` rope scaling, header/``<|eot_id|>`` chat markup, BOS added on tokenisation;
* ``mistral`` sliding-window attention in every layer, ``[INST]`` markup whose
  template rejects a system turn;
* ``qwen2``   biases on the q/k/v projections (random, not zero), ChatML markup, no BOS;
* ``gemma``   embeddings scaled by sqrt(hidden) in the embedding step, RMSNorm
  weights applied as (1 + w), a head width (32) that is not hidden / heads;
* ``gemma2``  all of Gemma's, plus layers alternating sliding-window and full
  attention, soft-capped attention logits (no sdpa: eager attention), a
  query scale of its own and extra norms after attention and MLP.

Norm weights and biases are perturbed from their initial values (ones or
zeros), so a loader that dropped or misplaced them would be caught. Weights
are random but deterministic for a given seed.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..atomic_files import write_folder_atomic
from ..quiet import quiet_logs

HIDDEN = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=1024, tie_word_embeddings=False)
VOCAB_SIZE = 1024
# Longer than any cached sequence of a build (each part is cut at 128 tokens): the window never cuts a
# cached sequence, but the decoder still builds its sliding masks. A short one is set in the tests.
SLIDING_WINDOW = 512

LLAMA2_CHAT = (  # the system prompt folded into the first user turn
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
LLAMA3_CHAT = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim }}"
    "{% if not (loop.last and m['role'] == 'assistant') %}{{ '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_CHAT = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('Only user and assistant roles are supported') }}{% endif %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
)
QWEN2_CHAT = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA_CHAT = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + m['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyFamily:
    """How to build one family's tiny model and tokenizer."""

    name: str
    model_type: str  # config.model_type, as llamp.llm.tail.TESTED_FAMILIES names it
    config: dict
    bos: str | None  # None: the tokenizer has no BOS (Qwen)
    eos: str
    chat_template: str
    add_bos: bool  # a BOS is added on tokenisation (LLaMA, Mistral, Gemma), so a rendered chat has two
    end_of_turn: str | None = None  # a second stop token for generation
    unk: str | None = None
    pad: str | None = None
    extra_tokens: tuple[str, ...] = ()
    chat_markers: tuple[str, ...] = field(default=())  # what a rendered conversation holds
    words: tuple[str, ...] = ()  # the BPE training text's words (default: FAMILY_WORDS)
    # norm weights and biases moved off their init values (ones, zeros), so a loader that dropped them fails
    perturb_norms: bool = True


# Plain English for the BPE merges (content hardly matters). The demo's LLM learned its merges from the first
# list, the others from the second; both are kept so that every tiny model stays what it was.
DEMO_WORDS = tuple(
    "a the of and with in on is are as appears photo type pet flower food aircraft car texture scene action "
    "satellite image object describe distinctive appearance sentence red green blue yellow circle square "
    "triangle star shape colour color small large round sharp edges corners bright dark background white "
    "black helpful assistant you one long short tail wings wheels body fur leaves petals stripes spots "
    "pattern".split())
FAMILY_WORDS = tuple(
    "a the of and with in on is are as appears photo type describe distinctive appearance sentence red green "
    "blue yellow circle square triangle star shape colour small large round sharp edges corners bright dark "
    "background white black helpful assistant you system user model one".split())

DEMO_FAMILY = "llama2"
FAMILIES: dict[str, TinyFamily] = {
    "llama2": TinyFamily(
        "llama2", "llama", dict(HIDDEN, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0),
        bos="<s>", eos="</s>", unk="<unk>", chat_template=LLAMA2_CHAT, add_bos=True,
        chat_markers=("[INST]", "<<SYS>>"), words=DEMO_WORDS, perturb_norms=False),
    "llama3": TinyFamily(
        "llama3", "llama",
        dict(HIDDEN, num_key_value_heads=1, rope_theta=500000.0, rms_norm_eps=1e-5,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 64}),
        bos="<|begin_of_text|>", eos="<|eot_id|>", end_of_turn="<|end_of_text|>", chat_template=LLAMA3_CHAT,
        add_bos=True, extra_tokens=("<|start_header_id|>", "<|end_header_id|>"),
        chat_markers=("<|start_header_id|>system<|end_header_id|>", "<|start_header_id|>assistant<|end_header_id|>")),
    "mistral": TinyFamily(
        "mistral", "mistral", dict(HIDDEN, num_key_value_heads=2, sliding_window=SLIDING_WINDOW, rms_norm_eps=1e-5),
        bos="<s>", eos="</s>", unk="<unk>", chat_template=MISTRAL_CHAT, add_bos=True,
        chat_markers=("[INST]", "[/INST]")),
    "qwen2": TinyFamily(
        "qwen2", "qwen2", dict(HIDDEN, num_key_value_heads=2, rms_norm_eps=1e-6),
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", end_of_turn="<|endoftext|>", chat_template=QWEN2_CHAT,
        add_bos=False, extra_tokens=("<|im_start|>",), chat_markers=("<|im_start|>system", "<|im_start|>assistant")),
    "gemma": TinyFamily(
        "gemma", "gemma", dict(HIDDEN, num_key_value_heads=1, head_dim=32, rms_norm_eps=1e-6),
        bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>", end_of_turn="<end_of_turn>", chat_template=GEMMA_CHAT,
        add_bos=True, extra_tokens=("<start_of_turn>",), chat_markers=("<start_of_turn>user", "<start_of_turn>model")),
    "gemma2": TinyFamily(
        "gemma2", "gemma2",
        dict(HIDDEN, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=24, sliding_window=SLIDING_WINDOW,
             rms_norm_eps=1e-6),
        bos="<bos>", eos="<eos>", unk="<unk>", pad="<pad>", end_of_turn="<end_of_turn>", chat_template=GEMMA_CHAT,
        add_bos=True, extra_tokens=("<start_of_turn>",), chat_markers=("<start_of_turn>user", "<start_of_turn>model")),
}


def _corpus(words: tuple[str, ...]) -> list[str]:
    """Every rotation of the word list, four times over."""
    words = list(words)
    return [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4


def build_tokenizer(family: TinyFamily) -> Any:
    """A byte-level BPE tokenizer with the family's special tokens, BOS behaviour and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (family.unk, family.bos, family.eos, family.pad, family.end_of_turn) if t]
    specials += [t for t in family.extra_tokens if t not in specials]
    tok = Tokenizer(models.BPE(unk_token=family.unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(family.words or FAMILY_WORDS), trainer=trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, show_progress=False, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    steps = [processors.ByteLevel(trim_offsets=False)]
    if family.add_bos:
        steps.append(processors.TemplateProcessing(single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B:1",
                                                   special_tokens=[(family.bos, tok.token_to_id(family.bos))]))
    tok.post_processor = processors.Sequence(steps)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos, unk_token=family.unk,
        pad_token=family.pad, additional_special_tokens=[t for t in specials if t not in
                                                         (family.bos, family.eos, family.unk, family.pad)],
        chat_template=family.chat_template, model_max_length=1024)


def build_model(family: TinyFamily, tokenizer: Any, seed: int = 0, **overrides: Any) -> Any:
    """The family's causal LM with random weights, norms and biases perturbed, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           (("bos_token_id", family.bos), ("eos_token_id", family.eos), ("pad_token_id", family.pad)) if token}
    config = AutoConfig.for_model(family.model_type, vocab_size=len(tokenizer), **ids, **{**family.config, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if family.perturb_norms and ("norm" in name or name.endswith(".bias")):  # ones or zeros at init
                p.add_(torch.randn_like(p) * 0.1)
    stops = [tokenizer.convert_tokens_to_ids(t) for t in (family.eos, family.end_of_turn) if t]
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    model.generation_config.pad_token_id = ids.get("pad_token_id", stops[0])
    return model


def write_tiny_llm(family_name: str, folder: str, seed: int = 0, max_shard_size: str = "100KB",
                   **overrides: Any) -> str:
    """Write the family's tiny model (small shards: loaders that read single layers meet a sharded
    checkpoint) and tokenizer to ``folder``, atomically; ``overrides`` change config fields."""
    if family_name not in FAMILIES:
        raise ValueError(f"unknown tiny LLM family {family_name!r}; choose one of {', '.join(FAMILIES)}")
    family = FAMILIES[family_name]

    def write(tmp: str) -> None:
        tokenizer = build_tokenizer(family)
        build_model(family, tokenizer, seed, **overrides).save_pretrained(tmp, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(tmp)

    return write_folder_atomic(folder, write)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write one sub-folder per family into")
    parser.add_argument("--family", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args(argv)
    quiet_logs()
    print(json.dumps({name: write_tiny_llm(name, os.path.join(args.out, name)) for name in args.family}))


if __name__ == "__main__":
    main()

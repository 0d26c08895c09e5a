"""The LLM prompt decoder: loading only the last layers, and cached decoding = full forward."""
import json
import os
import shutil

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from llamp.errors import ConfigError, MissingFileError, naming
from llamp.cache_kv import CacheKV
from llamp.llm.tail import load_decoder_tail
from llamp.llm_decoder import LLMPromptDecoder, cache_attention_mask

TEXTS = ["In one sentence, describe the distinctive appearance of a red circle.", "a blue square"]


def llm_forward(path):
    """Left-padded batch through the whole tiny LLM: its K/V cache, mask and hidden states."""
    model = LlamaForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.unk_token, "left"
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    mask = batch.attention_mask
    assert (mask == 0).any(), "the test needs a padded row"
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions,
                    use_cache=True, output_hidden_states=True)
    cache = out.past_key_values if getattr(out, "past_key_values", None) is not None else out.cache
    return model, batch.input_ids, mask, cache, out.hidden_states


def reference_decode(decoder, hidden_in, n_real):
    """The copied layers run over [real text hidden states; learned tokens] with no cache at all."""
    m = decoder.num_tokens
    hidden = torch.cat([hidden_in, decoder.tokens.unsqueeze(0)], dim=1)  # [1, n + M, hidden]
    seq = n_real + m
    positions = torch.arange(seq)[None]
    pe = decoder.rotary_emb(hidden, positions)
    mask = torch.full((seq, seq), torch.finfo(hidden.dtype).min).triu(1)[None, None]
    for layer in decoder.layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=pe)
    return decoder.norm(hidden)[:, -m:]


@pytest.mark.parametrize("num_layers", [1, 2])
def test_cached_decode_equals_the_copied_layers_over_the_full_sequence(tiny_models, num_layers):
    model, ids, mask, cache, hidden_states = llm_forward(tiny_models["llm"])
    total = model.config.num_hidden_layers
    tail = load_decoder_tail(tiny_models["llm"], num_layers)
    assert tail.layer_indices == list(range(total - num_layers, total))
    torch.manual_seed(0)
    decoder = LLMPromptDecoder(tail, num_tokens=3).eval()
    keys = [cache.layers[i].keys for i in tail.layer_indices]
    values = [cache.layers[i].values for i in tail.layer_indices]
    with torch.no_grad():
        got = decoder(CacheKV(keys, values, mask, decoder.layer_indices))  # [2, 3, hidden]
        for b in range(len(TEXTS)):
            real = mask[b].bool()
            hidden_in = hidden_states[total - num_layers][b, real].unsqueeze(0)
            expected = reference_decode(decoder, hidden_in, int(real.sum()))
            assert (got[b] - expected[0]).abs().max() < 1e-5
            if num_layers == total:  # the whole LLM over [text embeddings; tokens]: an independent path
                embeds = torch.cat([model.model.embed_tokens(ids[b, real])[None], decoder.tokens[None]], dim=1)
                full = model.model(inputs_embeds=embeds).last_hidden_state[0, -3:]
                assert (got[b] - full).abs().max() < 1e-5
        # The cache must matter: decoding over an all-padding cache gives something else.
        padding_only = CacheKV(keys, values, torch.zeros_like(mask), decoder.layer_indices)
        assert (decoder(padding_only) - got).abs().max() > 1e-3


PHRASES = ["four corners", "a bright red disc, smooth round edges, a white background"]


@pytest.mark.parametrize("num_layers", [1, 2])
def test_a_masked_gap_decodes_like_the_gap_removed(tiny_models, num_layers):
    """The release's cache, [pad][prompt][pad][BOS noun phrases], decodes as if the padding were not there."""
    model = LlamaForCausalLM.from_pretrained(tiny_models["llm"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llm"])
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.unk_token, "left"
    prompts = tokenizer(TEXTS, return_tensors="pt", padding=True)  # each with its BOS
    phrases = tokenizer(PHRASES, return_tensors="pt", padding=True)
    ids = torch.cat([prompts.input_ids, phrases.input_ids], dim=1)
    mask = torch.cat([prompts.attention_mask, phrases.attention_mask], dim=1)
    first = mask.argmax(-1)  # each row's first real token
    gap_rows = [b for b in range(len(TEXTS)) if (mask[b, first[b]:] == 0).any()]
    # Row 0 has a gap, row 1 left padding: every row is padded, so the padded width exceeds any row's length.
    assert gap_rows == [0] and mask[1, 0] == 0, "the test needs a row with a gap and one with left padding"
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # run on across the gap
    with torch.no_grad():
        cache = model.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True).past_key_values
    total = model.config.num_hidden_layers
    torch.manual_seed(1)
    decoder = LLMPromptDecoder(load_decoder_tail(tiny_models["llm"], num_layers), num_tokens=3).eval()
    keys = [cache.layers[i].keys for i in decoder.layer_indices]
    values = [cache.layers[i].values for i in decoder.layer_indices]

    # The same cache with every padding slot removed: each row's real slots, moved together and left-padded.
    # Keys were rotated at their positions, so moving the slots keeps the positions.
    real = mask.bool()
    width = int(real.sum(-1).max())
    compact_mask = torch.zeros(len(TEXTS), width, dtype=mask.dtype)
    compact_keys = [torch.zeros_like(k[:, :, :width]) for k in keys]
    compact_values = [torch.zeros_like(v[:, :, :width]) for v in values]
    for b in range(len(TEXTS)):
        n = int(real[b].sum())
        compact_mask[b, width - n:] = 1
        for full, compact in zip(keys + values, compact_keys + compact_values):
            compact[b, :, width - n:] = full[b][:, real[b]]
    with torch.no_grad():
        got = decoder(CacheKV(keys, values, mask, decoder.layer_indices))
        expected = decoder(CacheKV(compact_keys, compact_values, compact_mask, decoder.layer_indices))
        assert (got - expected).abs().max() < 1e-5
        # The gap must matter: the same slots seen as tokens give something else.
        unmasked = mask.clone()
        unmasked[0, first[0]:] = 1
        assert (decoder(CacheKV(keys, values, unmasked, decoder.layer_indices))[0] - got[0]).abs().max() > 1e-3
        if num_layers == total:  # independent: the whole LLM over [real tokens; learned tokens], no padding
            for b in range(len(TEXTS)):
                embeds = torch.cat([model.model.embed_tokens(ids[b, real[b]])[None], decoder.tokens[None]], dim=1)
                full = model.model(inputs_embeds=embeds).last_hidden_state[0, -3:]
                assert (got[b] - full).abs().max() < 1e-5


def test_decoder_trains_only_what_the_config_says(tiny_models):
    decoder = LLMPromptDecoder(load_decoder_tail(tiny_models["llm"], 1), num_tokens=2)
    trainable = {n for n, p in decoder.named_parameters() if p.requires_grad}
    assert "tokens" in trainable and "norm.weight" in trainable
    assert any("q_proj" in n for n in trainable) and any("o_proj" in n for n in trainable)
    assert not any(k in n for n in trainable for k in ("k_proj", "v_proj", "mlp"))
    frozen_norms = LLMPromptDecoder(load_decoder_tail(tiny_models["llm"], 1), num_tokens=2,
                                    train_q=False, train_layer_norms=False, train_final_norm=False)
    trainable = {n for n, p in frozen_norms.named_parameters() if p.requires_grad}
    assert not any("q_proj" in n or "norm" in n for n in trainable)


def test_cache_attention_mask_hides_padding_and_the_future():
    mask = cache_attention_mask(torch.tensor([[0, 1, 1]]), num_new=2, dtype=torch.float32)
    visible = (mask[0, 0] == 0).int().tolist()
    assert visible == [[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]]


def test_only_the_needed_tensors_are_read(tiny_models, tmp_path):
    """Deleting the shards that hold only early layers must not matter; a missing needed one must."""
    folder = tmp_path / "llm"
    shutil.copytree(tiny_models["llm"], folder)
    with open(folder / "model.safetensors.index.json") as f:
        weight_map = json.load(f)["weight_map"]
    needed = {file for name, file in weight_map.items() if name.startswith(("model.layers.1.", "model.norm."))}
    for file in set(weight_map.values()) - needed:
        os.remove(folder / file)
    load_decoder_tail(str(folder), 1)  # works without the embeddings or layer 0
    with pytest.raises(ConfigError, match=r"\(llm_path\)"):
        load_decoder_tail(str(folder), 2)  # layer 0's shard is gone
    with pytest.raises(ConfigError, match="num_layers 3 must be in 1..2"):
        load_decoder_tail(tiny_models["llm"], 3)
    with pytest.raises(MissingFileError, match="^llm_path: "):
        load_decoder_tail(str(tmp_path / "nowhere"), 1)
    # whoever knows the setting's name (a trainer) has it printed instead of the field
    with naming({"llm_path": "TRAINER.LLAMP.LLM_PATH"}), pytest.raises(MissingFileError, match="^TRAINER.LLAMP.LLM_PATH: "):
        load_decoder_tail(str(tmp_path / "nowhere"), 1)


def test_the_cache_goes_under_the_name_the_installed_layer_declares(tiny_models):
    """Decoder layers swallow unknown keywords, so a cache passed under a stale name would be ignored."""
    import inspect

    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from llamp.llm_decoder import cache_keyword

    decoder = LLMPromptDecoder(load_decoder_tail(tiny_models["llm"], 1), 2)
    assert decoder.cache_keywords == [cache_keyword(decoder.layers[0])]
    assert decoder.cache_keywords[0] in inspect.signature(LlamaDecoderLayer.forward).parameters

    class OlderLayer(torch.nn.Module):  # transformers 4.x spelled it past_key_value
        def forward(self, hidden_states, attention_mask=None, past_key_value=None, **kwargs):
            return hidden_states

    class NoCacheLayer(torch.nn.Module):
        def forward(self, hidden_states, **kwargs):
            return hidden_states

    assert cache_keyword(OlderLayer()) == "past_key_value"
    with pytest.raises(ConfigError, match="declares no cache argument"):
        cache_keyword(NoCacheLayer())


@pytest.mark.parametrize("num_layers", [1, 2])
def test_the_first_layer_projects_the_shared_tokens_once_with_the_same_result_and_gradients(tiny_models,
                                                                                              num_layers):
    model, _, mask, cache, _ = llm_forward(tiny_models["llm"])
    torch.manual_seed(0)
    decoder = LLMPromptDecoder(load_decoder_tail(tiny_models["llm"], num_layers), num_tokens=3)
    keys = [cache.layers[i].keys for i in decoder.layer_indices]
    values = [cache.layers[i].values for i in decoder.layer_indices]
    seen = []  # rows entering each layer's q_proj
    for layer in decoder.layers:
        layer.self_attn.q_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    trainable = {n: p for n, p in decoder.named_parameters() if p.requires_grad}

    def run(shared: bool):
        decoder.shared_projections.enabled = shared
        decoder.zero_grad()
        seen.clear()
        out = decoder(CacheKV(keys, values, mask, decoder.layer_indices))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in trainable.items()}, list(seen)

    per_row, per_row_grads, per_row_seen = run(False)
    shared, shared_grads, shared_seen = run(True)
    rows = len(TEXTS)
    assert per_row_seen == [rows] * num_layers
    assert shared_seen == [1] + [rows] * (num_layers - 1)  # only the first layer's input rows are all equal
    assert (shared - per_row).abs().max() < 1e-5
    assert {n for n, g in shared_grads.items() if g.abs().max() > 0} == set(trainable)
    for name, grad in per_row_grads.items():
        assert (shared_grads[name] - grad).abs().max() <= 1e-5 * max(1.0, grad.abs().max()), name

"""The shared CLIP backbone: offline tokenizer, the three sources, bad paths."""
import os

import pytest
import torch
from train_cli import as_trainer_names_it

import llamp.clip.loading as clip_loading
from llamp.clip.loading import load_clip
from llamp.clip.tokenizer import build_clip_tokenizer
from llamp.errors import ConfigError, MissingFileError
from llamp.clip.openai_format import hf_to_openai

TEXTS = ["a photo of a Red circle.", "The Boeing 737-800, a type of aircraft!",
         "café  naïve   spaces", "X", "a photo of a {}, a type of pet."]


def features(loaded, images, texts):
    return loaded.encode_image(images), loaded.encode_text(texts)


def test_offline_tokenizer_matches_openai_clip():
    import clip

    tokenizer = build_clip_tokenizer()
    for text in TEXTS:
        expected = clip.tokenize(text)[0]
        expected = expected[expected != 0].tolist()
        assert tokenizer(text).input_ids == expected, text


def test_openai_checkpoint_gives_the_same_features(tiny_clip, tmp_path):
    """HF folder -> OpenAI .pt (state dict and TorchScript) -> load: same features."""
    import clip

    state_dict = hf_to_openai(tiny_clip.model)
    plain = tmp_path / "tiny-state-dict.pt"
    torch.save(state_dict, plain)

    # The reference implementation from the openai-clip package, with the same weights.
    cfg = tiny_clip.model.config
    reference = clip.model.CLIP(
        cfg.projection_dim, cfg.vision_config.image_size, cfg.vision_config.num_hidden_layers,
        cfg.vision_config.hidden_size, cfg.vision_config.patch_size, 77, cfg.text_config.vocab_size,
        cfg.text_config.hidden_size, cfg.text_config.num_attention_heads, cfg.text_config.num_hidden_layers,
    ).eval()
    reference.load_state_dict(state_dict)
    torch.manual_seed(0)
    images = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        traced = torch.jit.trace_module(reference, {"encode_image": images, "encode_text": clip.tokenize(TEXTS)})
        ref_image, ref_text = reference.encode_image(images), reference.encode_text(clip.tokenize(TEXTS))
    scripted = tmp_path / "tiny-jit.pt"
    traced.save(str(scripted))

    hf_image, hf_text = features(tiny_clip, images, TEXTS)
    assert (hf_image - ref_image).abs().max() < 1e-5
    assert (hf_text - ref_text).abs().max() < 1e-5
    for path in (plain, scripted):
        loaded = load_clip("ViT-B/16", str(path))
        image, text = features(loaded, images, TEXTS)
        assert (image - hf_image).abs().max() < 1e-5, path
        assert (text - hf_text).abs().max() < 1e-5, path
    assert not torch.equal(hf_image[0], hf_image[1])  # the comparison is not vacuous


def test_empty_path_searches_the_clip_cache(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setitem(clip_loading.KNOWN_BACKBONES, "ViT-Test/1", ("ViT-Test-1.pt", "no-such-org/no-such-clip"))
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path))
    with pytest.raises(MissingFileError) as err:
        load_clip("ViT-Test/1", "")
    message = str(err.value)
    assert "clip_name 'ViT-Test/1': set clip_path" in message and str(tmp_path / "ViT-Test-1.pt") in message
    assert "no-such-org/no-such-clip" in message
    assert "MODEL.BACKBONE.NAME 'ViT-Test/1': set MODEL.BACKBONE.PATH" in as_trainer_names_it(err.value, "CoOp")

    torch.save(hf_to_openai(tiny_clip.model), tmp_path / "ViT-Test-1.pt")
    loaded = load_clip("ViT-Test/1", "")
    assert loaded.source == str(tmp_path / "ViT-Test-1.pt")


def test_bad_paths_give_clear_errors(tiny_models, tmp_path):
    with pytest.raises(MissingFileError, match="clip_path 'no-such-org/no-such-clip' is not a folder"):
        load_clip("ViT-B/16", "no-such-org/no-such-clip")
    with pytest.raises(MissingFileError, match="does not exist"):
        load_clip("ViT-B/16", str(tmp_path / "missing.pt"))
    with pytest.raises(MissingFileError, match="config.json"):
        load_clip("ViT-B/16", str(tmp_path))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt.pt"):
        load_clip("ViT-B/16", str(corrupt))
    not_clip = tmp_path / "not-clip.pt"
    torch.save({"weight": torch.zeros(2)}, not_clip)
    with pytest.raises(ConfigError, match="not an OpenAI ViT CLIP"):
        load_clip("ViT-B/16", str(not_clip))


def test_hf_folder_keeps_its_tokenizer_files(tiny_models):
    loaded = load_clip("ViT-B/16", tiny_models["clip"])
    assert os.path.isfile(os.path.join(tiny_models["clip"], "tokenizer.json"))
    assert loaded.tokenize(["a red circle"]).shape == (1, 77)
    ids = build_clip_tokenizer()("a red circle").input_ids  # [bos, a, red, circle, eos]
    # padded with end-of-text ids, like the Hugging Face CLIP tokenizers
    assert loaded.tokenize(["a red circle"])[0, :7].tolist() == ids + [49407, 49407]


def test_the_architecture_is_named_from_the_loaded_towers(tiny_clip):
    from transformers import CLIPConfig

    assert tiny_clip.architecture() == ("vision 2 layers x 96 wide, patch 32, 224-px images; "
                                        "text 2 layers x 64 wide")
    b16 = CLIPConfig(text_config=dict(hidden_size=512, num_hidden_layers=12),
                     vision_config=dict(hidden_size=768, num_hidden_layers=12, patch_size=16, image_size=224))
    stand_in = clip_loading.LoadedCLIP(model=type("M", (), {"config": b16})(), tokenizer=None, source="")
    assert stand_in.architecture() == "ViT-B/16"

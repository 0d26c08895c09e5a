"""Loading the one CLIP backbone every trainer uses, from local files only.

Three sources are accepted (the CLIP path: a trainer's MODEL.BACKBONE.PATH,
the build's ``--clip``; errors name it as the field ``clip_path``):
  * a Hugging Face model folder (``config.json`` + weights, tokenizer files optional);
  * an OpenAI checkpoint file, e.g. the ``ViT-B-16.pt`` that ``clip.load`` caches,
    converted to a Hugging Face ``CLIPModel`` on load;
  * a hub name such as ``openai/clip-vit-base-patch16``, resolved from the local
    Hugging Face cache only.
An empty path looks for the architecture's name (``clip_name``, e.g. ``ViT-B/16``) in the usual
caches. Nothing is ever downloaded.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
from transformers import CLIPModel, CLIPTokenizer

from .tokenizer import build_clip_tokenizer, clip_token_ids
from ..errors import ConfigError, MissingFileError, from_local_files
from .openai_format import openai_to_hf

# CLIP's image normalisation (the same for every OpenAI CLIP).
CLIP_PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)

# architecture name -> (file name clip.load caches, Hugging Face hub name)
KNOWN_BACKBONES = {
    "ViT-B/32": ("ViT-B-32.pt", "openai/clip-vit-base-patch32"),
    "ViT-B/16": ("ViT-B-16.pt", "openai/clip-vit-base-patch16"),
    "ViT-L/14": ("ViT-L-14.pt", "openai/clip-vit-large-patch14"),
    "ViT-L/14@336px": ("ViT-L-14-336px.pt", "openai/clip-vit-large-patch14-336"),
}
OPENAI_SUFFIXES = (".pt", ".pth", ".bin")
# The published architectures by their towers: (vision layers, vision width, patch, image size, text layers,
# text width), so that a log can name what was loaded whatever the config's name says.
ARCHITECTURES = {
    (12, 768, 32, 224, 12, 512): "ViT-B/32",
    (12, 768, 16, 224, 12, 512): "ViT-B/16",
    (24, 1024, 14, 224, 12, 768): "ViT-L/14",
    (24, 1024, 14, 336, 12, 768): "ViT-L/14@336px",
}


@dataclass
class LoadedCLIP:
    """A CLIP model (fp32, eval mode) with its tokenizer and where it came from."""

    model: CLIPModel
    tokenizer: CLIPTokenizer
    source: str

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    def architecture(self) -> str:
        """The published name of the loaded towers (e.g. "ViT-B/16"), or what they are when none fits."""
        vision, text = self.model.config.vision_config, self.model.config.text_config
        towers = (vision.num_hidden_layers, vision.hidden_size, vision.patch_size, vision.image_size,
                  text.num_hidden_layers, text.hidden_size)
        return ARCHITECTURES.get(towers) or (
            f"vision {towers[0]} layers x {towers[1]} wide, patch {towers[2]}, {towers[3]}-px images; "
            f"text {towers[4]} layers x {towers[5]} wide")

    def text_sha256(self) -> str:
        """sha256 of the weights that make CLIP's text features (text tower + projection), whatever the
        file format they came from: what a knowledge cache's distillation targets depend on."""
        digest = hashlib.sha256()
        modules = {"text_model": self.model.text_model, "text_projection": self.model.text_projection}
        for prefix, module in modules.items():
            for name, tensor in sorted(module.state_dict().items()):
                digest.update(f"{prefix}.{name}:{list(tensor.shape)}".encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``[len(texts), 77]``, padded and truncated like ``clip.tokenize``."""
        return clip_token_ids(self.tokenizer, texts)

    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """Projected text features ``[len(texts), embed]`` (not normalised)."""
        return clip_text_features(self.model, self.tokenizer, texts, batch_size)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image features ``[batch, embed]`` (not normalised)."""
        dtype = self.model.visual_projection.weight.dtype
        return self.model.get_image_features(pixel_values=images.to(dtype)).pooler_output


@torch.no_grad()
def clip_text_features(model: CLIPModel, tokenizer: CLIPTokenizer, texts: list[str],
                       batch_size: int | None = 256) -> torch.Tensor:
    """CLIP's projected text features ``[len(texts), embed]`` (not normalised), ``batch_size`` sentences
    at a time (None: all at once)."""
    device = model.logit_scale.device
    step = batch_size or max(1, len(texts))
    chunks = []
    for i in range(0, len(texts), step):
        ids = clip_token_ids(tokenizer, texts[i:i + step]).to(device)
        chunks.append(model.get_text_features(input_ids=ids).pooler_output)
    return torch.cat(chunks)


def default_search_paths(name: str) -> list[str]:
    """Where an empty CLIP path looks for ``name``, in order."""
    if name not in KNOWN_BACKBONES:
        return []
    filename, hub_name = KNOWN_BACKBONES[name]
    clip_cache = os.path.expanduser(os.environ.get("CLIP_CACHE_DIR", "~/.cache/clip"))
    return [os.path.join(clip_cache, filename), hub_name]


def load_clip(name: str, path: str = "") -> LoadedCLIP:
    """Load CLIP from ``path`` (see module doc), or find ``name`` in the local caches."""
    if path:
        return _load_from(path, must_exist=True)
    searched = default_search_paths(name)
    for candidate in searched:
        loaded = _load_from(candidate, must_exist=False)
        if loaded is not None:
            return loaded
    where = ", ".join(searched) if searched else f"nothing (no default location for {name!r})"
    raise MissingFileError(
        f"no CLIP weights found for {{clip_name}} {name!r}: set {{clip_path}} to a "
        f"Hugging Face CLIP folder or an OpenAI .pt file (searched: {where})", fields=("clip_name", "clip_path"))


def _looks_like_path(path: str) -> bool:
    return (os.path.isabs(path) or path.startswith((".", "~")) or path.endswith(OPENAI_SUFFIXES)
            or path.count("/") != 1)


def _load_from(path: str, must_exist: bool) -> LoadedCLIP | None:
    expanded = os.path.expanduser(path)
    if os.path.isfile(expanded):
        return _load_openai_file(expanded)
    if os.path.isdir(expanded):
        return _load_hf_folder(expanded)
    if not _looks_like_path(path):  # a hub name: the local Hugging Face cache only
        try:
            model = CLIPModel.from_pretrained(path, local_files_only=True)
        except OSError:
            if must_exist:
                raise MissingFileError(
                    f"{{clip_path}} {path!r} is not a folder or file, and the hub name is not "
                    "in the local Hugging Face cache (no download is attempted)", fields=("clip_path",)) from None
            return None
        return LoadedCLIP(model.float().eval(), _tokenizer_for(path, hub=True), f"hub cache:{path}")
    if must_exist:
        raise MissingFileError(f"{{clip_path}} {path!r} does not exist", fields=("clip_path",))
    return None


def _load_hf_folder(folder: str) -> LoadedCLIP:
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise MissingFileError(
            f"{{clip_path}} {folder} has no config.json: expected a Hugging Face CLIP folder", fields=("clip_path",))
    model = from_local_files(CLIPModel, folder, f"cannot load a CLIP model from {folder} ({{clip_path}})",
                             fields=("clip_path",))
    return LoadedCLIP(model.float().eval(), _tokenizer_for(folder), folder)


def _tokenizer_for(folder_or_hub: str, hub: bool = False) -> CLIPTokenizer:
    has_files = hub or any(os.path.isfile(os.path.join(folder_or_hub, f))
                           for f in ("tokenizer.json", "vocab.json"))
    if has_files:
        try:
            return CLIPTokenizer.from_pretrained(folder_or_hub, local_files_only=True)
        except (OSError, ValueError):
            pass
    return build_clip_tokenizer()


def read_openai_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of an OpenAI CLIP file: a TorchScript archive or a plain state dict."""
    try:  # OpenAI's released files are TorchScript archives (no pickled code to run)
        return {k: v for k, v in torch.jit.load(path, map_location="cpu").state_dict().items()}
    except RuntimeError:
        pass
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read {path} ({{clip_path}}) as a TorchScript archive or a "
                          f"state dict: {type(e).__name__}", fields=("clip_path",)) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or "visual.conv1.weight" not in obj:
        raise ConfigError(f"{path} ({{clip_path}}) is not an OpenAI ViT CLIP checkpoint", fields=("clip_path",))
    return obj


def _load_openai_file(path: str) -> LoadedCLIP:
    state_dict = read_openai_state_dict(path)
    try:
        model = openai_to_hf(state_dict)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{path} ({{clip_path}}) is not a convertible OpenAI ViT CLIP "
                          f"checkpoint: {e}", fields=("clip_path",)) from None
    return LoadedCLIP(model, build_clip_tokenizer(), path)

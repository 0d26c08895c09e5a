"""The benchmarks that come with a CoOp split file (``split_zhou_<Name>.json``).

Folder names and split files are those of the CoOp DATASETS.md, so a data
folder prepared for CoOp / MaPLe / PromptSRC works here unchanged.
"""
from dassl.data.datasets import DATASET_REGISTRY

from .common import SplitFileDataset


@DATASET_REGISTRY.register()
class Caltech101(SplitFileDataset):
    """Caltech-101 (object categories)."""

    folder = "caltech-101"
    image_folder = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    download = "Caltech-101 (101_ObjectCategories) and split_zhou_Caltech101.json"


@DATASET_REGISTRY.register()
class OxfordPets(SplitFileDataset):
    """Oxford-IIIT Pet (37 cat and dog breeds)."""

    folder = "oxford_pets"
    image_folder = "images"
    split_file = "split_zhou_OxfordPets.json"
    download = "the Oxford-IIIT Pet images and split_zhou_OxfordPets.json"


@DATASET_REGISTRY.register()
class StanfordCars(SplitFileDataset):
    """Stanford Cars (196 car models); split paths are relative to the dataset folder."""

    folder = "stanford_cars"
    image_folder = ""
    split_file = "split_zhou_StanfordCars.json"
    download = "Stanford Cars (cars_train, cars_test) and split_zhou_StanfordCars.json"


@DATASET_REGISTRY.register()
class OxfordFlowers(SplitFileDataset):
    """Oxford Flowers 102."""

    folder = "oxford_flowers"
    image_folder = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    download = "Oxford 102 Flowers (jpg) and split_zhou_OxfordFlowers.json"


@DATASET_REGISTRY.register()
class Food101(SplitFileDataset):
    """Food-101."""

    folder = "food-101"
    image_folder = "images"
    split_file = "split_zhou_Food101.json"
    download = "Food-101 and split_zhou_Food101.json"


@DATASET_REGISTRY.register()
class SUN397(SplitFileDataset):
    """SUN397 scene categories."""

    folder = "sun397"
    image_folder = "SUN397"
    split_file = "split_zhou_SUN397.json"
    download = "SUN397 and split_zhou_SUN397.json"


@DATASET_REGISTRY.register()
class DescribableTextures(SplitFileDataset):
    """DTD, the Describable Textures Dataset."""

    folder = "dtd"
    image_folder = "images"
    split_file = "split_zhou_DescribableTextures.json"
    download = "DTD and split_zhou_DescribableTextures.json"


@DATASET_REGISTRY.register()
class EuroSAT(SplitFileDataset):
    """EuroSAT RGB land-use tiles."""

    folder = "eurosat"
    image_folder = "2750"
    split_file = "split_zhou_EuroSAT.json"
    download = "EuroSAT RGB (2750) and split_zhou_EuroSAT.json"


@DATASET_REGISTRY.register()
class UCF101(SplitFileDataset):
    """UCF101 actions, one middle frame per video."""

    folder = "ucf101"
    image_folder = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    download = "UCF-101-midframes and split_zhou_UCF101.json"

"""LLaMP for Dassl: install with ``pip install -e .`` (Dassl itself: see README)."""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements():
    with open(os.path.join(HERE, "requirements.txt")) as f:
        lines = (line.split("#")[0].strip() for line in f)
        return [line for line in lines if line and line != "pytest"]


setup(
    name="llamp-dassl",
    version="0.1.0",
    description="LLaMP (Large Language Models as Prompt learners, CVPR 2024) as a Dassl.pytorch trainer",
    packages=find_packages(include=["llamp", "llamp.*", "llm_prompts", "llm_prompts.*",
                                    "trainers", "trainers.*", "vl_datasets", "vl_datasets.*",
                                    "comparison", "comparison.*"]),
    package_data={"llamp": ["templates/*.json"], "llm_prompts": ["templates/*.json"]},
    py_modules=["train"],
    python_requires=">=3.10",
    install_requires=requirements(),
)

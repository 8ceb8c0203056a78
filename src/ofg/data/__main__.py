"""Command line: prepare and inspect the embedded cohorts; write tiny fixtures of the real layouts.

    python -m ofg.data prepare embedded-brain --out DIR [--preset cpu|paper|tiny] [--resolution MM]
        [--shape D H W] [--train N --val N --test N] [--magnitude VOX] [--seed S] [--cache DIR]
        [--no-progress]
    python -m ofg.data prepare embedded-ct --out DIR ...
    python -m ofg.data info DIR [--verify]
    python -m ofg.data fixtures OUT

``fixtures`` writes OUT/ixi, OUT/oasis, OUT/lpba and OUT/abdomen: the four real datasets' on-disk
layouts with tiny synthetic 16^3 volumes (:func:`ofg.data.fixtures.make_paper_roots`), to try
``config/paper.yaml`` end to end before having the data (with ``config/paper-fixtures.yaml``, README).

Errors in the data or the options exit with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_PREPARABLE = {"embedded-brain": "brain", "embedded-ct": "ct"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ofg.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="fetch the embedded sources and write a cohort")
    prepare.add_argument("dataset", choices=sorted(_PREPARABLE))
    prepare.add_argument("--out", required=True, type=Path, help="output folder")
    prepare.add_argument("--preset", default="cpu", choices=("cpu", "paper", "tiny"))
    prepare.add_argument("--resolution", type=float, help="isotropic voxel size, mm")
    prepare.add_argument("--shape", type=int, nargs=3, metavar=("D", "H", "W"), help="multiples of 16")
    prepare.add_argument("--train", type=int, help="train subjects")
    prepare.add_argument("--val", type=int, help="validation subjects")
    prepare.add_argument("--test", type=int, help="test subjects")
    prepare.add_argument("--magnitude", type=float, help="peak velocity of the deformations, voxels")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--cache", type=Path, help="download cache (default $OFG_CACHE or ~/.cache/ofg)")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")

    info = commands.add_parser("info", help="summarise a prepared cohort")
    info.add_argument("root", type=Path)
    info.add_argument("--verify", action="store_true", help="also check every file's sha256")

    fixtures = commands.add_parser("fixtures", help="write tiny fixtures of the four real datasets' layouts")
    fixtures.add_argument("out", type=Path, help="output folder (receives ixi/, oasis/, lpba/, abdomen/)")
    return parser


def _prepare(args: argparse.Namespace) -> None:
    from ofg.data.embedded import prepare_embedded

    out = prepare_embedded(_PREPARABLE[args.dataset], args.out, preset=args.preset, resolution=args.resolution,
                           shape=tuple(args.shape) if args.shape else None, n_train=args.train, n_val=args.val,
                           n_test=args.test, magnitude=args.magnitude, seed=args.seed, cache_dir=args.cache,
                           progress=not args.no_progress)
    print(f"wrote {out / 'manifest.json'}")


def summary(manifest: dict) -> str:
    """A few lines describing a cohort manifest."""
    import collections

    opts = manifest["options"]
    lines = [
        f"dataset   {manifest['dataset']} ({manifest['pairing']}), preset {opts['preset']}, seed {opts['seed']}",
        f"grid      {' x '.join(map(str, manifest['shape']))} voxels of {opts['resolution']} mm, "
        f"{manifest['orientation']}",
        f"subjects  train {opts['n_train']}, val {opts['n_val']}, test {opts['n_test']}; "
        f"deformation peak velocity {opts['magnitude']} voxels",
        f"source    {manifest['source']['requirement']} (sha256 {manifest['source']['wheel_sha256'][:12]}...)",
    ]
    for name, entry in manifest["label_sets"].items():
        lines.append(f"labels    {name}: {len(entry['labels'])} in {entry['folder']}/ ({entry['note']})")
    counts = collections.Counter(rel.split("/")[0] for rel in manifest["files"])
    lines.append("files     " + ", ".join(f"{folder} {n}" for folder, n in sorted(counts.items())))
    lines.append(f"caveat    {manifest['caveat']}")
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> None:
    from ofg.data.cohort import read_manifest, verify_files

    manifest = read_manifest(args.root)
    print(summary(manifest))
    if args.verify:
        verify_files(args.root)
        print(f"verified  {len(manifest['files'])} files match their sha256")


def _fixtures(args: argparse.Namespace) -> None:
    from ofg.data.fixtures import make_paper_roots

    for name, root in make_paper_roots(args.out).items():
        print(f"wrote {name:8s}{root}")


COMMANDS = {"prepare": _prepare, "info": _info, "fixtures": _fixtures}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError) as exc:  # DataError is a ValueError
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

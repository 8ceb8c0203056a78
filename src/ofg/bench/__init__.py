"""Benchmarks: ``python -m ofg.bench`` times the package against naive formulations.

Each section is a module of this package exposing ``run(args) -> None`` that prints its own
table: ``core`` (losses and the OFG refinement), and, when present, ``models`` and ``train``.
"""

SECTIONS = ("core", "models", "train")
#: the training paths [train] times: float32; the fast path (bf16 autocast + channels-last network);
#: the network under torch.compile; both
PATHS = ("float32", "fast", "compiled", "fast+compiled")

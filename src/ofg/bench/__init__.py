"""Benchmarks: ``python -m ofg.bench`` times the package against naive formulations.

Each section is a module of this package exposing ``run(args) -> None`` that prints its own
table: ``core`` (losses and the OFG refinement), and, when present, ``models`` and ``train``.
"""

SECTIONS = ("core", "models", "train")
#: the training paths [train] times: plain PyTorch float32; float32 with the oneDNN convolutions of
#: ofg.models.onednn (what amp: false training runs on a CPU); the fast path (bf16 autocast +
#: channels-last network); the network under torch.compile; both
PATHS = ("float32", "float32-onednn", "fast", "compiled", "fast+compiled")

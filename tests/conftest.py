"""Shared test settings: few CPU threads (the machine is shared), explicit seeds, and the device axis.

``--device cpu`` (the default) or ``--device cuda`` picks where the tests that take the ``device``
fixture run (losses, refinement, the torch.compile'd step, the networks, an AMP train step, exact
resume with the device's RNG); every other test runs on the CPU either way. Without a GPU,
``--device cuda`` skips the device tests with the reason.
"""

from collections.abc import Iterator

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

DEVICES = ("cpu", "cuda")
NO_CUDA = "--device cuda: no CUDA device (torch.cuda.is_available() is False)"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", choices=DEVICES,
                     help="where the tests with a device axis (the `device` fixture) run: cpu (default) or cuda; "
                          "without a GPU, cuda skips them")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "device: takes the `device` fixture (set automatically); runs on --device")


def pytest_report_header(config: pytest.Config) -> str:
    return f"device tests on: {config.getoption('--device')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that takes ``device``, so ``-m device`` selects the device axis alone."""
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> Iterator[torch.device]:
    """The ``--device`` as a ``torch.device``; skips where CUDA is asked for and absent.

    On CUDA, TF32 is off for matmuls and cuDNN convolutions (both float32 to float32 round-off, so the
    CPU tolerances hold) and cuDNN picks deterministic algorithms (exact resume compares weights
    bitwise); the flags are restored afterwards.
    """
    name = request.config.getoption("--device")
    if name == "cpu":
        yield torch.device("cpu")
        return
    if not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    backends = torch.backends
    saved = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.deterministic,
             backends.cudnn.benchmark)
    backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = False
    backends.cudnn.deterministic, backends.cudnn.benchmark = True, False
    try:
        yield torch.device(name)
    finally:
        (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.deterministic,
         backends.cudnn.benchmark) = saved


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded torch generator, fresh for every test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, fresh for every test."""
    return np.random.default_rng(1234)

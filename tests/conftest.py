"""Shared test settings: few CPU threads (the machine is shared) and explicit seeds."""

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded torch generator, fresh for every test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, fresh for every test."""
    return np.random.default_rng(1234)

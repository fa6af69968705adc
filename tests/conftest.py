"""Unit-test fixtures: each test starts from the same global random state.

Layers draw their initial weights from torch's global generator; seeding it before every test
makes a test's numbers independent of which tests ran before it on the same pytest-xdist worker.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield

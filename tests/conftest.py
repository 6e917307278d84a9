import pytest
import torch

from ss4d.testing import shared_dir

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared():
    d = shared_dir()
    if d is None:
        pytest.skip("shared reference folder (../shared or $SS4D_SHARED) not found")
    return d

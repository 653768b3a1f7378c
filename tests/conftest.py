import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from fake_http import FakeServer  # noqa: E402  (after the offline switches, which the Hub clients read on import)


@pytest.fixture(scope="session")
def sample_world(tmp_path_factory):
    """A small sample world with zips, shared by the tests that only read it."""
    from earthvl.sample import generate_sample

    return generate_sample(
        tmp_path_factory.mktemp("world"), tiles=12, seed=3, gaia_images=30, zip_archives=True, keep_label_maps=True, progress=False
    )


@pytest.fixture
def server():
    """A misbehaving local HTTP server (see fake_http.py)."""
    fake = FakeServer()
    yield fake
    fake.close()

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from fake_http import FakeServer  # noqa: E402  (after the offline switches, which the Hub clients read on import)
from llm_servers import transformers_server  # noqa: E402,F401  (a session fixture: one server for all tests)

SHARED_FIXTURES = ("caption_world", "hub_replica")
"""Session fixtures costly enough that every module using one runs on the same pytest-xdist worker."""


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:  # a pytest-xdist worker: share the cores with the others instead of each taking all of them
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(workers)))


SLOW_FIXTURES = ("caption_world",)
"""Session fixtures that make every test using them slow: `caption_world` builds a 48-tile world and two datasets."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Tests using a SLOW_FIXTURES fixture are `slow` (before `-m` deselects). On a pytest-xdist worker (`-n 2 --dist
    loadgroup`, the README's test command): one group per module, so a module's fixtures are built once; one group
    for all modules sharing a costly session fixture; groups holding slow tests first, so the longest work starts
    first and the workers finish together."""
    for item in items:
        if any(name in item.fixturenames for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    uses = {}
    for item in items:
        uses.setdefault(item.module.__name__, set()).update(item.fixturenames)
    group = {module: next((name for name in SHARED_FIXTURES if name in names), module) for module, names in uses.items()}
    slow = {group[item.module.__name__] for item in items if item.get_closest_marker("slow")}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group[item.module.__name__]))
    items.sort(key=lambda item: group[item.module.__name__] not in slow)  # stable: collection order within each


@pytest.fixture(scope="session")
def sample_world(tmp_path_factory):
    """A small sample world with zips, shared by the tests that only read it."""
    from earthvl.sample import generate_sample

    return generate_sample(
        tmp_path_factory.mktemp("world"), tiles=12, seed=3, gaia_images=30, zip_archives=True, keep_label_maps=True, progress=False
    )


@pytest.fixture(scope="session")
def sample_gaia(sample_world, tmp_path_factory):
    """The sample world's GAIA built into a Hub folder (config `default`, all splits), shared by readers."""
    from earthvl.builders.gaia.build import build_gaia

    out = tmp_path_factory.mktemp("sample-gaia") / "gaia"
    build_gaia(sample_world.gaia.root, out, configs="default", progress=False)
    return out


@pytest.fixture
def server():
    """A misbehaving local HTTP server (see fake_http.py)."""
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def caption_world(tmp_path_factory):
    """A sample world large enough to fine-tune the tiny CLIP and BLIP-2 on, built into Hub folders: `cen` (ChatEarthNet
    gpt35), `gaia` (GAIA default) and `labels` (file name -> land-cover map, ground truth the upstream files lack)."""
    from earthvl.builders.chatearthnet.build import build_chatearthnet
    from earthvl.builders.gaia.build import build_gaia
    from earthvl.sample import generate_sample

    root = tmp_path_factory.mktemp("captions")
    world = generate_sample(root / "world", tiles=48, seed=3, gaia_images=120, keep_label_maps=True, progress=False)
    build_chatearthnet(world.chatearthnet.root, root / "cen", configs="gpt35", progress=False, num_proc=1)
    build_gaia(world.gaia.root, root / "gaia", configs="default", progress=False)
    labels = {patch.file_name: patch.label_map for patch in world.chatearthnet.patches if patch.label_map is not None}
    return {"cen": root / "cen", "gaia": root / "gaia", "labels": labels}


@pytest.fixture(scope="session")
def hub_replica(tmp_path_factory):
    """The offline replicas of the Hub checkpoints earthvl names (tests/hub, tests/hub_models.py): `hub_replica(name)`
    builds the replica of `name` (e.g. "llava-hf/llava-1.5-7b-hf") on first use and returns its folder. From then on
    the Hub id `name` itself resolves to it offline too: for the rest of the session the Hugging Face cache is a
    session folder holding the replicas as snapshots (the tests run offline, so nothing else is read from a cache)."""
    import huggingface_hub.constants
    from hub_models import folder_name, hub_model, install_in_cache

    root = tmp_path_factory.mktemp("hub")
    cache = tmp_path_factory.mktemp("hf-cache")
    patch = pytest.MonkeyPatch()
    patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    built = {}

    def folder(name):
        if name not in built:
            built[name] = hub_model(name, root / folder_name(name))
            install_in_cache(built[name], name, cache)
        return built[name]

    yield folder
    patch.undo()

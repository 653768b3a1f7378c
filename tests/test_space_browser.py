"""End to end, as a person would: the Space folder `write_space` writes, served by `python app.py` on a loopback
port, driven in a real headless Chromium (Debian's chromium through playwright-core, tests/e2e/drive_space.mjs).
The page shows errors (not a traceback) for Describe without an image and with a file that is not one, then the
caption, top class and gallery that the app's own handlers give for the same inputs; screenshots of each step land under the test's tmp_path and,
with EARTHVL_TEST_ARTIFACTS set, in that folder.

What it needs is installed from the project's files (`npm ci` in tests/e2e, Debian's chromium with apt-get as
root); it is skipped only where that cannot be done."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import test_space_folder
from PIL import Image

from earthvl.errors import EarthvlError
from earthvl.space.app import DEFAULT_RESULTS, PRESETS, DemoApp, resolve_settings

runs, space = test_space_folder.runs, test_space_folder.space
E2E = Path(__file__).parent / "e2e"
DRIVER = E2E / "drive_space.mjs"
PRESET, QUERY = "Land cover", "a river crossing farmland"
SCREENSHOTS = ("caption-error", "caption-bad-image", "caption", "classify", "retrieve")
INSTALL_TIMEOUT, DRIVE_TIMEOUT = 600, 120


def _tail(process: subprocess.CompletedProcess) -> str:
    return (process.stdout + process.stderr)[-2000:]


def _chromium() -> str:
    """Debian's chromium, installed with apt-get (as .ci/run does) when missing and this is root."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no chromium, and no apt-get as root to install it (apt-get install chromium)")
    install = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium"
    done = subprocess.run(["bash", "-c", install], capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)
    if done.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"chromium could not be installed with apt-get:\n{_tail(done)}")
    return shutil.which("chromium")


def _node() -> str:
    """node, with playwright-core installed into tests/e2e/node_modules from the committed lock file if missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("no node/npm to run the browser driver (tests/e2e needs Node.js 20 or later)")
    if not (E2E / "node_modules" / "playwright-core" / "package.json").is_file():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=E2E, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"npm ci in {E2E} failed (is the npm registry reachable?):\n{_tail(done)}")
    return node


@pytest.fixture(scope="module")
def browser():
    """(node, chromium) ready to drive a page."""
    return _node(), _chromium()


@pytest.fixture(scope="module")
def served(space, tmp_path_factory):
    """The Space folder's `python app.py`, serving on a free loopback port."""
    server = test_space_folder.Served(space, tmp_path_factory.mktemp("served") / "app.log")
    try:
        server.wait()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def image(sample_world):
    """A land-cover scene of the sample world, as a person would upload it."""
    return min(sample_world.scenes.rglob("*.png"))


def drive(browser, url: str, image: Path, bad_image: Path, out: Path) -> dict:
    node, chromium = browser
    command = [node, str(DRIVER), "--url", url, "--image", str(image), "--bad-image", str(bad_image), "--out", str(out),
               "--query", QUERY, "--preset", PRESET, "--chromium", chromium, "--timeout", "60000"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=DRIVE_TIMEOUT, check=False)
    assert done.returncode == 0, f"the browser driver failed:\n{_tail(done)}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_person_captions_classifies_and_searches(browser, served, space, image, tmp_path):
    shots = tmp_path / "screenshots"
    bad_image = tmp_path / "notes.png"
    bad_image.write_text("field notes, not an image")
    try:
        page = drive(browser, served.url, image, bad_image, shots)
    finally:
        artifacts = os.environ.get("EARTHVL_TEST_ARTIFACTS")
        if artifacts and shots.is_dir():
            shutil.copytree(shots, Path(artifacts) / "space-browser", dirs_exist_ok=True)
    app = DemoApp(resolve_settings(space))  # the folder's models and gallery, as the served app resolved them
    for path, shown in ((None, page["error_message"]), (str(bad_image), page["bad_image_message"])):
        with pytest.raises(EarthvlError) as refused:
            app.caption(path, page["caption_prompt"])
        assert shown.startswith("Error") and str(refused.value) in shown
    assert not page["traceback_shown"] and page["page_errors"] == []
    assert page["caption"] and page["caption"] == app.caption(str(image), page["caption_prompt"]).strip()
    scores = app.classify(str(image), "", PRESET)
    assert page["preset"] == PRESET and page["top_class"] in PRESETS[PRESET][0]
    assert page["top_class"] == max(scores, key=scores.get)
    assert page["gallery_items"] == DEFAULT_RESULTS
    assert page["gallery_files"] == [Path(path).name for path, _ in app.retrieve(QUERY, DEFAULT_RESULTS)]
    assert page["screenshots"] == [str(shots / f"{name}.png") for name in SCREENSHOTS]
    for path in page["screenshots"]:
        with Image.open(path) as shot:
            shot.verify()
            assert shot.format == "PNG" and shot.width >= 1000 and shot.height >= 600
    assert "Traceback" not in served.tail()

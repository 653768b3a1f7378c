"""`write_space`: a Space folder whose front matter the Hub reads (sdk, sdk_version = installed gradio, app_file),
whose requirements pin the installed versions, which imports its own copy of earthvl, carries the trained models
without checkpoints, hidden files or pickles and a gallery, and serves with `python app.py`; `earthvl publish
--space` sends it (against test_publish.py's recording HfApi)."""

import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from unittest import mock

import pytest
import test_publish
import yaml
from huggingface_hub import metadata_load
from packaging.requirements import Requirement
from packaging.version import Version

import earthvl
from earthvl import cli
from earthvl.errors import EarthvlError
from earthvl.hub import publish_space
from earthvl.model_names import resolve_model
from earthvl.space.folder import write_space
from earthvl.space.gallery import read_gallery

hub = test_publish.hub  # the recording HfApi fixture: created repos and commit operations
GALLERY_COUNT = 12
SERVE_TIMEOUT = 120


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """What `earthvl train` leaves: a full CLIP folder and a LoRA adapter on tiny-llava (its base named by the tiny
    model's cache folder), each with a checkpoint folder and a hidden file."""
    from peft import get_peft_model

    from earthvl.models.vlm import load_vlm, lora_config

    root = tmp_path_factory.mktemp("runs")
    clip = Path(shutil.copytree(resolve_model("tiny-clip"), root / "clip"))
    model, processor = load_vlm(resolve_model("tiny-llava"), dtype="float32")
    vlm = root / "vlm"
    get_peft_model(model, lora_config(r=4)).save_pretrained(vlm)
    processor.save_pretrained(vlm)
    for run in (clip, vlm):
        (run / "checkpoint-2").mkdir()
        (run / "checkpoint-2" / "optimizer.pt").write_bytes(b"pickled state")
        (run / ".scratch").write_text("local only")
    return {"vlm": vlm, "clip": clip}


@pytest.fixture(scope="module")
def space(runs, sample_gaia, tmp_path_factory):
    return write_space(
        tmp_path_factory.mktemp("space") / "space",
        vlm_model=str(runs["vlm"]),
        clip_model=str(runs["clip"]),
        gallery_source=sample_gaia,
        gallery_config="default",
        gallery_split="train",
        gallery_count=GALLERY_COUNT,
        title="earthvl test",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def space_env(port: int) -> dict[str, str]:
    """The environment of a Space on this machine: no PYTHONPATH, no earthvl settings (the folder's own defaults
    apply), Gradio on `port` of the loopback interface, nothing fetched from the Hub."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and (k == "EARTHVL_CACHE" or not k.startswith("EARTHVL_"))}
    return env | {
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }


class Served:
    """`python app.py` in a Space folder, serving on a free loopback port until `stop`."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}/"
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "app.py"], cwd=folder, env=space_env(self.port), stdout=out, stderr=subprocess.STDOUT
            )

    def wait(self, timeout: float = SERVE_TIMEOUT) -> float:
        """Seconds until the page answered 200; fails with the server log if it exits or takes longer."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                pytest.fail(f"python app.py exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return time.monotonic() - start
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"python app.py did not serve {self.url} within {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_front_matter_is_what_the_hub_reads(space, runs):
    readme = (space / "README.md").read_text()
    assert readme.startswith("---\n")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front == metadata_load(space / "README.md")
    assert front["sdk"] == "gradio" and front["sdk_version"] == metadata.version("gradio")
    assert front["app_file"] == "app.py" and (space / "app.py").is_file()
    assert front["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert {"title", "emoji", "colorFrom", "colorTo", "pinned", "license", "short_description"} <= set(front)
    assert len(front["short_description"]) <= 60  # the Hub's limit
    assert "models" not in front  # local folders and a tiny base: no Hub ids to link
    for text in ("EARTHVL_VLM_MODEL", "EARTHVL_CLIP_MODEL", "EARTHVL_GALLERY", f"copied from `{runs['vlm']}`"):
        assert text in readme
    assert f"earthvl {earthvl.__version__}" in readme


def test_requirements_pin_the_installed_versions(space):
    lines = [line for line in (space / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert all(line.count("==") == 1 and line == line.strip() for line in lines)
    assert pins == {name: Version(metadata.version(name)).public for name in pins}
    own = {Requirement(r).name for r in metadata.requires("earthvl") if "extra" not in r}
    assert set(pins) == own | {"gradio"} and "torch" in pins
    assert f"earthvl {earthvl.__version__}" in (space / "requirements.txt").read_text()


def test_the_folder_imports_its_own_copy_of_earthvl(space):
    probe = subprocess.run(
        [sys.executable, "-c", "import earthvl; print(earthvl.__file__)"],
        cwd=space, env=space_env(0), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(probe.stdout.strip()) == space / "earthvl" / "__init__.py"
    package = Path(earthvl.__file__).parent
    installed = {
        p.relative_to(package) for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    copied = {p.relative_to(space / "earthvl") for p in (space / "earthvl").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert copied == installed
    assert (space / "earthvl" / "__init__.py").read_bytes() == (package / "__init__.py").read_bytes()


def test_models_are_copied_without_checkpoints_or_hidden_files(space, runs):
    for slot, run in runs.items():
        expected = {
            p.relative_to(run) for p in run.rglob("*") if p.is_file() and not str(p.relative_to(run)).startswith((".", "checkpoint-"))
        }
        assert {p.relative_to(space / "models" / slot) for p in (space / "models" / slot).rglob("*") if p.is_file()} == expected
    adapter = json.loads((space / "models" / "vlm" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "tiny-llava"  # the Space builds it; the cache path is this machine's
    assert (space / "models" / "clip" / "model.safetensors").read_bytes() == (runs["clip"] / "model.safetensors").read_bytes()


def test_gallery_is_shipped(space, sample_gaia):
    images = read_gallery(space / "gallery")
    assert len(images) == GALLERY_COUNT and all(image.path.suffix == ".jpg" for image in images)
    assert f"holds {GALLERY_COUNT} images, from the built dataset `{sample_gaia}`" in (space / "README.md").read_text()


@pytest.mark.slow
def test_python_app_py_serves_the_space(space, tmp_path):
    served = Served(space, tmp_path / "app.log")
    try:
        served.wait()
        with urllib.request.urlopen(served.url + "gradio_api/info", timeout=10) as response:
            endpoints = json.load(response)["named_endpoints"]
        assert {"/caption", "/classify", "/retrieve"} <= set(endpoints)
    finally:
        served.stop()
    assert "Traceback" not in served.tail()


def test_hub_ids_become_app_defaults_the_settings_override(sample_gaia, tmp_path):
    out = write_space(tmp_path / "space", clip_model="earthvl/clip-rs", gallery_source=sample_gaia, gallery_config="default", gallery_count=3)
    assert metadata_load(out / "README.md")["models"] == ["earthvl/clip-rs"]
    assert not (out / "models").exists()
    with mock.patch.dict(os.environ):
        os.environ.pop("EARTHVL_VLM_MODEL", None), os.environ.pop("EARTHVL_CLIP_MODEL", None)
        runpy.run_path(str(out / "app.py"))  # not as __main__: sets the defaults, serves nothing
        assert os.environ["EARTHVL_CLIP_MODEL"] == "earthvl/clip-rs"
        assert "EARTHVL_VLM_MODEL" not in os.environ  # the app's own tiny fallback
    with mock.patch.dict(os.environ, {"EARTHVL_CLIP_MODEL": "tiny-clip"}):
        runpy.run_path(str(out / "app.py"))
        assert os.environ["EARTHVL_CLIP_MODEL"] == "tiny-clip"  # the Space's settings win


def test_pickles_are_refused_and_nothing_is_written(runs, sample_gaia, tmp_path):
    run = Path(shutil.copytree(runs["clip"], tmp_path / "clip"))
    (run / "training_args.bin").write_bytes(b"pickle")
    with pytest.raises(EarthvlError, match="pickled files.*training_args.bin"):
        write_space(tmp_path / "space", clip_model=str(run), gallery_source=sample_gaia, gallery_config="default", gallery_count=3)
    assert not (tmp_path / "space").exists() and os.listdir(tmp_path) == ["clip"]  # no staging folder left either


def test_models_the_space_cannot_run_are_refused(runs, sample_gaia, tmp_path):
    options = {"gallery_source": sample_gaia, "gallery_config": "default", "gallery_count": 3}
    with pytest.raises(EarthvlError, match="holds a clip model; the Space's vlm model must be LLaVA"):
        write_space(tmp_path / "space", vlm_model=runs["clip"], **options)
    adapter = Path(shutil.copytree(runs["vlm"], tmp_path / "vlm"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(tmp_path / "base")}))
    with pytest.raises(EarthvlError, match="names the local base model .*/base, which a Space cannot reach"):
        write_space(tmp_path / "space", vlm_model=adapter, **options)
    assert sorted(os.listdir(tmp_path)) == ["vlm"]


def test_only_an_earthvl_space_folder_is_replaced(sample_gaia, tmp_path):
    options = {"gallery_source": sample_gaia, "gallery_config": "default", "gallery_count": 3}
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(EarthvlError, match="is not an earthvl Space folder.*refusing to replace it"):
        write_space(other, overwrite=True, **options)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(EarthvlError, match="bad-model.*not a folder, a Hub id"):
        write_space(tmp_path / "space", clip_model="bad-model", **options)
    out = write_space(tmp_path / "space", title="first", **options)
    with pytest.raises(EarthvlError, match="already holds an earthvl Space folder; pass overwrite=True"):
        write_space(out, **options)
    write_space(out, title="second", overwrite=True, **options)
    assert metadata_load(out / "README.md")["title"] == "second"


def test_publish_space_sends_the_folder_to_a_gradio_space(space, hub):
    (space / ".gradio").mkdir(exist_ok=True)
    (space / ".gradio" / "flagged.csv").write_text("local only")
    (space / "earthvl" / "__pycache__").mkdir(exist_ok=True)
    (space / "earthvl" / "__pycache__" / "hub.cpython-311.pyc").write_bytes(b"bytecode")
    url = publish_space(space, "earthvl/demo", private=True)
    assert url.endswith("earthvl/demo/commit/abc")
    assert hub["repos"] == [("earthvl/demo", {"repo_type": "space", "space_sdk": "gradio", "private": True, "exist_ok": True})]
    ((repo_id, operations, kwargs),) = hub["commits"]
    assert repo_id == "earthvl/demo" and kwargs["repo_type"] == "space"
    sent = {op.path_in_repo for op in operations}
    assert {"README.md", "app.py", "requirements.txt", "gallery/gallery.json", "gallery/0000.jpg", "earthvl/__init__.py",
            "earthvl/space/app.py", "models/vlm/adapter_config.json", "models/clip/model.safetensors"} <= sent  # fmt: skip
    expected = {
        p.relative_to(space).as_posix()
        for p in space.rglob("*")
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(space).parts)
    }
    assert sent == expected


def test_cli_publishes_a_space_folder(space, hub, capsys):
    assert cli.main(["publish", str(space), "--space", "earthvl/demo"]) == 0
    assert "https://huggingface.co/spaces/earthvl/demo" in capsys.readouterr().out
    assert cli.main(["publish", str(space), "--repo", "earthvl/demo", "--repo_type", "space"]) == 0
    assert [kwargs["space_sdk"] for _, kwargs in hub["repos"]] == ["gradio", "gradio"]
    assert cli.main(["publish", str(space), "--repo", "earthvl/demo"]) == 2
    assert f"{space} is a Space folder: publish it with --space earthvl/demo" in capsys.readouterr().err
    assert cli.main(["publish", str(space), "--space", "earthvl/demo", "--repo_type", "model"]) == 2
    assert "leave out --repo and --repo_type" in capsys.readouterr().err
    assert len(hub["commits"]) == 2


def test_publish_space_refuses_pickles_and_non_space_folders(space, hub, tmp_path):
    with pytest.raises(EarthvlError, match="is not a Space folder: it has no README.md"):
        publish_space(tmp_path, "earthvl/demo")
    pickled = Path(shutil.copytree(space, tmp_path / "space"))
    (pickled / "models" / "clip" / "optimizer.pt").write_bytes(b"pickle")
    with pytest.raises(EarthvlError, match=r"pickled files.*models/clip/optimizer\.pt"):
        publish_space(pickled, "earthvl/demo")
    assert not hub["repos"] and not hub["commits"]

"""A ready-to-push Gradio Space folder for the earthvl demo: `write_space` (what `earthvl quickstart` ships).

    <out>/app.py             runs earthvl.space.app.serve_space for this folder (`python app.py`, as the Hub does)
    <out>/README.md          the Space's front matter (sdk, sdk_version, app_file, ...) and what it runs
    <out>/requirements.txt   earthvl's runtime requirements and gradio, pinned to the versions installed here
    <out>/earthvl/           a copy of the earthvl package that wrote the folder (earthvl is not on PyPI)
    <out>/gallery/           the retrieval tab's gallery (earthvl.space.gallery)
    <out>/models/vlm, clip   local model folders copied in (Hub ids and tiny names are app.py defaults instead)
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml
from huggingface_hub import metadata_load
from packaging.requirements import Requirement
from packaging.version import Version

import earthvl
from earthvl.atomic import staged_dir
from earthvl.cards.model_folder import read_model_folder
from earthvl.cards.naming import display_name, is_hub_id
from earthvl.dataset_folder import CARD_FILE
from earthvl.training_output import ADAPTER_CONFIG_FILE
from earthvl.errors import EarthvlError
from earthvl.models.families import CLIP, VLM, Family
from earthvl.hub import check_space_folder, model_files
from earthvl.models.tiny import TINY_MODELS
from earthvl.space.app import CLIP_DIR, CLIP_ENV, DEFAULT_CLIP, DEFAULT_VLM, GALLERY_DIR, GALLERY_ENV, VLM_DIR, VLM_ENV
from earthvl.space.gallery import make_gallery, read_gallery, sample_gallery

logger = logging.getLogger(__name__)

APP_FILE, REQUIREMENTS_FILE = "app.py", "requirements.txt"
PACKAGE = earthvl.__name__
"""earthvl's import name, distribution name, and the Space's folder holding its copy."""
SPACE_TAG = "earthvl"
"""The front-matter tag that marks a folder as written by `write_space` (and so safe to replace)."""
RUNTIME_EXTRAS = ("gradio",)
"""What the app needs beyond earthvl's own requirements."""
PACKAGE_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
FAMILIES = {"vlm": "llava", "clip": "clip"}
"""Slot -> the model family its tabs run."""


@dataclass(frozen=True)
class ModelChoice:
    """How one of the Space's models is supplied: copied into `folder`, or named by `source` as app.py's default."""

    env: str
    folder: str
    source: str
    copied: bool
    hub_ids: tuple[str, ...]
    note: str

    @property
    def default(self) -> str:
        return self.folder if self.copied else self.source


def write_space(
    out: str | Path,
    *,
    vlm_model: str | Path | None = None,
    clip_model: str | Path | None = None,
    gallery_source: str | Path | None = None,
    gallery_config: str | None = None,
    gallery_split: str = "test",
    gallery_count: int = 48,
    title: str = "earthvl demo",
    overwrite: bool = False,
) -> Path:
    """Write a Gradio Space folder to `out` that runs the earthvl demo with `python app.py`, locally or on the Hub.

    `vlm_model` and `clip_model` are local model folders (`earthvl train vlm|clip` output; copied in, checkpoints
    and hidden files left out, pickles refused), Hub ids or tiny model names (set as app.py's defaults, which the
    Space settings `EARTHVL_VLM_MODEL` / `EARTHVL_CLIP_MODEL` override); None means the tiny models. The gallery is
    cut from the built dataset `gallery_source` (folder or Hub id), else from the offline sample world. The folder
    appears complete or not at all; an existing folder is replaced only with `overwrite`, and only if `write_space`
    wrote it."""
    out = Path(out)
    _check_target(out, overwrite)
    models = [
        _model_choice(VLM, vlm_model or DEFAULT_VLM, VLM_ENV, VLM_DIR),
        _model_choice(CLIP, clip_model or DEFAULT_CLIP, CLIP_ENV, CLIP_DIR),
    ]
    requirements = space_requirements()
    with staged_dir(out, replace=True) as staging:
        shutil.copytree(Path(earthvl.__file__).parent, staging / PACKAGE, ignore=PACKAGE_SKIPPED)
        for choice in models:
            if choice.copied:
                _copy_model(Path(choice.source), staging / choice.folder)
        gallery = staging / GALLERY_DIR
        if gallery_source is None:
            shutil.copytree(sample_gallery(), gallery)
        else:
            make_gallery(gallery_source, gallery, config=gallery_config, split=gallery_split, count=gallery_count)
        (staging / REQUIREMENTS_FILE).write_text(_requirements_text(requirements))
        (staging / APP_FILE).write_text(_app_text(models))
        (staging / CARD_FILE).write_text(_readme(title, models, gallery, gallery_source, requirements))
        logger.info("Space folder %s: %s in all", out, _size(staging))
    return out


def _check_target(out: Path, overwrite: bool) -> None:
    """Refuse to write over anything but an empty folder or, with `overwrite`, a Space folder `write_space` wrote."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise EarthvlError(f"{out} exists and is not a folder")
    try:
        ours = SPACE_TAG in (check_space_folder(out).get("tags") or [])
    except EarthvlError:
        ours = False
    if not ours:
        raise EarthvlError(
            f"{out} is not empty and is not an earthvl Space folder (no {CARD_FILE} tagged {SPACE_TAG!r} with an "
            f"{APP_FILE}); refusing to replace it: name a new or empty folder"
        )
    if not overwrite:
        raise EarthvlError(f"{out} already holds an earthvl Space folder; pass overwrite=True (--overwrite) to replace it")


def _model_choice(slot: Family, name: str | Path, env: str, folder: str) -> ModelChoice:
    """Where the `slot` model comes from: a local folder is copied (checked to be of the family the tab runs); a
    Hub id or tiny name becomes app.py's default."""
    path = Path(name).expanduser()
    if path.is_dir():
        model = read_model_folder(path)
        if model.family not in (None, slot.name):
            raise EarthvlError(f"{path} holds a {model.family} model; the Space's {slot.name} model must be {slot.display}")
        base = model.base_model if model.adapter else None
        what = f"a PEFT adapter on `{display_name(base)}`" if base else "a full model"
        hub_ids = (base,) if is_hub_id(base) else ()
        return ModelChoice(env, folder, str(path), True, hub_ids, f"copied from `{path}`, {what}")
    name = str(name)
    if name in TINY_MODELS:
        return ModelChoice(env, folder, name, False, (), "a tiny model with random weights, built on startup")
    if is_hub_id(name):
        return ModelChoice(env, folder, name, False, (name,), f"from the Hub: https://huggingface.co/{name}")
    raise EarthvlError(f"{slot.name} model {name!r} is not a folder, a Hub id (ORG/NAME) or a tiny model ({', '.join(TINY_MODELS)})")


def _copy_model(source: Path, target: Path) -> None:
    """Copy a trained model folder's publishable files (`earthvl.hub.model_files`). An adapter on a tiny model's
    cache folder gets the tiny name as its base, which the Space builds; any other local base is refused."""
    for name, path in model_files(source).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / name)
    base = read_model_folder(source).base_model
    if base is not None and not is_hub_id(base):
        if display_name(base) not in TINY_MODELS:
            raise EarthvlError(
                f"{source / ADAPTER_CONFIG_FILE} names the local base model {base}, which a Space cannot reach: publish "
                "the base to the Hub and set base_model_name_or_path to its id, or merge the adapter (--merge_adapter)"
            )
        config = json.loads((target / ADAPTER_CONFIG_FILE).read_text())
        config["base_model_name_or_path"] = display_name(base)
        (target / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    logger.info("Space %s: copied %s from %s", target.relative_to(target.parent.parent), _size(target), source)


def _size(folder: Path) -> str:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return f"{len(files)} files, {sum(path.stat().st_size for path in files) / 1e6:.1f} MB"


def space_requirements() -> dict[str, str]:
    """Package -> installed version of what the Space needs at runtime: earthvl's own requirements (no extras) and
    gradio. Versions lose their local build tag (torch's `+cpu`): the Space installs the PyPI wheel."""
    names = [
        requirement.name
        for requirement in map(Requirement, metadata.requires(PACKAGE) or ())
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""})
    ]
    pins = {}
    for name in [*names, *RUNTIME_EXTRAS]:
        try:
            pins[name] = Version(metadata.version(name)).public
        except metadata.PackageNotFoundError as error:
            raise EarthvlError(f"{name} is not installed, so the Space's requirements cannot pin it: pip install {name}") from error
    return pins


def _requirements_text(pins: dict[str, str]) -> str:
    return (
        f"# The earthvl demo's runtime requirements, pinned to the versions earthvl {earthvl.__version__} wrote this "
        "folder with.\n# earthvl itself is the copy in earthvl/. torch: a CPU Space installs PyPI's default wheel.\n"
        + "".join(f"{name}=={version}\n" for name, version in pins.items())
    )


def _app_text(models: list[ModelChoice]) -> str:
    """app.py: the models named by id (not the app's own tiny fallbacks) become defaults of the settings."""
    fallbacks = {VLM_ENV: DEFAULT_VLM, CLIP_ENV: DEFAULT_CLIP}
    defaults = "".join(
        f"os.environ.setdefault({m.env!r}, {m.source!r})\n" for m in models if not m.copied and m.source != fallbacks[m.env]
    )
    imports = "import os\n\n" if defaults else ""
    settings = "# Defaults; the Space's settings (environment variables) override them.\n" + defaults if defaults else ""
    return (
        f'"""The earthvl demo Space, written by earthvl {earthvl.__version__}: `python app.py` serves it."""\n\n'
        f"{imports}from earthvl.space.app import serve_space\n\n{settings}\n"
        'if __name__ == "__main__":\n    serve_space(__file__)\n'
    )


def _readme(
    title: str, models: list[ModelChoice], gallery: Path, gallery_source: str | Path | None, pins: dict[str, str]
) -> str:
    images = read_gallery(gallery)
    dataset_ids = [str(gallery_source)] if gallery_source is not None and is_hub_id(str(gallery_source)) else []
    front = {
        "title": title,
        "emoji": "🛰️",
        "colorFrom": "blue",
        "colorTo": "green",
        "sdk": "gradio",
        "sdk_version": pins["gradio"],
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "app_file": APP_FILE,
        "pinned": False,
        "license": "apache-2.0",
        "short_description": "Remote-sensing captioning, classification and retrieval",
        "tags": [SPACE_TAG, "remote-sensing", "vision-language"],
    }
    hub_models = [hub_id for choice in models for hub_id in choice.hub_ids]
    if hub_models:
        front["models"] = hub_models
    if dataset_ids:
        front["datasets"] = dataset_ids
    rows = [f"| `{m.env}` | `{m.default}`: {m.note} |" for m in models]
    rows.append(f"| `{GALLERY_ENV}` | `{GALLERY_DIR}`: {len(images)} images, {_gallery_origin(gallery_source)} |")
    credits = sorted({image.credits for image in images if image.credits}) if gallery_source is not None else []
    credit_text = "Image credits:\n\n" + "".join(f"- {credit}\n" for credit in credits) + "\n" if credits else ""
    return (
        f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n"
        f"# {title}\n\n"
        "A remote-sensing vision-language demo of earthvl:\n\n"
        "- **Caption**: a LLaVA-style model answers a prompt about an uploaded image.\n"
        "- **Classify**: CLIP zero-shot classification against typed labels or a preset (EuroSAT, RESISC45, land "
        "cover).\n"
        "- **Retrieve**: CLIP text-to-image search over the gallery shipped in `gallery/`.\n\n"
        "## Settings\n\n"
        "Each model and the gallery can be changed in the Space's settings (variables), without a new commit: a "
        f"Hub id, a tiny model name (`{DEFAULT_VLM}`, `{DEFAULT_CLIP}`) or a folder of this repository.\n\n"
        "| Variable | Default in this Space |\n|---|---|\n" + "\n".join(rows) + "\n\n"
        "## Gallery\n\n"
        f"`{GALLERY_DIR}/` holds {len(images)} images, {_gallery_origin(gallery_source)}, with their captions in "
        f"`{GALLERY_DIR}/gallery.json`.\n\n{credit_text}"
        "## Running it\n\n"
        f"Written by earthvl {earthvl.__version__}, whose code is copied in `{PACKAGE}/` (earthvl is not on "
        f"PyPI); `{REQUIREMENTS_FILE}` pins what it was written with. Locally:\n\n"
        f"```bash\npip install -r {REQUIREMENTS_FILE}\npython {APP_FILE}\n```\n"
    )


def _gallery_origin(source: str | Path | None) -> str:
    if source is None:
        return "synthetic scenes of earthvl's offline sample world (generated, not real imagery)"
    if is_hub_id(str(source)):
        return f"from the dataset [`{source}`](https://huggingface.co/datasets/{source}) (see its card for the licence)"
    card = Path(source) / CARD_FILE
    licence = (metadata_load(card) or {}).get("license") if card.is_file() else None
    return f"from the built dataset `{source}`" + (f" (licence: {licence})" if licence else "")

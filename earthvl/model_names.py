"""What a model name given to an entry point (a command, the eval loader, the demo) stands for, resolved once there:
a tiny model name becomes the folder of its cached build, any other name (Hub id, local folder) passes through.

The tiny models' tokenizer is trained on the sample world's texts, so this module sits above both `earthvl.sample`
and the tiny-model factory (`earthvl.models.tiny`); the loaders below it take paths and Hub ids only.
"""

from __future__ import annotations

from earthvl.atomic import staged_dir
from earthvl.cache import cache_dir
from earthvl.models.tiny import TINY_MODELS, TINY_MODELS_VERSION, build_tiny
from earthvl.sample import sample_corpus


def resolve_model(name_or_path: str) -> str:
    """Turn a tiny model name into the path of its cached build; return anything else unchanged.

    A name in ``TINY_MODELS`` is built once into ``$EARTHVL_CACHE/tiny/<name>-v<version>`` (default cache:
    ``~/.cache/earthvl``). Hub ids and local paths go through untouched, for ``from_pretrained`` to resolve
    (honouring ``HF_HUB_OFFLINE`` and friends).
    """
    if name_or_path not in TINY_MODELS:
        return name_or_path
    target = cache_dir() / "tiny" / f"{name_or_path}-v{TINY_MODELS_VERSION}"
    if not target.is_dir():
        with staged_dir(target, replace=False) as staging:
            build_tiny(name_or_path, staging, sample_corpus())
    return str(target)

"""Where GAIA's pixels come from: img2dataset WebDataset shards, a folder of `<id>.<ext>`, or the source websites.

Every source answers `find(id)` with the image bytes or raises `Skip` with the reason; what went wrong with a
shard as a whole (a truncated tar, an unreadable `.json` member) or a file (a second image of one id) is listed in
`problems`. Ids are matched exactly by their decimal or string form (`5` matches `"5"`, never `5.9` or `true`).
"""

from __future__ import annotations

import io
import json
import os
import reprlib
import tarfile
from pathlib import Path
from typing import Any, Mapping

from PIL import Image as PILImage

from earthvl.builders.folder import Skip
from earthvl.builders.gaia import layout
from earthvl.images import PIL_ERRORS

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".bmp")
FORMAT_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "TIFF": "tif", "BMP": "bmp"}


class ShardImages:
    """Images inside a split's img2dataset shards (`{split}/NNNNN.tar`), matched by the `id` in each `.json` member.

    Only headers are read up front; image bytes are read at their offsets when asked for."""

    kind = "webdataset"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problems: list[dict[str, Any]] = []
        self._index: dict[str, tuple[Path, int, int, str]] = {}
        shards = sorted(folder.glob("*.tar")) if folder.is_dir() else []
        for shard in shards:
            self._index_shard(shard)
        self.shards = len(shards)
        self.failed_downloads = sum(_failed_downloads(stats, self.problems) for stats in sorted(folder.glob("*_stats.json")))

    def _index_shard(self, shard: Path) -> None:
        size = shard.stat().st_size
        images: dict[str, tuple[int, int, str]] = {}
        ids: dict[str, str] = {}
        try:
            with tarfile.open(shard, "r:") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.rpartition("/")[2].partition(".")
                    if member.offset_data + member.size > size:
                        self.problems.append({"shard": str(shard), "member": member.name, "problem": "truncated: data runs past the end of the file"})
                        break
                    if f".{ext.lower()}" in IMAGE_EXTENSIONS:
                        images[key] = (member.offset_data, member.size, ext.lower())
                    elif ext == "json":
                        sample_id = _sample_id(archive.extractfile(member).read(), shard, member.name, self.problems)
                        if sample_id is not None:
                            ids[key] = sample_id
        except (tarfile.TarError, EOFError, OSError) as error:
            self.problems.append({"shard": str(shard), "problem": f"unreadable after {len(ids)} samples: {error}"})
        for key, sample_id in ids.items():
            if key not in images:
                continue
            if sample_id in self._index:
                problem = f"duplicate sample id {sample_id} (the first one is used)"
                self.problems.append({"shard": str(shard), "member": f"{key}.json", "problem": problem})
            else:
                self._index[sample_id] = (shard, *images[key])

    def __len__(self) -> int:
        return len(self._index)

    def find(self, sample_id: int | str) -> tuple[bytes, str]:
        entry = self._index.get(str(sample_id))
        if entry is None:
            raise Skip(
                f"no image with id {sample_id} in the shards of {self.folder} (img2dataset counted "
                f"{self.failed_downloads} failed downloads in *_stats.json)"
            )
        shard, offset, size, ext = entry
        with shard.open("rb") as file:
            file.seek(offset)
            data = file.read(size)
        if len(data) != size:
            raise Skip(f"image of id {sample_id} is cut short in {shard}")
        return data, ext


def _sample_id(data: bytes, shard: Path, member: str, problems: list[dict[str, Any]]) -> str | None:
    """The id in a sample's `.json` member, in its decimal or string form; None (and a problem) when it has none."""
    try:
        sample_id = json.loads(data)["id"]
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        problems.append({"shard": str(shard), "member": member, "problem": f"unreadable sample metadata: {error!r}"})
        return None
    if isinstance(sample_id, int) and not isinstance(sample_id, bool):
        return str(sample_id)
    if isinstance(sample_id, str) and sample_id:
        return sample_id
    problem = f"sample id is not an integer or a string (got {reprlib.repr(sample_id)})"
    problems.append({"shard": str(shard), "member": member, "problem": problem})
    return None


def _failed_downloads(path: Path, problems: list[dict[str, Any]]) -> int:
    try:
        return int(json.loads(path.read_bytes()).get("failed_to_download", 0))
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as error:
        problems.append({"file": str(path), "problem": f"unreadable img2dataset stats: {error!r}"})
        return 0


class FolderImages:
    """Images named `<id>.<ext>` in one folder (what `--images fetch` writes, or a user's own download)."""

    kind = "folder"

    def __init__(self, folder: Path, failures: Mapping[str, str] | None = None) -> None:
        self.folder = folder
        self.failures = dict(failures or {})
        self.failed_downloads = len(self.failures)
        self.problems: list[dict[str, Any]] = []
        self._index: dict[str, Path] = {}
        names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file()) if folder.is_dir() else []
        for name in names:
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            first = self._index.setdefault(stem, folder / name)
            if first.name != name:
                problem = f"a second image of id {stem} ({first.name} is used)"
                self.problems.append({"file": str(folder / name), "problem": problem})

    def __len__(self) -> int:
        return len(self._index)

    def find(self, sample_id: int | str) -> tuple[bytes, str]:
        path = self._index.get(str(sample_id))
        if path is None:
            raise Skip(self.failures.get(str(sample_id)) or f"no image {sample_id}.<ext> in {self.folder}")
        return path.read_bytes(), path.suffix[1:].lower()


def split_images(source: Path, split: str) -> ShardImages:
    """The shards of a split, in `{split}/` beside the metadata JSON as the official recipe writes them."""
    return ShardImages(source / layout.shard_dir(split))


def image_column(data: bytes, sample_id: int | str, ext: str, *, resize: int | None, max_pixels: int) -> tuple[dict[str, Any], bool]:
    """The `image` cell for one image, decoded once to prove it intact; (cell, whether it was resized).

    Without `resize` the original bytes pass through untouched. With it, images whose shortest side exceeds
    `resize` are downscaled to it and re-encoded in their own format; smaller ones are kept as they are (never
    upscaled)."""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise Skip(f"image is {width}x{height} px, over the limit of {max_pixels:,} pixels (max_pixels)")
            if image.format == "JPEG" and not resize:
                image.draft("RGB", (max(width // 8, 1), max(height // 8, 1)))  # reads every byte, decodes 1/8 scale
            image.load()
            if not resize or min(width, height) <= resize:
                return {"bytes": data, "path": f"{sample_id}.{ext}"}, False
            return _resized(image, sample_id, resize), True
    except PIL_ERRORS as error:
        raise Skip(f"corrupt image {sample_id}.{ext}: {error}") from error


def _resized(image: PILImage.Image, sample_id: int | str, shortest: int) -> dict[str, Any]:
    scale = shortest / min(image.size)
    size = (max(round(image.width * scale), 1), max(round(image.height * scale), 1))
    fmt = image.format if image.format in ("JPEG", "WEBP") else "PNG"
    if image.mode not in ("RGB", "RGBA", "L", "LA") or (fmt == "JPEG" and image.mode != "RGB"):
        image = image.convert("RGBA" if fmt == "PNG" and "A" in image.getbands() else "RGB")
    out = io.BytesIO()
    image.resize(size, PILImage.Resampling.LANCZOS).save(out, format=fmt, **({"quality": 95} if fmt != "PNG" else {}))
    return {"bytes": out.getvalue(), "path": f"{sample_id}.{FORMAT_EXTENSIONS[fmt]}"}



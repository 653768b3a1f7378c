"""Write the offline sample world (and optionally the tiny models): `earthvl sample`.

    earthvl sample --out sample --tiles 64 --seed 0 --zip --models --label_maps
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.sample import LABELS_DIR, generate_sample


@dataclass
class SampleArguments:
    """Options of `earthvl sample`."""

    out: str = field(metadata={"help": "Folder to write the sample world into (created if missing)."})
    tiles: int = field(
        default=64,
        metadata={"help": "ChatEarthNet tiles of 512 px; each gives four 256 px patches, split 60/10/30 by tile."},
    )
    gaia_images: int | None = field(
        default=None, metadata={"help": "GAIA scenes to generate, split 70/10/20 (default: as many as --tiles)."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed; the same seed gives byte-identical files."})
    zip: bool = field(
        default=False, metadata={"help": "Also pack ChatEarthNet into the four Zenodo zips under chatearthnet_zenodo/."}
    )
    models: bool = field(
        default=False,
        metadata={"help": "Also build the tiny LLaVA, CLIP and BLIP-2 models (tokenizer trained on the sample texts)."},
    )
    label_maps: bool = field(
        default=False,
        metadata={"help": "Also write each ChatEarthNet patch's land-cover map (colour PNG, named like the patch) under "
                  "chatearthnet_labels/, for `earthvl eval faithfulness --labels`."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace a sample world already in --out."})
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})


def make_parser(prog: str = "earthvl sample") -> TrlParser:
    return TrlParser(SampleArguments, prog=prog, description=__doc__.splitlines()[0])


def main(args: SampleArguments) -> int:
    world = generate_sample(
        args.out,
        args.tiles,
        args.seed,
        gaia_images=args.gaia_images,
        zip_archives=args.zip,
        models=args.models,
        label_maps=args.label_maps,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    patches = world.chatearthnet.patches
    scenes = world.gaia.scenes
    print(f"Sample world (seed {args.seed}) written to {world.root}")
    print(f"  ChatEarthNet: {len(patches)} patches, 9 bands, in {world.chatearthnet.root}")
    print(f"  GAIA:         {len(scenes)} records, {sum(s.downloaded for s in scenes)} images in shards, in {world.gaia.root}")
    labelled = list(world.scenes.glob("*/*.png"))
    classes = len({p.parent for p in labelled})
    print(f"  Scenes:       {len(labelled)} test patches in {classes} land-cover classes, in {world.scenes}")
    if args.label_maps:
        print(f"  Land cover:   {len(patches)} maps, in {world.root / LABELS_DIR}")
    for path in world.zips:
        print(f"  Zenodo zip:   {path}")
    for name, path in world.models.items():
        print(f"  model {name}: {path}")
    return 0

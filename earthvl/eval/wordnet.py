"""WordNet 3.0 for NLTK's METEOR without a download at run time.

NLTK reads WordNet from its data folders (`python -m nltk.downloader wordnet`). Where that is missing, a WordNet 3.0
database folder (Debian's `wordnet-base` in /usr/share/wordnet, Princeton's /usr/local/WordNet-3.0/dict, or
`$WNSEARCHDIR`) is copied once into the earthvl cache with the `lexnames` table NLTK's reader needs and those
databases lack (the lexicographer-file list of lexnames(5WN), fixed for WordNet 3.0).
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from earthvl.atomic import staged_dir
from earthvl.cache import cache_dir
from earthvl.errors import EarthvlError

# The 45 lexicographer files of WordNet 3.0, numbered from 00 in this order (lexnames(5WN)).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}  # the syntactic category column of lexnames
_POS = tuple(_CATEGORY)
REQUIRED_FILES = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in _POS) + tuple(f"{p}.exc" for p in _POS)
# read by NLTK only for sense keys and lemma counts, which METEOR does not use; copied when present
OPTIONAL_FILES = ("cntlist.rev", "index.sense")

HOW_TO_GET = (
    "get it with `python -m nltk.downloader wordnet` (NLTK's copy), or install a WordNet 3.0 database "
    "(Debian/Ubuntu: `apt-get install wordnet-base`), or set WNSEARCHDIR to a WordNet 3.0 `dict` folder"
)


def database_folders() -> list[Path]:
    """Where a WordNet 3.0 database may be, in the order they are tried: `$WNSEARCHDIR`, `$WNHOME/dict`, the usual
    system folders."""
    folders = []
    if os.environ.get("WNSEARCHDIR"):
        folders.append(Path(os.environ["WNSEARCHDIR"]))
    if os.environ.get("WNHOME"):
        folders.append(Path(os.environ["WNHOME"]) / "dict")
    return folders + [Path("/usr/share/wordnet"), Path("/usr/local/WordNet-3.0/dict")]


def is_wordnet30(folder: Path) -> bool:
    """Whether `folder` holds every file of a WordNet 3.0 database that NLTK's reader opens (`lexnames` aside)."""
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    with open(folder / "data.adj", "rb") as header:
        return b"WordNet 3.0 Copyright" in header.read(4096)


def prepared_folder(database: Path) -> Path:
    """The NLTK-readable copy of the WordNet 3.0 `database` in the earthvl cache, made on first use."""
    target = cache_dir() / "wordnet-3.0"
    if not (target / "lexnames").is_file():
        with staged_dir(target, replace=False) as staging:
            for name in REQUIRED_FILES + OPTIONAL_FILES:
                if (database / name).is_file():
                    shutil.copyfile(database / name, staging / name)
            lines = [f"{number:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for number, name in enumerate(LEXNAMES)]
            (staging / "lexnames").write_text("".join(lines), encoding="ascii")
    return target


def load_database(database: Path) -> WordNetCorpusReader:
    """NLTK's reader of the WordNet 3.0 `database` folder, through its prepared copy in the earthvl cache."""
    root = str(prepared_folder(database).resolve())
    if root not in nltk.data.path:
        nltk.data.path.append(root)  # NLTK refuses to open corpus files outside its data path
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The multilingual functions are not available")
        return _WordNet30Reader(root, None)


class _WordNet30Reader(WordNetCorpusReader):
    """A WordNet 3.0 database folder read as NLTK's own `wordnet` corpus.

    NLTK maps a loaded WordNet onto its `wordnet` corpus (WordNet 3.0) through the `index.sense` files of both; this
    database is WordNet 3.0 itself, so there is nothing to map (and system databases often come without `index.sense`).
    """

    def map_wn(self, version="wordnet"):
        return None


@functools.cache
def wordnet() -> WordNetCorpusReader:
    """NLTK's WordNet 3.0 reader, loaded once per process: NLTK's own data if installed, else a prepared system copy.

    Raises EarthvlError, saying how to get WordNet, when neither exists.
    """
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        pass
    else:
        from nltk.corpus import wordnet as nltk_wordnet

        nltk_wordnet.ensure_loaded()
        return nltk_wordnet

    folders = database_folders()
    database = next((folder for folder in folders if is_wordnet30(folder)), None)
    if database is None:
        searched = ", ".join(str(folder) for folder in folders)
        raise EarthvlError(
            f"METEOR (protocol hf) needs WordNet 3.0 and found none: NLTK has no corpora/wordnet and there is no "
            f"WordNet 3.0 database in {searched}; {HOW_TO_GET}"
        )
    return load_database(database)

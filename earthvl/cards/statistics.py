"""Caption statistics per text source, as in Table IV of the GAIA paper (vocabulary, hapax legomena, lengths)."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from earthvl.errors import EarthvlError

WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")
"""A word: a run of letters/digits, optionally joined by inner `'`, `’`, `-` or `.`.

So "river's", "north-east", "2.5" and "U.S." (as "u.s") are one word each; punctuation alone is not a word.
"""

SENTENCE_END = re.compile(r"[.!?]+[\"')\]”’]*$")
"""Sentence-final punctuation, with any closing quotes/brackets, at the end of a whitespace-separated token."""

INITIALISM = re.compile(r"(?:[^\W\d_]\.){2,}")
ABBREVIATIONS = frozenset({"e.g.", "i.e.", "approx.", "ca.", "vs.", "mt.", "st.", "fig.", "mr.", "dr."})
"""Lower-case abbreviations whose final dot does not end a sentence, besides initialisms like "U.S."."""


@dataclass(frozen=True)
class CaptionStatistics:
    """Corpus statistics of one text source; lengths are in words (see `words`) per caption."""

    captions: int
    vocabulary: int
    hapax: int
    total_words: int
    words_min: int
    words_max: int
    words_mean: float
    words_median: float
    words_std: float
    """Population standard deviation (ddof=0, numpy's default): the corpus is the whole population described."""
    sentences_mean: float

    def as_dict(self) -> dict[str, float | int]:
        """The statistics as a plain dict, field name -> value."""
        return dataclasses.asdict(self)


TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("captions", "captions"),
    ("vocabulary", "vocabulary"),
    ("hapax legomena", "hapax"),
    ("total words", "total_words"),
    ("words/caption min", "words_min"),
    ("words/caption max", "words_max"),
    ("words/caption mean", "words_mean"),
    ("words/caption median", "words_median"),
    ("words/caption std", "words_std"),
    ("sentences/caption", "sentences_mean"),
)
"""Row label -> `CaptionStatistics` field, in the order of the paper's table."""


def words(text: str) -> list[str]:
    """Lower-case word tokens of `text`, matched by `WORD`."""
    return WORD.findall(text.lower())


def sentences(text: str) -> int:
    """Number of sentences: pieces of `text` ended by `.`, `!` or `?` before whitespace or the end.

    Decimals ("2.5") never split, since their dot is not followed by whitespace; nor do initialisms ("U.S.") and
    the `ABBREVIATIONS`, which means a sentence that really ends with one is merged with the next. Pieces without
    a word are not counted, but a text with any non-space character has at least one sentence.
    """
    count = 0
    has_word = False
    for token in text.split():
        has_word = has_word or WORD.search(token) is not None
        if SENTENCE_END.search(token) and not _abbreviation(token):
            count += has_word
            has_word = False
    count += has_word
    return max(count, 1) if text.strip() else 0


def _abbreviation(token: str) -> bool:
    token = token.lower().strip("\"'()[]“”‘’")
    return token in ABBREVIATIONS or INITIALISM.fullmatch(token) is not None


def caption_statistics(texts: Iterable[str]) -> CaptionStatistics:
    """Statistics of a corpus of captions, read in one pass (so `texts` may be a generator)."""
    counts: Counter[str] = Counter()
    lengths: list[int] = []
    sentence_total = 0
    for text in texts:
        tokens = words(text)
        counts.update(tokens)
        lengths.append(len(tokens))
        sentence_total += sentences(text)
    if not lengths:
        raise EarthvlError("caption_statistics got no texts")
    array = np.asarray(lengths)
    return CaptionStatistics(
        captions=len(lengths),
        vocabulary=len(counts),
        hapax=sum(1 for count in counts.values() if count == 1),
        total_words=int(array.sum()),
        words_min=int(array.min()),
        words_max=int(array.max()),
        words_mean=float(array.mean()),
        words_median=float(np.median(array)),
        words_std=float(array.std()),
        sentences_mean=sentence_total / len(lengths),
    )


def _format(value: float | int) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def statistics_table(stats: Mapping[str, CaptionStatistics]) -> str:
    """A Markdown table with one column per text source (e.g. "synthetic captions", "alt text")."""
    if not stats:
        raise EarthvlError("statistics_table got no text sources")
    sources = list(stats)
    lines = [
        "| | " + " | ".join(sources) + " |",
        "|---|" + "---:|" * len(sources),
    ]
    for label, field in TABLE_ROWS:
        cells = [_format(getattr(stats[source], field)) for source in sources]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

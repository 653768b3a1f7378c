"""Caption statistics (GAIA paper, Table IV) on a corpus small enough to count by hand."""

import math

import pytest

from earthvl.cards.statistics import caption_statistics, sentences, statistics_table, words
from earthvl.errors import EarthvlError

CORPUS = [
    "The river floods the valley.",  # 5 words, 1 sentence
    "Smoke drifts east. The U.S. coast is 2.5 km away!",  # 10 words, 2 sentences
    "River delta",  # 2 words, 1 sentence
    "Snow-covered peaks, aren't they?",  # 4 words, 1 sentence
]


def test_words_keep_inner_punctuation_and_drop_bare_punctuation():
    assert words("North-east of the river's mouth, 2.5 km from the U.S. border -- see?") == [
        "north-east", "of", "the", "river's", "mouth", "2.5", "km", "from", "the", "u.s", "border", "see",
    ]
    assert words("--- !! ...") == []


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("The U.S. coast is 2.5 km away. It floods!", 2),
        ("A lake, e.g. a reservoir. Dry land", 2),
        ('He said "Stop." Then left? Yes', 3),
        ("no final punctuation", 1),
        ("...", 1),
        ("   ", 0),
    ],
)
def test_sentences(text, count):
    assert sentences(text) == count


def test_statistics_of_a_hand_counted_corpus():
    stats = caption_statistics(text for text in CORPUS)  # a generator: one pass
    # the x3, river x2, then 16 words once each
    assert stats.captions == 4
    assert stats.vocabulary == 18
    assert stats.hapax == 16
    assert stats.total_words == 21
    assert (stats.words_min, stats.words_max) == (2, 10)
    assert stats.words_mean == pytest.approx(21 / 4)
    assert stats.words_median == pytest.approx(4.5)
    lengths = [5, 10, 2, 4]
    assert stats.words_std == pytest.approx(math.sqrt(sum((n - 5.25) ** 2 for n in lengths) / 4))  # ddof=0
    assert stats.sentences_mean == pytest.approx(5 / 4)
    assert stats.as_dict()["hapax"] == 16 and len(stats.as_dict()) == 10


def test_table_has_one_column_per_source_and_formatted_numbers():
    table = statistics_table(
        {"synthetic captions": caption_statistics(CORPUS), "alt text": caption_statistics(["word " * 1234])}
    )
    lines = table.splitlines()
    assert lines[0] == "| | synthetic captions | alt text |"
    assert len(lines) == 2 + 10
    assert "| total words | 21 | 1,234 |" in lines
    assert "| hapax legomena | 16 | 0 |" in lines
    assert "| words/caption mean | 5.25 | 1,234.00 |" in lines
    assert "| words/caption median | 4.50 | 1,234.00 |" in lines
    assert "| words/caption std | 2.95 | 0.00 |" in lines
    assert "| sentences/caption | 1.25 | 1.00 |" in lines


def test_empty_input_is_an_error():
    with pytest.raises(EarthvlError, match="no texts"):
        caption_statistics([])
    with pytest.raises(EarthvlError):
        statistics_table({})
    blank = caption_statistics([""])  # one caption without words is not empty input
    assert (blank.captions, blank.vocabulary, blank.words_max, blank.sentences_mean) == (1, 0, 0, 0.0)

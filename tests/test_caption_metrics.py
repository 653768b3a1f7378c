"""Caption metrics: the coco protocol against pycocoevalcap's own pipeline, the hf protocol against rouge_score and
NLTK, and both against hand-computed values."""

import re
import shutil
import subprocess

import nltk
import numpy as np
import pytest
from rouge_score.rouge_scorer import RougeScorer

from earthvl.errors import EarthvlError
from earthvl.eval import wordnet as wordnet_module
from earthvl.eval.caption_scores import PROTOCOLS, _ptb_tokenize, caption_metrics, nltk_words
from earthvl.eval.metrics import corpus_bleu

# Empty and punctuation-only captions, accents, Chinese and emoji, brackets and quotes, METEOR's field separator,
# line breaks, references given as one string, as a one-element list and as several.
PREDICTIONS = [
    "A man riding a horse on the beach.",
    "",
    "...!?",
    "Café über 北京 🙂 naïve",
    "🙂",
    'Two dogs (a puppy) play in the "snow".',
    "flooded fields|||near the river",
    "smoke drifting\ntoward the\r\neast\u2028of the city",
    "The U.S. coast, e.g. near Miami.",
]
REFERENCES = [
    ["A man rides a horse along the beach.", "a person on a horse by the sea"],
    "a cat sleeping on a sofa",
    ["!!!"],
    ["Cafe uber Beijing", "café über 北京"],
    ["a smiling face", ""],
    ["Two dogs are playing in the snow.", "dogs playing in the snow", "puppies"],
    ["flooded fields near a river ||| x", "a flood"],
    ["smoke drifting toward the east", "a plume of smoke over a city"],
    ["the coast of the U.S. near Miami"],
]
COCO_KEYS = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"]


def _as_lists(references):
    return [[refs] if isinstance(refs, str) else list(refs) for refs in references]


def _pycocoevalcap(predictions, references):
    """The COCO caption toolkit run the standard way (COCOEvalCap.evaluate without SPICE)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": ref} for ref in refs] for i, refs in enumerate(references)})
    res = tokenizer.tokenize({i: [{"caption": prediction}] for i, prediction in enumerate(predictions)})
    bleu, _ = Bleu(4).compute_score(gts, res)
    meteor = Meteor()
    meteor_score, _ = meteor.compute_score(gts, res)
    del meteor  # its __del__ ends the Java process
    rouge_l, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return dict(zip(COCO_KEYS, [*bleu, meteor_score, rouge_l, cider]))


@pytest.fixture(scope="module")
def coco_pair():
    ours = caption_metrics(PREDICTIONS, REFERENCES, "coco")
    # pycocoevalcap only turns \n into spaces; a \r or \u2028 would shift every later caption by a line
    one_line = [" ".join(prediction.split()) for prediction in PREDICTIONS]
    return ours, _pycocoevalcap(one_line, _as_lists(REFERENCES))


@pytest.mark.slow
def test_coco_matches_pycocoevalcap(coco_pair):
    ours, reference = coco_pair
    assert list(ours) == COCO_KEYS
    assert all(type(value) is float for value in ours.values())
    for key in COCO_KEYS:
        assert ours[key] == pytest.approx(float(reference[key]), abs=1e-6), key
    assert 0 < ours["bleu_4"] < ours["bleu_1"] < 1 and 0 < ours["meteor"] < 1 and ours["cider"] > 0


def test_ptb_tokens_match_pycocoevalcap():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = [p.replace("\n", " ") for p in PREDICTIONS[:7]] + [
        "It's a 3.5% rise -- isn't it? {x} [y] <z> & co. $4",
        "UPPER case, `ticks' and ``quotes''; semi: colon...",
        "",
    ]
    expected = PTBTokenizer().tokenize({i: [{"caption": caption}] for i, caption in enumerate(captions)})
    assert _ptb_tokenize(shutil.which("java"), captions) == [expected[i][0] for i in range(len(captions))]


@pytest.mark.slow
def test_coco_hand_checkable(monkeypatch, capfd):
    started = []

    class RecordedPopen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", RecordedPopen)
    captions = ["a man riding a horse on the beach", "two dogs playing in the snow"]
    metrics = caption_metrics(captions, [[caption] for caption in captions], "coco")

    for order in range(1, 5):
        assert metrics[f"bleu_{order}"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["rouge_l"] == 1.0
    assert metrics["meteor"] == pytest.approx(1.0, abs=1e-6)
    # CIDEr-D: cosine 1 for every n, times 10 ("the", in both documents, has idf 0 and weighs nothing)
    assert metrics["cider"] == pytest.approx(10.0, abs=1e-6)
    # two tokenizer runs and one METEOR, all ended; pycocoevalcap's prints and Java's output stay off stdout
    assert len(started) == 3 and all(process.returncode is not None for process in started)
    assert capfd.readouterr().out == ""


def test_coco_without_java_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EarthvlError, match="install a Java runtime .* or use protocol hf"):
        caption_metrics(["a dog"], ["a dog"], "coco")


def test_coco_needs_a_reference_word():
    with pytest.raises(EarthvlError, match="every reference is empty after PTB tokenisation"):
        caption_metrics(["a dog", "a cat"], [[""], ["...", "🙂"]], "coco")


# ---- hf ----


def test_hf_matches_rouge_score_nltk_and_corpus_bleu():
    metrics = caption_metrics(PREDICTIONS, REFERENCES, "hf")
    assert list(metrics) == ["bleu", "rouge1", "rouge2", "rougeL", "meteor"]

    references = _as_lists(REFERENCES)
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    scores = [scorer.score_multi(refs, prediction) for prediction, refs in zip(PREDICTIONS, references)]
    for rouge_type in ("rouge1", "rouge2", "rougeL"):
        expected = np.mean([score[rouge_type].fmeasure for score in scores])
        assert metrics[rouge_type] == pytest.approx(expected, abs=1e-6), rouge_type

    from nltk.translate.meteor_score import meteor_score

    reader = wordnet_module.wordnet()
    assert wordnet_module.wordnet() is reader  # loaded once per process
    meteors = [
        meteor_score([nltk_words(r) for r in refs], nltk_words(p), wordnet=reader, alpha=0.9, beta=3, gamma=0.5)
        for p, refs in zip(PREDICTIONS, references)
    ]
    assert metrics["meteor"] == pytest.approx(np.mean(meteors), abs=1e-6)
    assert metrics["bleu"] == pytest.approx(corpus_bleu(PREDICTIONS, REFERENCES)["bleu"], abs=1e-6)
    assert 0 < metrics["meteor"] < 1 and 0 < metrics["rougeL"] < 1


def test_hf_rouge_hand_computed():
    metrics = caption_metrics(["the cat on the mat"], ["the cat sat on the mat"], "hf")
    # unigrams: 5 of 5 predicted, 5 of 6 reference -> F = 2 * 1 * 5/6 / (1 + 5/6) = 10/11; the LCS is the same 5 words
    assert metrics["rouge1"] == pytest.approx(10 / 11, abs=1e-9)
    assert metrics["rougeL"] == pytest.approx(10 / 11, abs=1e-9)
    # bigrams: "the cat", "on the", "the mat" -> P 3/4, R 3/5, F = 2/3
    assert metrics["rouge2"] == pytest.approx(2 / 3, abs=1e-9)
    # rouge_score keeps only a-z and 0-9: "café" is "caf"
    assert caption_metrics(["café"], [["caf"]], "hf")["rouge1"] == 1.0


def test_hf_meteor_hand_computed():
    metrics = caption_metrics(["a red house near the river"], [["red house near river"]], "hf")
    # 4 exact matches: P 4/6, R 1, Fmean = P R / (0.9 P + 0.1 R) = (2/3) / 0.7; chunks "red house near" + "river":
    # penalty 0.5 (2/4)^3 = 0.0625
    assert metrics["meteor"] == pytest.approx((1 - 0.0625) * (2 / 3) / 0.7, abs=1e-9)


def test_hf_meteor_uses_wordnet_synonyms():
    # "car" and "auto" share WordNet's synset car.n.01: 3 matches in one chunk, P = R = 1, penalty 0.5 (1/3)^3.
    # Without synonyms it would be 2 matches: Fmean 2/3, penalty 0.5 (1/2)^3, score 0.625.
    metrics = caption_metrics(["a red car"], ["a red auto"], "hf")
    assert metrics["meteor"] == pytest.approx(1 - 0.5 / 27, abs=1e-9)


def test_hf_tokens_are_word_tokenize_without_the_trained_abbreviations():
    assert nltk_words("Two dogs (a puppy) play in the \"snow\".") == [
        "Two", "dogs", "(", "a", "puppy", ")", "play", "in", "the", "``", "snow", "''", ".",
    ]  # fmt: skip
    # the untrained sentence splitter ends a sentence at "U.S." (the English Punkt model knows the abbreviation)
    assert nltk_words("The U.S. coast") == ["The", "U.S", ".", "coast"]


# ---- WordNet ----


def test_wordnet_from_a_system_database(monkeypatch, tmp_path):
    monkeypatch.setenv("EARTHVL_CACHE", str(tmp_path))
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    database = next(folder for folder in wordnet_module.database_folders() if wordnet_module.is_wordnet30(folder))
    reader = wordnet_module.load_database(database)

    lexnames = (tmp_path / "wordnet-3.0" / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45 and lexnames[0] == "00\tadj.all\t3" and lexnames[-1] == "44\tadj.ppl\t3"
    # the lexicographer files WordNet 3.0 puts these synsets in
    assert reader.synset("dog.n.01").lexname() == "noun.animal"
    assert reader.synset("car.n.01").lexname() == "noun.artifact"
    assert reader.synset("run.v.01").lexname() == "verb.motion"
    assert reader.synset("happy.a.01").lexname() == "adj.all"
    assert "auto" in reader.synset("car.n.01").lemma_names()


def test_wordnet_missing_says_how_to_get_it(monkeypatch, tmp_path):
    def not_found(resource, *args, **kwargs):
        raise LookupError(resource)

    monkeypatch.setattr(nltk.data, "find", not_found)
    monkeypatch.setattr(wordnet_module, "database_folders", lambda: [tmp_path])
    with pytest.raises(EarthvlError, match="nltk.downloader wordnet.*wordnet-base.*WNSEARCHDIR") as error:
        wordnet_module.wordnet.__wrapped__()
    assert str(tmp_path) in str(error.value)


# ---- input checks ----


@pytest.mark.parametrize(
    ("predictions", "references", "protocol", "message"),
    [
        (["a"], ["a"], "bleu", "unknown caption protocol 'bleu': use one of coco, hf"),
        (["a", "b"], ["a"], "hf", "got 2 predictions but 1 reference entries"),
        ([], [], "hf", "no predictions"),
        (["a", "b"], [["a"], []], "coco", "prediction 1 has no reference"),
        (["a", None], ["a", "b"], "hf", "prediction 1 is a NoneType, not a string"),
        (["a"], [["a", 3]], "coco", "reference 1 of prediction 0 is a int, not a string"),
        (["a"], [5], "hf", "references of prediction 0 are a int"),
        ("a dog", ["a dog"], "hf", "not one string"),
    ],
)
def test_input_checks(predictions, references, protocol, message):
    with pytest.raises(EarthvlError, match=re.escape(message)):
        caption_metrics(predictions, references, protocol)
    assert PROTOCOLS == ("coco", "hf")

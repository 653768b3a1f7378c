"""Classification, retrieval and BLEU metrics against hand-computed values and numbers from the reference implementations."""

import math

import numpy as np
import pytest
import torch

from earthvl.eval.metrics import _tokenize_13a, classification_metrics, corpus_bleu, retrieval_metrics


# ---- classification ----


def test_classification_hand_computed():
    logits = torch.tensor(
        [
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 0: top-1 hit
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 1: second, so a top-5 hit only
            [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 5: sixth, a miss
            [0.0, 9.0, 0.5, 0.1, 0.2, 0.3],  # label 1: top-1 hit
        ]
    )
    metrics = classification_metrics(logits, torch.tensor([0, 1, 5, 1]))
    assert metrics["acc1"] == pytest.approx(2 / 4, abs=1e-6)
    assert metrics["acc5"] == pytest.approx(3 / 4, abs=1e-6)
    # recalls: class 0 1/1, class 1 1/2, class 5 0/1; classes 2-4 occur nowhere
    assert metrics["mean_per_class_recall"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-6)


def test_classification_accepts_numpy():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(40, 7)).astype(np.float32), rng.integers(0, 7, 40)
    expected = classification_metrics(torch.from_numpy(logits), torch.from_numpy(labels))
    assert classification_metrics(logits, labels) == expected


def test_acc5_is_nan_below_five_classes_and_one_at_five():
    logits = torch.tensor([[0.1, 0.9, 0.0, 0.0], [0.8, 0.1, 0.0, 0.1]])
    metrics = classification_metrics(logits, torch.tensor([1, 3]))
    assert math.isnan(metrics["acc5"])
    assert metrics["acc1"] == 0.5
    five = classification_metrics(torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 4]))
    assert five["acc5"] == 1.0


def test_class_never_predicted_counts_as_zero_recall():
    # predictions 0, 1, 1, 1: class 2 occurs twice and is never predicted
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    metrics = classification_metrics(logits, torch.tensor([0, 1, 2, 2]))
    assert metrics["acc1"] == 0.5
    assert metrics["mean_per_class_recall"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-6)


def test_class_predicted_but_absent_from_labels_is_left_out():
    # predictions 0, 2, 1 for labels 0, 0, 1: class 2 never occurs; sklearn's balanced_accuracy_score
    # (scikit-learn 1.9.1) drops its NaN recall and gives 0.75, not (0.5 + 1 + 0) / 3
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    metrics = classification_metrics(logits, torch.tensor([0, 0, 1]))
    assert metrics["acc1"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["mean_per_class_recall"] == pytest.approx(0.75, abs=1e-6)


def test_ties_top_k_follows_torch_topk_and_recall_follows_argmax():
    # all seven classes tied: acc1/acc5 are whatever torch.topk(5) puts first / in its five, as in CLIP_benchmark,
    # while mean_per_class_recall uses argmax, which takes the first index
    logits = torch.zeros(1, 7)
    top = logits.topk(5, dim=1).indices[0].tolist()
    for label in range(7):
        metrics = classification_metrics(logits, torch.tensor([label]))
        assert metrics["acc1"] == float(top[0] == label)
        assert metrics["acc5"] == float(label in top)
        assert metrics["mean_per_class_recall"] == float(label == 0)


def test_ties_inside_the_top_five_are_hits_whatever_the_order():
    logits = torch.tensor([[3.0, 3.0, 3.0, 0.0, 0.0, 0.0, -1.0]])
    for label in (0, 1, 2):
        assert classification_metrics(logits, torch.tensor([label]))["acc5"] == 1.0
    assert classification_metrics(logits, torch.tensor([6]))["acc5"] == 0.0


@pytest.mark.parametrize(
    "logits, labels",
    [
        (torch.zeros(3, 4), torch.tensor([0, 1])),  # length mismatch
        (torch.zeros(2, 4), torch.tensor([0, 4])),  # out of range
        (torch.zeros(2, 4), torch.tensor([0, -1])),
        (torch.zeros(2, 4), torch.tensor([0.0, 1.0])),  # not class indices
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
        (torch.zeros(4), torch.tensor([0])),
    ],
)
def test_classification_rejects_bad_input(logits, labels):
    with pytest.raises(ValueError):
        classification_metrics(logits, labels)


# ---- retrieval ----
# With identity image embeddings the score matrix text @ image.T is the text matrix itself, so each test writes the
# scores directly: row t holds the scores of text t against every image.


def _retrieve(scores, text_to_image, **kwargs):
    scores = torch.as_tensor(scores, dtype=torch.float64)
    return retrieval_metrics(torch.eye(scores.shape[1], dtype=torch.float64), scores, torch.tensor(text_to_image), **kwargs)


def test_retrieval_hand_computed():
    # 3 images, 12 texts: t0, t1 describe image 0, t2..t11 image 1, image 2 has no caption
    column0 = [0.1, 0.6, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.5, 0.45, 0.4, 0.35]
    column1 = [0.0, 0.0, 1.0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.95, 0.95, 0.95, 0.95]
    column2 = [0.05, 0.7, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    metrics = _retrieve(np.array([column0, column1, column2]).T, [0, 0] + [1] * 10)

    # texts: t0, t2, t8..t11 rank their image first (6 of 12); with 3 images every k >= 3 is capped to all of them,
    # so t3, which ranks its image last, hits from k = 5 on
    assert metrics["text_to_image_R@1"] == pytest.approx(0.5, abs=1e-6)
    for k in (5, 10, 20):
        assert metrics[f"text_to_image_R@{k}"] == 1.0
    # image 0: its captions rank 7th (t1) and 12th (t0), so only t1 is in the top 10; image 1: t2 is first;
    # image 2 has no caption and misses even at k = 20, capped to all 12 texts
    assert metrics["image_to_text_R@1"] == pytest.approx(1 / 3, abs=1e-6)
    assert metrics["image_to_text_R@5"] == pytest.approx(1 / 3, abs=1e-6)
    assert metrics["image_to_text_R@10"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["image_to_text_R@20"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["mean_recall"] == pytest.approx((0.5 + 1 + 1 + 1 / 3 + 1 / 3 + 2 / 3) / 6, abs=1e-6)
    recalls = {f"{direction}_R@{k}" for direction in ("text_to_image", "image_to_text") for k in (1, 5, 10, 20)}
    assert set(metrics) == recalls | {"mean_recall"}


def test_retrieval_recall_at_each_k():
    # 25 images; text j describes image j, which it ranks 1st, 3rd, 7th, 15th and 25th
    ranks = [1, 3, 7, 15, 25]
    scores = np.zeros((5, 25))
    for j, rank in enumerate(ranks):
        scores[j, j] = 0.5
        others = [i for i in range(25) if i != j][: rank - 1]
        scores[j, others] = 1.0
    metrics = _retrieve(scores, list(range(5)))
    assert [metrics[f"text_to_image_R@{k}"] for k in (1, 5, 10, 20)] == pytest.approx([0.2, 0.4, 0.6, 0.8], abs=1e-6)


def test_duplicate_captions_are_separate_queries():
    # t0 (image 0) and t1 (image 1) are the same caption: both rank image 0 first, so t1 misses
    scores = [[1.0, 0.2], [1.0, 0.2], [0.1, 0.9], [1.5, 0.0]]
    metrics = _retrieve(scores, [0, 1, 1, 0])
    assert metrics["text_to_image_R@1"] == pytest.approx(3 / 4, abs=1e-6)
    assert metrics["image_to_text_R@1"] == 1.0  # image 0: t3 first; image 1: t2 first


def test_embeddings_are_not_normalised_again():
    # image 0 scores t1 (0.6) above its own t0 (0.5); normalising t1 = (0.6, 10) would reverse that
    metrics = _retrieve([[0.5, 0.0], [0.6, 10.0]], [0, 1])
    assert metrics["image_to_text_R@1"] == 0.5
    assert metrics["text_to_image_R@1"] == 1.0
    # with 2 texts, k = 5 is capped to both, and image 0 finds t0 second
    assert metrics["image_to_text_R@5"] == 1.0


def test_chunked_equals_unchunked_and_numpy_equals_torch():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(20, 16)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    text_to_image = rng.integers(0, 20, 45)
    texts = images[text_to_image] + rng.normal(scale=0.9, size=(45, 16)).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    whole = retrieval_metrics(images, texts, text_to_image, chunk_size=1000)
    assert 0 < whole["text_to_image_R@1"] < whole["text_to_image_R@10"] < 1
    assert 0 < whole["image_to_text_R@1"] < whole["image_to_text_R@10"] < 1
    for chunk_size in (1, 7, 20):
        assert retrieval_metrics(images, texts, text_to_image, chunk_size=chunk_size) == whole
    assert retrieval_metrics(torch.from_numpy(images), torch.from_numpy(texts), torch.from_numpy(text_to_image)) == whole


@pytest.mark.parametrize(
    "images, texts, text_to_image",
    [
        (torch.eye(2), torch.eye(2), torch.tensor([0, 2])),  # no such image
        (torch.eye(2), torch.eye(2), torch.tensor([0])),  # one index per text
        (torch.eye(2), torch.zeros(2, 3), torch.tensor([0, 1])),  # dimensions differ
        (torch.eye(2), torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)),
    ],
)
def test_retrieval_rejects_bad_input(images, texts, text_to_image):
    with pytest.raises(ValueError):
        retrieval_metrics(images, texts, text_to_image)


# ---- BLEU ----
# Literal numbers below came from evaluate 0.4.6 running huggingface/evaluate's metrics/bleu (bleu.py and
# tokenizer_13a.py at a7dd338) with tensorflow/nmt's nmt/scripts/bleu.py; token lists from sacrebleu 2.6.0's Tokenizer13a.


def _bleu_dict(bleu, precisions, brevity_penalty, length_ratio, translation_length, reference_length):
    expected = {"bleu": bleu, "brevity_penalty": brevity_penalty, "length_ratio": length_ratio}
    expected.update({f"precision_{i}": p for i, p in enumerate(precisions, start=1)})
    expected.update(translation_length=translation_length, reference_length=reference_length)
    return expected


def test_bleu_perfect_match():
    metrics = corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]])
    assert metrics == _bleu_dict(1.0, [1.0] * 4, 1.0, 1.0, 6.0, 6.0)
    assert all(isinstance(value, float) for value in metrics.values())


def test_bleu_remote_sensing_corpus_with_punctuation_unicode_and_an_empty_prediction():
    predictions = [
        "Many planes are parked near the terminal.",
        "A green farmland, with a river.",
        "",
        "Zürich's lake — blue.",
    ]
    references = [
        ["Many planes are parked next to the terminal building.", "Several aeroplanes parked near a terminal."],
        ["A river runs through green farmland.", "Green farmlands with a river, and some trees."],
        ["Some houses."],
        ["The blue lake of Zürich — seen from above."],
    ]
    expected = _bleu_dict(
        bleu=0.22429687664510306,
        precisions=[0.9523809523809523, 0.5, 0.2, 0.08333333333333333],
        brevity_penalty=0.751477293075286,
        length_ratio=0.7777777777777778,
        translation_length=21,
        reference_length=27,
    )
    assert corpus_bleu(predictions, references) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_bleu_brevity_penalty():
    # 2 tokens against 6: ratio 1/3, penalty exp(1 - 3)
    metrics = corpus_bleu(["the cat"], [["the cat sat on the mat"]], max_order=2)
    assert metrics == pytest.approx(_bleu_dict(math.exp(-2), [1.0, 1.0], math.exp(-2), 1 / 3, 2, 6), abs=1e-12)
    # no trigram to match: precision 0 and BLEU 0 unless smoothed, where (0 + 1) / (0 + 1) = 1
    unsmoothed = corpus_bleu(["the cat"], [["the cat sat on the mat"]])
    assert unsmoothed["bleu"] == 0.0 and unsmoothed["precision_3"] == 0.0
    assert unsmoothed["brevity_penalty"] == pytest.approx(0.1353352832366127, abs=1e-12)
    smoothed = corpus_bleu(["the cat"], [["the cat sat on the mat"]], smooth=True)
    assert smoothed["bleu"] == pytest.approx(0.1353352832366127, abs=1e-12)
    assert [smoothed[f"precision_{i}"] for i in range(1, 5)] == [1.0] * 4


def test_bleu_empty_prediction_and_single_reference_strings():
    # the empty prediction adds no n-grams but its reference's 2 tokens: ratio 4/6, penalty exp(1 - 1.5)
    single = corpus_bleu(["", "a b c d"], ["x y", "a b c d"])
    assert single == pytest.approx(_bleu_dict(math.exp(-0.5), [1.0] * 4, math.exp(-0.5), 2 / 3, 4, 6), abs=1e-12)
    assert corpus_bleu(["", "a b c d"], [["x y"], ["a b c d"]]) == single


def test_bleu_all_predictions_empty():
    # evaluate divides by zero here
    metrics = corpus_bleu(["", " "], [["a river"], ["some trees"]])
    assert metrics["bleu"] == 0.0 and metrics["brevity_penalty"] == 0.0 and metrics["length_ratio"] == 0.0
    assert metrics["translation_length"] == 0.0 and metrics["reference_length"] == 4.0


def test_bleu_clips_counts_to_the_most_in_any_one_reference_and_uses_the_shortest_reference():
    # "the" occurs at most twice in one reference: 2 of 4 unigrams match; shortest reference has 2 tokens
    metrics = corpus_bleu(["the the the the"], [["the cat", "the the dog"]], max_order=1)
    assert metrics == _bleu_dict(0.5, [0.5], 1.0, 2.0, 4.0, 2.0)


@pytest.mark.parametrize(
    "text, tokens",
    [
        (
            "Hello, world! It's 3.5 km (approx.) from A-B; 10,000 people, 1-2 days.",
            ["Hello", ",", "world", "!", "It's", "3.5", "km", "(", "approx", ".", ")", "from", "A-B", ";", "10,000",
             "people", ",", "1", "-", "2", "days", "."],
        ),
        (
            'a &amp; b &lt;i&gt; &quot;q&quot; <skipped>end-\nline\nnext',
            ["a", "&", "b", "<", "i", ">", '"', "q", '"', "endline", "next"],
        ),
        (
            "Zürich—東京: über-alles, ça va? «oui»",
            ["Zürich—東京", ":", "über-alles", ",", "ça", "va", "?", "«oui»"],
        ),
        ("  many   planes.\tparked  ", ["many", "planes", ".", "parked"]),
        (
            "Pixel size 0.9 m, 99,9 px at 9-10 UTC.",
            ["Pixel", "size", "0.9", "m", ",", "99,9", "px", "at", "9", "-", "10", "UTC", "."],
        ),
        ("", []),
    ],
)
def test_13a_tokenizer_matches_sacrebleu(text, tokens):
    assert _tokenize_13a(text) == tokens


@pytest.mark.parametrize(
    "predictions, references, kwargs",
    [
        (["a"], [["a"], ["b"]], {}),  # lengths differ
        ([], [], {}),
        (["a"], [[]], {}),  # no reference
        (["a"], [[""]], {}),  # every reference empty
        (["a"], [["a"]], {"max_order": 0}),
    ],
)
def test_bleu_rejects_bad_input(predictions, references, kwargs):
    with pytest.raises(ValueError):
        corpus_bleu(predictions, references, **kwargs)

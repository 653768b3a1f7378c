"""Caption metrics under the two protocols papers report: `coco` (the COCO caption toolkit) and `hf` (Hugging Face
`evaluate`'s bleu, rouge and meteor metrics, as the GAIA paper uses them). Scores are fractions; CIDEr is on the
toolkit's own scale (it can exceed 1)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import numpy as np

from earthvl.errors import EarthvlError
from earthvl.eval.metrics import corpus_bleu

PROTOCOLS = ("coco", "hf")
"""The protocols `caption_metrics` knows."""

JAVA_MISSING = (
    "the coco protocol runs the COCO caption toolkit's Java METEOR and PTB tokenizer: install a Java runtime "
    "(e.g. apt install default-jre-headless) or use protocol hf"
)
_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# Every character that ends a line for Python, Java's PTB lexer or the METEOR jar's reader.
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def caption_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str] | str], protocol: str
) -> dict[str, float]:
    """Corpus-level caption metrics of `predictions` against their references, under `protocol`.

    Each entry of `references` is a list of reference captions or one string.

    `coco` returns `bleu_1` .. `bleu_4`, `meteor`, `rouge_l` and `cider`, exactly as pycocoevalcap 1.2's COCOEvalCap
    (without SPICE): captions are tokenised by Stanford CoreNLP 3.4.1's PTBTokenizer (`-preserveLines -lowerCase`,
    then the toolkit's punctuation tokens dropped), then scored by its Bleu(4) (closest reference length), the
    METEOR 1.5 jar, ROUGE-L and CIDEr-D. It needs `java` on PATH. Line breaks inside a caption (\\n, \\r, \\u2028
    and the like) count as spaces; pycocoevalcap turns only \\n into a space and misaligns the captions after any
    other. Behaviour inherited from the toolkit:

    - both jars read and write UTF-8 whatever the locale; accents and CJK text are kept (a run of CJK characters is
      one token), but the PTB lexer drops every character outside Unicode's basic plane (emoji, for instance);
    - the punctuation list holds "-LRB-", "-RRB-", ... in upper case while tokens are lower-cased, so brackets stay
      as the words "-lrb-" and "-rrb-"; runs such as "!?" or "!!!" stay too;
    - a caption that is empty after tokenisation (empty, only punctuation, only emoji) scores 0 against non-empty
      references, but ROUGE-L scores an empty prediction against an empty reference as 1; if every reference is
      empty CIDEr is undefined, and EarthvlError is raised;
    - with a single prediction CIDEr is 0 (every n-gram occurs in all "documents", so every idf weight is 0);
    - `|||`, the METEOR jar's field separator, is removed before METEOR (pycocoevalcap does this for the
      prediction only; PTB tokenisation already splits every `|` of a reference).

    `hf` returns `bleu`, `rouge1`, `rouge2`, `rougeL` and `meteor`, as `evaluate`'s metrics compute them, offline:

    - `bleu`: `evaluate`'s "bleu" exactly (`corpus_bleu`: 13a tokenizer, up to 4-grams, no smoothing).
    - ROUGE: `rouge_score`'s RougeScorer without stemmer, the best of a prediction's references by F-measure
      (`score_multi`), as `evaluate`'s "rouge". `evaluate` reports the middle of a bootstrap resampling (random)
      of the mean F-measure; this is the plain mean it estimates, so it is deterministic. Its tokenizer keeps only
      the letters a-z and digits, so accented letters and non-Latin scripts vanish.
    - `meteor`: NLTK's `meteor_score` (alpha 0.9, beta 3, gamma 0.5, WordNet 3.0 synonyms, best reference), averaged
      over captions, as `evaluate`'s "meteor". `evaluate` tokenises with `word_tokenize`, whose sentence splitter is
      NLTK's trained English Punkt model (a download); here it is Punkt without training followed by the same word
      tokenizer. The two differ only where one takes a word ending in a period for a sentence end and the other
      does not: mostly abbreviations mid-caption ("e.g.", "U.S."), which here lose their final period ("U.S", ".")
      where `word_tokenize` keeps "U.S." whole. WordNet comes from `earthvl.eval.wordnet.wordnet`.

    Raises EarthvlError for an unknown protocol, mismatched or empty inputs, a prediction without references or a
    non-string caption.
    """
    if protocol not in PROTOCOLS:
        raise EarthvlError(f"unknown caption protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    predictions, references = _checked(predictions, references)
    if protocol == "coco":
        return _coco_metrics(predictions, references)
    return _hf_metrics(predictions, references)


def _checked(
    predictions: Sequence[str], references: Sequence[Sequence[str] | str]
) -> tuple[list[str], list[list[str]]]:
    """The predictions and, per prediction, the list of its references, after checking their types and lengths."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise EarthvlError("predictions and references must be sequences with one entry per caption, not one string")
    if len(predictions) != len(references):
        raise EarthvlError(
            f"got {len(predictions)} predictions but {len(references)} reference entries: give one entry (a list of "
            "references or one string) per prediction"
        )
    if not predictions:
        raise EarthvlError("no predictions to score: give at least one prediction with its references")
    checked = []
    for index, (prediction, refs) in enumerate(zip(predictions, references)):
        if not isinstance(prediction, str):
            raise EarthvlError(f"prediction {index} is a {type(prediction).__name__}, not a string")
        if isinstance(refs, str):
            refs = [refs]
        elif isinstance(refs, Sequence):
            refs = list(refs)
        else:
            raise EarthvlError(f"references of prediction {index} are a {type(refs).__name__}: give a list of strings")
        if not refs:
            raise EarthvlError(f"prediction {index} has no reference: give it at least one reference caption")
        for position, ref in enumerate(refs):
            if not isinstance(ref, str):
                kind = type(ref).__name__
                raise EarthvlError(f"reference {position} of prediction {index} is a {kind}, not a string")
        checked.append(refs)
    return list(predictions), checked


# ---- coco: pycocoevalcap's scorers on the toolkit's own tokenizer and METEOR jars ----


def _coco_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    java = shutil.which("java")
    if java is None:
        raise EarthvlError(JAVA_MISSING)
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    # a line break inside a caption would shift every later caption in the tokenizer's one-caption-per-line file
    predictions = [_LINE_BREAKS.sub(" ", prediction) for prediction in predictions]
    flat_references = [_LINE_BREAKS.sub(" ", ref) for refs in references for ref in refs]
    # METEOR starts first: loading its paraphrase table takes seconds, while the two tokenizer runs go on
    with _MeteorJar(java) as meteor:
        with ThreadPoolExecutor(2) as pool:
            tokenized_refs, tokenized_preds = pool.map(
                functools.partial(_ptb_tokenize, java), [flat_references, predictions]
            )
        if not any(tokenized_refs):  # CIDEr's document frequencies would be empty (pycocoevalcap fails on max())
            raise EarthvlError(
                "every reference is empty after PTB tokenisation (nothing but punctuation or characters it drops): "
                "the coco metrics need at least one reference word"
            )
        gts, res, start = {}, {}, 0
        for index, refs in enumerate(references):
            gts[index] = tokenized_refs[start : start + len(refs)]
            res[index] = [tokenized_preds[index]]
            start += len(refs)
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge_l, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        meteor_score = meteor.score(gts, res)
    metrics = {f"bleu_{order}": float(value) for order, value in enumerate(bleu, start=1)}
    metrics.update(meteor=meteor_score, rouge_l=float(rouge_l), cider=float(cider))
    return metrics


def _ptb_tokenize(java: str, captions: list[str]) -> list[str]:
    """`captions` as pycocoevalcap's PTBTokenizer.tokenize returns them, run in a private temporary folder.

    Same jar, flags, one-caption-per-line file and punctuation removal; pycocoevalcap writes its file into its own
    package folder instead, which fails where that is read-only.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = Path(ptbtokenizer.__file__).parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    with tempfile.TemporaryDirectory(prefix="earthvl-ptb-") as folder:
        text_file = Path(folder) / "captions.txt"
        text_file.write_bytes("\n".join(captions).encode("utf-8"))
        command = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
        done = subprocess.run([*command, str(text_file)], stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode != 0:
        raise EarthvlError(f"the PTB tokenizer (Java) failed with exit code {done.returncode}: {_tail(done.stderr)}")
    lines = done.stdout.decode("utf-8").split("\n")
    if len(lines) != len(captions):
        raise EarthvlError(f"the PTB tokenizer returned {len(lines)} lines for {len(captions)} captions")
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(token for token in line.rstrip().split(" ") if token not in punctuation) for line in lines]


class _MeteorJar:
    """The METEOR 1.5 jar driven as pycocoevalcap's Meteor drives it (same jar, flags and `SCORE`/`EVAL` lines), in a
    `with` block that always ends the Java process; its stderr goes to a file, not a pipe nobody reads."""

    def __init__(self, java: str):
        from pycocoevalcap.meteor import meteor

        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        command = [java, "-jar", "-Xmx2G", meteor.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
        self._process = subprocess.Popen(
            command,
            cwd=Path(meteor.__file__).parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )

    def __enter__(self) -> _MeteorJar:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._process.stdin.close()
        except OSError:
            pass
        self._process.kill()
        self._process.wait()
        self._process.stdout.close()
        self._stderr.close()

    def score(self, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
        """The corpus METEOR of the tokenised predictions `res` against the tokenised references `gts`."""
        stats = []
        for key, refs in gts.items():
            fields = ["SCORE", *(_meteor_field(ref) for ref in refs), _meteor_field(res[key][0])]
            self._send(" ||| ".join(fields))
            stats.append(self._receive())
        self._send(" ||| ".join(["EVAL", *stats]))
        for _ in stats:  # one score per caption, then the corpus score
            self._receive()
        return float(self._receive())

    def _send(self, line: str) -> None:
        try:
            self._process.stdin.write(line.encode("utf-8") + b"\n")
            self._process.stdin.flush()
        except OSError:
            raise self._failure() from None

    def _receive(self) -> str:
        line = self._process.stdout.readline()
        if not line:
            raise self._failure()
        return line.decode("utf-8").strip()

    def _failure(self) -> EarthvlError:
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stderr.seek(0)
        return EarthvlError(
            f"the METEOR jar (Java) stopped with exit code {self._process.returncode}: {_tail(self._stderr.read())}"
        )


def _meteor_field(text: str) -> str:
    """`text` without the jar's field separator, as pycocoevalcap cleans a prediction."""
    return text.replace("|||", "").replace("  ", " ")


def _tail(stderr: bytes, lines: int = 5) -> str:
    return " / ".join(stderr.decode("utf-8", "replace").strip().splitlines()[-lines:]) or "(no message)"


# ---- hf: evaluate's bleu, rouge and meteor without the Hub ----


def _hf_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    from nltk.translate.meteor_score import meteor_score
    from rouge_score.rouge_scorer import RougeScorer

    from earthvl.eval.wordnet import wordnet

    reader = wordnet()
    scorer = RougeScorer(list(_ROUGE_TYPES), use_stemmer=False)
    rouge: dict[str, list[float]] = {rouge_type: [] for rouge_type in _ROUGE_TYPES}
    meteor = []
    for prediction, refs in zip(predictions, references):
        scores = scorer.score_multi(refs, prediction)
        for rouge_type in _ROUGE_TYPES:
            rouge[rouge_type].append(scores[rouge_type].fmeasure)
        ref_words = [nltk_words(ref) for ref in refs]
        meteor.append(meteor_score(ref_words, nltk_words(prediction), wordnet=reader, alpha=0.9, beta=3, gamma=0.5))
    metrics = {"bleu": corpus_bleu(predictions, references)["bleu"]}
    metrics.update({rouge_type: float(np.mean(values)) for rouge_type, values in rouge.items()})
    metrics["meteor"] = float(np.mean(meteor))
    return metrics


@functools.cache
def _nltk_tokenizers():
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def nltk_words(text: str) -> list[str]:
    """The words of `text` as the `hf` METEOR sees them: `nltk.word_tokenize` with an untrained Punkt sentence
    splitter in place of the downloaded English model (see `caption_metrics`)."""
    sentences, words = _nltk_tokenizers()
    return [word for sentence in sentences.tokenize(text) for word in words.tokenize(sentence)]

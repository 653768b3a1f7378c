"""Step 1, clean: article HTML to plain text (trafilatura: main content without navigation and boilerplate),
Unicode and whitespace normalised; empty and too-short articles are flagged, overlong ones cut and flagged."""

from __future__ import annotations

import math
import re
import unicodedata

CHARS_PER_TOKEN = 4
DEFAULT_MAX_ARTICLE_TOKENS = 100_000
"""An article's length bound: with the prompt it fits a 128k-token model (gpt-4o's context)."""

_TAG = re.compile(r"<\s*(?:html|body|p|div|article|br|span|h[1-6]|section|a|ul|li|table)\b[^>]*>", re.IGNORECASE)
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def looks_like_html(text: str) -> bool:
    """Whether `text` holds HTML markup rather than plain text."""
    return bool(_TAG.search(text))


def html_to_text(html: str) -> str:
    """The main text of an HTML page: trafilatura's extraction, or all its text when no main content is found."""
    import trafilatura

    text = trafilatura.extract(html, include_comments=False, include_tables=False, favor_precision=True)
    return text if text else trafilatura.html2txt(html)


def normalise(text: str) -> str:
    """NFC Unicode, no control characters, single spaces, paragraphs separated by one blank line."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def clean_article(article: str) -> str:
    """An article (plain text or HTML) as clean plain text."""
    return normalise(html_to_text(article) if looks_like_html(article) else article)


def word_count(text: str) -> int:
    return len(text.split())


def article_problem(text: str, min_words: int) -> str | None:
    """Why a cleaned article is worth flagging (empty, or shorter than `min_words` words), or None."""
    words = word_count(text)
    if words == 0:
        return "empty article: the annotation sees only the image and its alt text"
    if words < min_words:
        return f"short article: {words} words (fewer than min_words={min_words})"
    return None


def estimated_tokens(text: str) -> int:
    """Tokens of `text`, estimated as characters / 4 (the usual rule for English BPE vocabularies): no tokenizer is
    needed, whatever the backend."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def cut_article(text: str, max_tokens: int) -> tuple[str, str | None]:
    """`text` cut to `max_tokens` estimated tokens, and why it was cut (None if it was not): a scraped page's error
    dump or an endless listing would otherwise go whole to the model."""
    if estimated_tokens(text) <= max_tokens:
        return text, None
    cut = text[: max_tokens * CHARS_PER_TOKEN]
    return cut, f"long article: {len(text):,} characters cut to {len(cut):,} (max_article_tokens={max_tokens:,})"

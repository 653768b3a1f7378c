"""Step 1, clean: article HTML to plain text (trafilatura: main content without navigation and boilerplate),
Unicode and whitespace normalised; empty and too-short articles are flagged."""

from __future__ import annotations

import re
import unicodedata

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

"""Small text statistics helpers."""

from textstats.core import average_word_length, word_count

__all__ = ["average_word_length", "word_count"]

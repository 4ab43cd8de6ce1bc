"""Counting words and measuring them."""


def word_count(text: str) -> int:
    """Return the number of words in ``text``."""
    if not text:
        return 0
    return len(text.split(" "))


def average_word_length(text: str) -> float:
    """Return the mean length of the words in ``text``, or 0.0 for no words."""
    words = text.split()
    if not words:
        return 0.0
    return sum(len(word) for word in words) / len(words)

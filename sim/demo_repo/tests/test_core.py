import pytest
from textstats import average_word_length, word_count


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("one", 1),
        ("two words", 2),
        ("double  space", 2),
        ("tabs\tand\nnewlines", 3),
        ("  padded  ", 1),
    ],
)
def test_word_count(text, expected):
    assert word_count(text) == expected


def test_average_word_length():
    assert average_word_length("ab abcd") == 3.0
    assert average_word_length("   ") == 0.0

from lists import dedupe


def test_dedupe():
    assert dedupe([3, 1, 3, 2]) == [3, 1, 2]

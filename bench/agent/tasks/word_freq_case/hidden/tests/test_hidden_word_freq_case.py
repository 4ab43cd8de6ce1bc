from freq import word_freq


def test_word_freq():
    assert word_freq('The the') == {'the': 2}

from titles import title_case


def test_title_case():
    assert title_case('war and peace') == 'War and Peace'
    assert title_case('the hobbit') == 'The Hobbit'

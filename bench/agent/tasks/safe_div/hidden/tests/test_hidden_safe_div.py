from ops import safe_div


def test_safe_div():
    assert safe_div(1, 0) is None
    assert safe_div(6, 3) == 2

import lists  # noqa: F401


def test_imports():
    assert True

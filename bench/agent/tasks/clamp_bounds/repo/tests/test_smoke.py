import mathx  # noqa: F401


def test_imports():
    assert True

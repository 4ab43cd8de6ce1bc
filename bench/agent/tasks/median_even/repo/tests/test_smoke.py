import stats  # noqa: F401


def test_imports():
    assert True

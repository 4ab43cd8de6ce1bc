from dates import is_leap


def test_is_leap():
    assert not is_leap(1900)
    assert is_leap(2000)
    assert is_leap(2024)

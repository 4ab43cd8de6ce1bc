from config import parse_bool


def test_parse_bool():
    assert parse_bool('TRUE') is True
    assert parse_bool(' No ') is False

from slug import slugify


def test_slug():
    assert slugify('a  b') == 'a-b'
    assert slugify(' Hello, World ') == 'hello-world'

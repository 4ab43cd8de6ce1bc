import pytest

from app.signature import signature_for, verify_signature

# GitHub's documented test vector ("Validating webhook deliveries").
SECRET = b"It's a Secret to Everybody"
PAYLOAD = b"Hello, World!"
DIGEST = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_githubs_published_vector_passes():
    assert signature_for(PAYLOAD, SECRET) == DIGEST
    assert verify_signature(PAYLOAD, DIGEST, [SECRET])


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (b"Hello, World?", DIGEST),  # one byte of the body changed
        (PAYLOAD, DIGEST[:-1] + "f"),  # one character of the digest changed
        (PAYLOAD, None),  # header missing
        (PAYLOAD, ""),
        (PAYLOAD, DIGEST.replace("sha256=", "sha1=")),
        (PAYLOAD, DIGEST.upper()),
        (PAYLOAD, "sha256=\u00e9" + DIGEST[8:]),  # not ASCII
    ],
)
def test_anything_else_fails(body, header):
    assert not verify_signature(body, header, [SECRET])


def test_any_of_several_secrets_passes_during_rotation():
    assert verify_signature(PAYLOAD, DIGEST, [b"the new secret", SECRET])
    assert not verify_signature(PAYLOAD, DIGEST, [b"the new secret"])
    assert not verify_signature(PAYLOAD, DIGEST, [])

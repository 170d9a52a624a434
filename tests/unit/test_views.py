import pytest

from loyalty.views import InvalidCursor, decode_cursor, encode_cursor


@pytest.mark.parametrize("value", ["0", "12345", "5f0c6a4e-4a43-4c39-9a0e-0c1b2e3d4f5a"])
def test_cursor_round_trip(value: str) -> None:
    assert decode_cursor(encode_cursor(value)) == value


@pytest.mark.parametrize("cursor", ["%%%", "\u00e9"])
def test_bad_cursor_is_a_clear_error(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)

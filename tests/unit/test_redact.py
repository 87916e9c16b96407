"""Personal data and keys never reach logs or dead-letter headers in clear."""

from consumer.redact import mask


def test_masks_email_phone_and_key() -> None:
    text = "john.smith@test.com called +1 (555) 123-4567 with pk_abcdef123456"
    masked = mask(text)
    assert "john.smith" not in masked and "test.com" not in masked
    assert "123-4567" not in masked and masked.count("***67") == 1
    assert "abcdef" not in masked


def test_leaves_ordinary_numbers_alone() -> None:
    assert mask("order 1234 has 2 lines at offset 42") == "order 1234 has 2 lines at offset 42"


def test_masks_addresses_in_any_script_and_inside_json() -> None:
    for address in ("jöhn.smïth@exämple.de", "用户@例子.广告", "user+tag@xn--80ak6aa92e.xn--p1ai"):
        masked = mask(f'{{"email":"{address}","x":1}}')
        assert address not in masked and address.split("@")[1] not in masked, masked
        assert masked.endswith('***@***","x":1}')


def test_masks_api_keys_whatever_characters_they_hold() -> None:
    for key in ("pk_abc-def.ghi_jk", "pk_ABC123", "Klaviyo-API-Key pk_x.y-z"):
        masked = mask(f"auth {key} end")
        assert "abc" not in masked.lower() and "x.y" not in masked and "123" not in masked
        assert masked.endswith("*** end")


def test_dates_and_timestamps_stay_readable() -> None:
    text = "revision 2025-01-15 refused at 2026-12-01 19:00:07 (2026-12-01T19:00:07+00:00)"
    assert mask(text) == text
    assert mask("call 2026 123 4567") == "call ***67"  # digits that only look like a year


def test_the_fraction_of_a_second_is_no_phone_number() -> None:
    for text in (
        "failed at 2026-12-01T19:00:07.123456+00:00",
        "2026-12-01 19:00:07.123456",
        "at 19:00:07.1234567",
    ):
        assert mask(text) == text
    # A number after a colon is still masked when it is not the seconds of a time.
    assert mask("tel:+16172531000 at 19:00:07.5") == "tel:***00 at 19:00:07.5"
    assert mask("phone:5551234567") == "phone:***67"

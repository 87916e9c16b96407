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

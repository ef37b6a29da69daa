import pytest

from services.intake_phone.phone_numbers import InvalidNumber, Number, display, normalize


@pytest.mark.parametrize("raw", ["13812345678", "+86 138 1234 5678", "+86-138-1234-5678", "008613812345678", " 138 1234 5678 "])
def test_chinese_mobile_in_any_spelling_is_one_e164_number(raw):
    assert normalize(raw, "CN") == Number("e164", "+8613812345678")


@pytest.mark.parametrize("raw", ["010 1234 5678", "010-12345678", "(010) 1234 5678", "+86 10 1234 5678"])
def test_beijing_landline_with_trunk_prefix_drops_the_zero(raw):
    assert normalize(raw, "CN") == Number("e164", "+861012345678")


def test_default_region_decides_numbers_without_country_code():
    assert normalize("650 253 0000", "US").value == "+16502530000"
    assert normalize("+1 650 253 0000", "CN").value == "+16502530000"


@pytest.mark.parametrize("raw", ["abc", "1381234567", "+86 123", "+999 1234 5678", "1" * 70])
def test_invalid_numbers_raise_with_a_reason(raw):
    with pytest.raises(InvalidNumber) as info:
        normalize(raw, "CN")
    assert info.value.reason


@pytest.mark.parametrize("raw", ["", "anonymous", "Unknown", "PRIVATE"])
def test_withheld_caller_ids_are_hidden_not_errors(raw):
    number = normalize(raw, "CN")
    assert number.kind == "hidden" and not number.callable_back


def test_short_digit_strings_are_extensions_that_cannot_be_called_back():
    number = normalize("201", "CN")
    assert number == Number("extension", "201") and not number.callable_back


def test_display_groups_digits_for_people():
    assert display("+8613812345678") == "+86 138 1234 5678"
    assert display("+861012345678") == "+86 10 1234 5678"

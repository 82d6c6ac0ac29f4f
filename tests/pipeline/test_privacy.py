"""Callers' names and phone numbers never leave the worker in clear text (docs/cases.md §9)."""

from __future__ import annotations

import unicodedata

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model.privacy import caller_hash, mask_phone, mask_text, redact_bytes, redact_raw
from tests.pipeline.factories import hotline, raw

KEY = b"test-pii-key"


def test_mask_text_hides_phones_ids_and_names() -> None:
    """A description with a name, a mobile, a landline and an ID number keeps none of them, only the words."""
    text = "王小明 电话 139-1234-5678 或 021-65432100，身份证 31010919800101123X"
    out = mask_text(text, ("王小明",))
    for secret in ("王小明", "139-1234-5678", "65432100", "31010919800101123X"):
        assert secret not in out
    assert "电话" in out


def test_redact_raw_keeps_shape_but_not_personal_data() -> None:
    """A dead letter of a JSON ticket keeps its fields but not the caller's name or phone."""
    msg = hotline(description="王小明说13912345678打不通")
    out = redact_raw(raw(msg))
    assert "王小明" not in out and "13912345678" not in out
    assert '"service_code":"E0501"' in out and '"caller":' in out


def test_redact_raw_of_broken_json_masks_digit_runs() -> None:
    """A dead letter of a ticket cut short does not show the caller's phone."""
    out = redact_raw(b'{"caller": {"phone": "13912345678", "name": "X"')
    assert "13912345678" not in out


def test_caller_hash_is_stable_and_keyed() -> None:
    """The caller hash ignores grouping, depends on the key and does not contain the number."""
    assert caller_hash("139 1234 5678") == caller_hash("13912345678")
    assert caller_hash("13912345678", b"k1") != caller_hash("13912345678", b"k2")
    assert "13912345678" not in caller_hash("13912345678")


# -- every form of §9, masked --------------------------------------------------------------------------------

MASKED = [
    # mobile numbers in any digit form
    ("回电13812345678", "回电138****5678"),
    ("回电１３８１２３４５６７８", "回电138****5678"),                          # full-width
    ("回电١٣٨١٢٣٤٥٦٧٨", "回电138****5678"),                                   # Arabic-Indic
    ("回电۱۳۸۱۲۳۴۵۶۷۸", "回电138****5678"),                                   # Persian
    ("回电१३८१२३४५६७८", "回电138****5678"),                                   # Devanagari
    ("回电𝟏𝟑𝟖𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖", "回电138****5678"),                                   # mathematical bold
    ("回电1３8١2३4５6७8", "回电138****5678"),                                  # mixed forms
    # grouped
    ("回电1381 234 5678", "回电138****5678"),
    ("回电138 1234 5678", "回电138****5678"),
    ("回电138-1234-5678", "回电138****5678"),
    ("回电138.1234.5678", "回电138****5678"),
    ("回电1381.234.5678", "回电138****5678"),
    ("回电138 - 1234 - 5678", "回电138****5678"),
    ("回电１３８　１２３４　５６７８", "回电138****5678"),                       # ideographic spaces
    ("回电１３８－１２３４－５６７８", "回电138****5678"),                       # full-width hyphens
    ("回电１３８．１２３４．５６７８", "回电138****5678"),                       # full-width dots
    # with a country code, masked with the number
    ("回电+8613812345678", "回电138****5678"),
    ("回电+86 138 1234 5678", "回电138****5678"),
    ("回电+86-138-1234-5678", "回电138****5678"),
    ("回电0086 13812345678", "回电138****5678"),
    ("回电008613812345678", "回电138****5678"),
    ("回电86 13812345678", "回电138****5678"),
    ("回电8613812345678", "回电138****5678"),
    ("回电(+86)13812345678", "回电138****5678"),
    ("回电＋８６ １３８ １２３４ ５６７８", "回电138****5678"),
    ("回电+86.138.1234.5678", "回电138****5678"),
    # landlines, with or without area code
    ("座机62345678", "座机****5678"),
    ("座机6234567", "座机****567"),
    ("座机6234 5678", "座机****5678"),
    ("座机６２３４５６７８", "座机****5678"),
    ("座机(021)62345678", "座机021****5678"),
    ("座机（０２１）６２３４５６７８", "座机021****5678"),
    ("座机021-62345678", "座机021****5678"),
    ("座机021 6234 5678", "座机021****5678"),
    ("座机02162345678", "座机021****5678"),
    ("座机010-62345678", "座机010****5678"),
    ("座机0571-87654321", "座机057****4321"),
    ("座机+86 21 6234 5678", "座机021****5678"),
    # 18-character ID numbers, grouped or not, in any digit form
    ("身份证31010919800101123X", "身份证310***************"),
    ("身份证310109198001011234", "身份证310***************"),
    ("身份证310109 19800101 123X", "身份证310***************"),
    ("身份证310109-19800101-1234", "身份证310***************"),
    ("身份证3101 0919 8001 0112 3x", "身份证310***************"),
    ("身份证３１０１０９１９８００１０１１２３Ｘ", "身份证310***************"),
    ("身份证٣١٠١٠٩١٩٨٠٠١٠١١٢٣X", "身份证310***************"),
    # several numbers, and a number just before a grouped mobile
    ("13812345678 13987654321", "138****5678 139****4321"),
    ("房号2203 1381 234 5678", "房号2203 138****5678"),
]


@pytest.mark.parametrize(("text", "masked"), MASKED)
def test_every_written_form_of_a_phone_or_id_number_is_masked(text: str, masked: str) -> None:
    """Each form of §9 is masked to at most its first 3 and last 4 digits (ID numbers: first 3), in ASCII."""
    assert mask_text(text) == masked


LEFT_ALONE = [
    "坐标31.0212345678",                       # a coordinate: decimal, not a phone
    "坐标31.0212345678,121.4912345678",
    "坐标３１．０２１２３４５６７８",
    "经度121.13812345678",                     # a fraction that looks like a mobile
    "罚款12345678.50元",                       # an amount: a decimal, not a landline
    "面积1381234.5678平方米",
    "2024-11-30 14:30 3号楼前有5个摊位",
    "约1234567人次",                           # seven digits starting with 1: no landline
    "工单编号 HK-2024-001",
    "１００号门口",
]


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_decimals_dates_and_short_numbers_are_left_as_written(text: str) -> None:
    """Decimals (coordinates, amounts), dates and short numbers are no phone numbers: the text is unchanged."""
    assert mask_text(text) == text


def test_text_around_a_masked_number_is_kept_exactly() -> None:
    """Only the number changes: full-width digits elsewhere in the text stay full-width."""
    text = "淮海中路１００号，回电１３８１２３４５６７８，谢谢"
    assert mask_text(text) == "淮海中路１００号，回电138****5678，谢谢"


def test_the_callers_name_is_masked_wherever_it_occurs() -> None:
    """Each occurrence of the caller's own name keeps its first character only."""
    assert mask_text("张三丰说张三丰家门口有摊贩", ("张三丰",)) == "张**说张**家门口有摊贩"


@pytest.mark.parametrize(("phone", "masked"), [
    ("13812345678", "138****5678"), ("+86 138 1234 5678", "138****5678"),
    ("００８６１３８１２３４５６７８", "138****5678"), ("021-62345678", "021****5678"), ("12345", "****")])
def test_mask_phone_drops_the_country_code_and_keeps_at_most_3_and_4_digits(phone: str, masked: str) -> None:
    """The caller's phone field is masked like a phone in free text, country code and all."""
    assert mask_phone(phone) == masked


@pytest.mark.parametrize("written", [
    "13812345678", "１３８１２３４５６７８", "+86 138 1234 5678", "+8613812345678", "0086-138-1234-5678",
    "138.1234.5678", "(+86) 1381 234 5678", "١٣٨١٢٣٤٥٦٧٨"])
def test_caller_hash_is_one_caller_for_every_way_of_writing_the_number(written: str) -> None:
    """Digit form, grouping and country code do not change the caller hash (repeat callers are recognised)."""
    assert caller_hash(written, KEY) == caller_hash("13812345678", KEY)


def test_redact_bytes_masks_full_width_numbers_and_keeps_bytes_that_are_not_utf8() -> None:
    """Raw bytes that are not UTF-8 get the same masking as text, full-width digits included."""
    body = "回电１３８１２３４５６７８，座机(021)62345678，身份证310109 19800101 123X".encode()
    out = redact_bytes(b"\xff\xfe" + body)
    assert out.startswith(b"\xff\xfe")
    text = out.decode("utf-8", "replace")
    for secret in ("１３８１２３４５６７８", "１２３４", "62345678", "6234", "19800101"):
        assert secret not in text
    assert "138****5678" in text


def test_redact_bytes_masks_the_callers_name_found_in_the_bytes() -> None:
    """A caller's name in a broken ticket is masked in its free text too, not only in the caller object."""
    out = redact_bytes('{"caller": {"name": "欧阳翠花", "phone": "x"}, "description": "欧阳翠花说'.encode() + b"\xff")
    assert "欧阳翠花" not in out.decode("utf-8", "replace")


def test_redact_raw_of_text_that_is_not_json_masks_grouped_and_full_width_phones() -> None:
    """A dead letter of plain text masks phones in every form, the country code with them."""
    out = redact_raw("电话 +86 138 1234 5678 或 １３９８７６５４３２１".encode())
    assert "1234" not in out and "86 138" not in out and "９８７６" not in out


def test_redact_raw_masks_a_phone_sent_as_a_json_number() -> None:
    """A phone given as a JSON number (a ticket refused for it) is masked in the dead letter, other numbers kept."""
    out = orjson.loads(redact_raw(b'{"description": 13812345678, "count": 5, "at": 1732012345678, "lat": 31.02}'))
    assert out == {"description": "138****5678", "count": 5, "at": 1732012345678, "lat": 31.02}


# -- properties ----------------------------------------------------------------------------------------------

SEPARATORS = " \u00a0\u3000\t-\u2010\u2013\u2014\u2212\uff0d"       # spaces and hyphens of several kinds
DOTS = ".\uff0e"
COUNTRY_CODES = ["+86", "\uff0b86", "0086", "86", "(+86)", "\uff08+86\uff09"]
# a character next to a number that is neither a digit nor a dot: a dot with a digit beyond it would make
# the number part of a decimal, which §9 leaves alone
neighbours = st.characters(exclude_categories=("Nd", "Cs"), exclude_characters=DOTS)
# text around a number: anything, or digits, separators, brackets and signs that might join onto it
any_text = (st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
            | st.text(st.sampled_from("0123456789 .-+()\u3000Xx\uff11\uff13\uff18"), max_size=25))
digit_forms = st.lists(st.characters(categories=("Nd",)), min_size=1, max_size=3)


def written_in(forms: list[str], text: str) -> str:
    """`text` with its ASCII digits written in the scripts of `forms`, the i-th digit in forms[i % len(forms)]."""
    zeros = [ord(c) - unicodedata.decimal(c) for c in forms]
    out, i = [], 0
    for c in text:
        if c.isdigit():
            c, i = chr(zeros[i % len(zeros)] + int(c)), i + 1
        out.append(c)
    return "".join(out)


def plain(text: str) -> str:
    """`text` with its digits in ASCII and every separator, dot, bracket and plus sign removed."""
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text
                   if c not in SEPARATORS + DOTS + "()\uff08\uff09+\uff0b")


@st.composite
def written_phones(draw: st.DrawFn) -> tuple[str, str]:
    """(a mobile number in ASCII, the same number as a caller might write it)."""
    phone = draw(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
    cuts = sorted(draw(st.sets(st.integers(1, 10), max_size=10)))
    dotted = len(cuts) >= 2 and draw(st.booleans())
    separator = st.sampled_from(DOTS) if dotted else st.text(st.sampled_from(SEPARATORS), min_size=1, max_size=3)
    bounds = [0, *cuts, 11]
    groups = [phone[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    written = groups[0] + "".join(draw(separator) + group for group in groups[1:])
    if draw(st.booleans()):
        after = draw(st.sampled_from(DOTS) if dotted else st.text(st.sampled_from(SEPARATORS), max_size=3))
        written = draw(st.sampled_from(COUNTRY_CODES)) + after + written
    return phone, written_in(draw(digit_forms), written)


@settings(max_examples=400, deadline=None)
@given(written_phones(), any_text, neighbours, neighbours, any_text)
def test_no_phone_survives_masking_in_any_digit_form_or_grouping(
        phone: tuple[str, str], before: str, left: str, right: str, after: str) -> None:
    """Masked text never holds the 11 digits of a phone in a row, in any digit form, ignoring separators."""
    number, written = phone
    out = mask_text(before + left + written + right + after)
    assert number not in plain(out)


@st.composite
def written_decimals(draw: st.DrawFn) -> str:
    """A decimal number with at least seven fraction digits, in any digit form, with a dot of either width."""
    whole = str(draw(st.integers(0, 10**12)))
    fraction = draw(st.from_regex(r"[0-9]{7,15}", fullmatch=True))
    return written_in(draw(digit_forms), whole + draw(st.sampled_from(DOTS)) + fraction)


@settings(max_examples=300, deadline=None)
@given(written_decimals(), any_text, neighbours, neighbours, any_text)
def test_decimals_with_seven_or_more_fraction_digits_are_never_altered(
        decimal: str, before: str, left: str, right: str, after: str) -> None:
    """A coordinate-like decimal is left exactly as written, whatever text surrounds it."""
    assert decimal in mask_text(before + left + decimal + right + after)


@settings(max_examples=300, deadline=None)
@given(written_phones())
def test_caller_hash_is_invariant_under_digit_form_grouping_and_country_code(phone: tuple[str, str]) -> None:
    """However the caller's number is written, it hashes as its 11 ASCII digits."""
    number, written = phone
    assert caller_hash(written, KEY) == caller_hash(number, KEY)


def test_a_dead_letters_reason_is_masked_too() -> None:
    """Decode reasons quote the offending value: a phone typed into the wrong field must not leak through it."""
    from datetime import UTC, datetime

    import orjson

    from pipeline.wire import DeadLetter

    dead = DeadLetter("cityops.raw.hotline", 0, 7, "request_type: '回电13912345678' is not one of consult, help",
                      b'{"request_type": "x"}', datetime(2026, 3, 1, tzinfo=UTC))
    reason = orjson.loads(dead.to_json())["reason"]
    assert "13912345678" not in reason and "139****5678" in reason

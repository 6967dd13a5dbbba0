"""`DataStructureId` (src/copycat/_ids.py): ULID-based ids that round-trip through their
string and integer forms, order by creation time, and refuse bad text by name."""

from __future__ import annotations

import copy
import datetime
import pickle
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from copycat._ids import DataStructureId, new_data_structure_id
from copycat.errors import CopyCatError, InvalidIdError

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ids = st.integers(min_value=0, max_value=(1 << 128) - 1).map(DataStructureId.from_int)
timestamps = st.integers(min_value=0, max_value=(1 << 48) - 1)
randomness = st.integers(min_value=0, max_value=(1 << 80) - 1)


@given(ids)
def test_string_form_round_trips(ds_id: DataStructureId) -> None:
    text = str(ds_id)
    assert len(text) == 26
    assert set(text) <= set(CROCKFORD)
    assert DataStructureId.parse(text) == ds_id
    assert DataStructureId.parse(text.lower()) == ds_id
    assert str(DataStructureId.parse(text.lower())) == text


@given(st.integers(min_value=0, max_value=(1 << 128) - 1))
def test_integer_form_round_trips(value: int) -> None:
    ds_id = DataStructureId.from_int(value)
    assert int(ds_id) == value
    assert ds_id.group_id == value
    assert DataStructureId.parse(str(ds_id)).group_id == value


@given(ids, ids)
def test_order_is_the_order_of_the_integer_and_string_forms(
    a: DataStructureId, b: DataStructureId
) -> None:
    assert (a < b) == (int(a) < int(b)) == (str(a) < str(b))
    assert (a <= b) == (int(a) <= int(b))
    assert (a > b) == (int(a) > int(b))
    assert (a >= b) == (int(a) >= int(b))
    assert (a == b) == (int(a) == int(b))


@given(timestamps, randomness, timestamps, randomness)
def test_ids_order_by_creation_time_first(t1: int, r1: int, t2: int, r2: int) -> None:
    a = DataStructureId.from_int(t1 << 80 | r1)
    b = DataStructureId.from_int(t2 << 80 | r2)
    if t1 != t2:
        assert (a < b) == (t1 < t2)
    assert a.created_at_ms == t1
    if t1 < 253_402_300_800_000:  # datetime stops at the year 9999
        assert a.created_at == datetime.datetime.fromtimestamp(t1 / 1000, tz=datetime.UTC)
    else:
        with pytest.raises(ValueError, match="year"):
            _ = a.created_at


def test_new_ids_increase_in_the_order_they_are_made() -> None:
    made = [DataStructureId.new() for _ in range(2000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_new_ids_from_many_threads_are_unique() -> None:
    results: list[list[DataStructureId]] = [[] for _ in range(4)]

    def make(out: list[DataStructureId]) -> None:
        out.extend(new_data_structure_id() for _ in range(500))

    threads = [threading.Thread(target=make, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    everything = [ds_id for out in results for ds_id in out]
    assert len(set(everything)) == 2000
    for out in results:
        assert out == sorted(out)


def test_new_id_is_stamped_with_the_current_time() -> None:
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    ds_id = new_data_structure_id()
    after = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    assert isinstance(ds_id, DataStructureId)
    assert before <= ds_id.created_at <= after


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("", "26 characters"),
        ("01CFR5R4JJE9KNRAJFFEAQ2SA", "26 characters"),
        ("01CFR5R4JJE9KNRAJFFEAQ2SAJX", "26 characters"),
        ("01CFR5R4JJE9KNRAJFFEAQ2SAI", "letters"),
        ("01CFR5R4JJE9KNRAJFFEAQ2SAU", "letters"),
        ("01CFR5R4JJE9KNRAJFFEAQ2SA-", "letters"),
        (" 1CFR5R4JJE9KNRAJFFEAQ2SAJ", "letters"),
        ("8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "overflow"),
        ("01CFR5R4JJE9KNRAJFFEAQ2SAJ\n", "26 characters"),
    ],
)
def test_bad_text_raises_invalid_id_error(text: str, hint: str) -> None:
    with pytest.raises(InvalidIdError) as info:
        DataStructureId.parse(text)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CopyCatError)
    assert info.value.text == text
    assert repr(text) in str(info.value)
    assert hint in str(info.value)


@pytest.mark.parametrize("value", [None, 42, b"01CFR5R4JJE9KNRAJFFEAQ2SAJ", 1.5])
def test_parse_refuses_what_is_not_text(value: object) -> None:
    with pytest.raises(InvalidIdError, match="expected a str"):
        DataStructureId.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 1 << 128, True, "5"])
def test_from_int_refuses_what_is_not_a_128_bit_integer(value: object) -> None:
    with pytest.raises(InvalidIdError):
        DataStructureId.from_int(value)  # type: ignore[arg-type]


def test_parse_returns_an_id_unchanged() -> None:
    ds_id = DataStructureId.new()
    assert DataStructureId.parse(ds_id) is ds_id


def test_known_id_from_the_go_readme() -> None:
    ds_id = DataStructureId.parse("01CFR5R4JJE9KNRAJFFEAQ2SAJ")
    assert str(ds_id) == "01CFR5R4JJE9KNRAJFFEAQ2SAJ"
    assert repr(ds_id) == "DataStructureId('01CFR5R4JJE9KNRAJFFEAQ2SAJ')"
    assert ds_id.created_at.year == 2018


def test_ids_are_values_hashable_and_never_equal_to_their_text() -> None:
    text = "01CFR5R4JJE9KNRAJFFEAQ2SAJ"
    a, b = DataStructureId.parse(text), DataStructureId.parse(text.lower())
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != text
    assert a != int(a)
    with pytest.raises(TypeError):
        _ = a < text  # type: ignore[operator]


def test_ids_are_immutable_and_survive_pickle_and_copy() -> None:
    ds_id = DataStructureId.new()
    with pytest.raises(AttributeError):
        ds_id._ulid = None  # type: ignore[assignment]
    with pytest.raises(AttributeError):
        ds_id.anything = 1
    with pytest.raises(AttributeError):
        del ds_id._ulid
    assert pickle.loads(pickle.dumps(ds_id)) == ds_id
    assert copy.copy(ds_id) == ds_id
    assert copy.deepcopy(ds_id) == ds_id

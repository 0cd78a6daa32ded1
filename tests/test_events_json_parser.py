"""The C evtx JSON parser (``_flatten.from_evtx_json``) against ``normalize.from_evtx_json_py``.

``from_evtx_json(text)`` must give exactly ``from_evtx_dict(orjson.loads(text))``: the same values,
the same value types (``True`` is not ``1``, ``0`` is not ``-0.0``), the same key order, and the
same exception type for text that is not JSON. These tests compare both on hand-written record
texts (escapes, numbers, odd layouts, whitespace, malformed text, str and bytes) and on every
record of the shared corpora (skipped cleanly when ../shared is absent).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from paths import ATTACK_SAMPLES, SIGMAHQ, evtx_files, evtx_records, need_shared
from scmwatch.events import normalize

if normalize._flatten is None:
    pytest.skip("the C extension was not built (no compiler at install time)", allow_module_level=True)

C_PARSE: Callable[[Any], Any] = normalize._flatten.from_evtx_json
PY_PARSE: Callable[[Any], Any] = normalize.from_evtx_json_py


# --------------------------------------------------------------------------------------------
# comparison helpers


def _same(c: Any, py: Any, where: str = "$") -> None:
    """Equal values, identical types and identical key order, recursively."""
    assert type(c) is type(py), f"{where}: C gave {type(c).__name__} {c!r}, Python {type(py).__name__} {py!r}"
    if type(py) is dict:
        assert list(c) == list(py), f"{where}: key order C {list(c)!r} != Python {list(py)!r}"
        for key in py:
            assert type(key) is str
            _same(c[key], py[key], f"{where}[{key!r}]")
    elif type(py) is list:
        assert len(c) == len(py), f"{where}: C list {c!r} != Python list {py!r}"
        for i, (a, b) in enumerate(zip(c, py, strict=True)):
            _same(a, b, f"{where}[{i}]")
    elif type(py) is float:
        assert repr(c) == repr(py) or (math.isnan(c) and math.isnan(py)), f"{where}: {c!r} != {py!r}"
    else:
        assert c == py, f"{where}: C gave {c!r}, Python {py!r}"


def _outcome(fn: Callable[[Any], Any], text: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(text)
    except Exception as exc:  # noqa: BLE001 - the exception type itself is what is compared
        return "error", exc


def _check_one(text: Any) -> tuple[str, Any]:
    want = _outcome(PY_PARSE, text)
    got = _outcome(C_PARSE, text)
    if want[0] == "error":
        assert got[0] == "error", f"{text!r}: Python raised {want[1]!r}, C returned {got[1]!r}"
        assert type(got[1]) is type(want[1]), f"{text!r}: C raised {got[1]!r}, Python {want[1]!r}"
        if isinstance(want[1], orjson.JSONDecodeError):
            assert isinstance(got[1], ValueError)
    else:
        assert got[0] == "ok", f"{text!r}: Python returned {want[1]!r}, C raised {got[1]!r}"
        _same(got[1], want[1])
        # and the reference really is the pure-Python flattener on orjson's dict
        loaded = orjson.loads(text)
        if type(loaded) is dict:
            _same(want[1], normalize.from_evtx_dict_py(loaded))
    return want


def check(text: str | bytes) -> Any:
    """Compare C and Python on ``text`` given as str and as UTF-8 bytes; the Python outcome.

    Returns the Python result, or the exception it raised (so tests can also pin semantics).
    """
    variants: list[Any] = [text]
    if isinstance(text, str):
        variants.append(text.encode("utf-8", "surrogatepass"))
    else:
        try:
            variants.append(text.decode("utf-8"))
        except UnicodeDecodeError:
            pass
    outcomes = [_check_one(v) for v in variants]
    return outcomes[0][1]


def _raises(result: Any) -> bool:
    return isinstance(result, orjson.JSONDecodeError)


# --------------------------------------------------------------------------------------------
# record builders (raw JSON text, so duplicates and odd layouts can be written)

SYSTEM = (
    '{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Security-Auditing",'
    '"Guid":"{54849625-5478-4994-A5BA-3E3B0328C30D}"}},"EventID":4688,"Version":2,"Level":0,'
    '"Task":13312,"Opcode":0,"Keywords":"0x8020000000000000",'
    '"TimeCreated":{"#attributes":{"SystemTime":"2024-05-01T10:00:00.123456Z"}},"EventRecordID":5501,'
    '"Correlation":null,"Execution":{"#attributes":{"ProcessID":4,"ThreadID":112}},'
    '"Channel":"Security","Computer":"WS1.corp.local","Security":null}'
)
EVENT_DATA = (
    '{"SubjectUserSid":"S-1-5-18","NewProcessId":"0x1a2c",'
    '"NewProcessName":"C:\\\\Windows\\\\System32\\\\cmd.exe","TokenElevationType":"%%1936",'
    '"CommandLine":"cmd.exe /c echo hello > \\\\\\\\127.0.0.1\\\\C$\\\\__output 2>&1 ",'
    '"ParentProcessName":"C:\\\\Windows\\\\System32\\\\services.exe"}'
)
ATTRS = '{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"}'


def record(*members: str, top: str = "") -> str:
    """``{"Event": {members...}}`` with optional extra top-level members after it."""
    body = '{"Event":{' + ",".join(members) + "}"
    return body + ("," + top if top else "") + "}"


def sysm(system: str = SYSTEM) -> str:
    return '"System":' + system


def datam(data: str = EVENT_DATA) -> str:
    return '"EventData":' + data


BASE = record('"#attributes":' + ATTRS, sysm(), datam())


def placements(value: str) -> dict[str, str]:
    """One JSON value written in every part of a record the parser handles differently."""
    return {
        "eventdata-value": record(sysm(), datam('{"CommandLine":' + value + ',"After":"x"}')),
        "eventdata-array": record(sysm(), datam('{"List":[' + value + "," + value + "]}")),
        "eventdata-nested": record(sysm(), datam('{"Nested":{"#text":' + value + ',"k":1}}')),
        "eventdata-not-object": record(sysm(), datam(value)),
        "system-value": record(sysm('{"EventID":1,"Computer":' + value + "}"), datam()),
        "system-attr": record(sysm('{"Provider":{"#attributes":{"Name":' + value + "}}}"), datam()),
        "system-attr-joined": record(sysm('{"Provider":{"#attributes":{"Odd":' + value + "}}}"), datam()),
        "system-text": record(sysm('{"EventID":1,"Opcode":{"#attributes":{"A":1},"#text":' + value + "}}"),
                              datam()),
        "userdata": record(sysm(), '"UserData":{"W":{"Field":' + value + "}}"),
        "event-extra": record(sysm(), '"Extra":' + value, datam()),
        "top-extra": record(sysm(), datam(), top='"Other":' + value),
    }


def key_placements(key: str) -> dict[str, str]:
    """One JSON string used as an object key in every part of a record."""
    return {
        "eventdata-key": record(sysm(), datam("{" + key + ':"v","After":"x"}')),
        "nested-key": record(sysm(), datam('{"N":{' + key + ':"v"}}')),
        "system-key": record(sysm('{"EventID":1,' + key + ':"v"}'), datam()),
        "userdata-key": record(sysm(), '"UserData":{"W":{' + key + ":1}}"),
        "event-key": record(sysm(), key + ":1", datam()),
        "top-key": record(sysm(), datam(), top=key + ":1"),
    }


def _expand(values: dict[str, str], builder: Callable[[str], dict[str, str]]) -> list[Any]:
    return [
        pytest.param(text, id=f"{name}-{where}")
        for name, value in values.items()
        for where, text in builder(value).items()
    ]


# --------------------------------------------------------------------------------------------
# strings

STRINGS = {
    "quote": r'"say \"hi\""',
    "backslash": r'"C:\\Windows\\System32\\cmd.exe"',
    "solidus": r'"http:\/\/example.com\/a"',
    "b": r'"a\bb"',
    "f": r'"a\fb"',
    "n": r'"line1\nline2"',
    "r": r'"a\r\nb"',
    "t": r'"a\tb"',
    "all-short-escapes": r'"\"\\\/\b\f\n\r\t"',
    "u00e9": r'"caf\u00e9"',
    "u00E9-upper": r'"caf\u00E9"',
    "u20ac": r'"\u20ac 5"',
    "surrogate-pair": r'"smile \ud83d\ude00!"',
    "surrogate-pair-upper": r'"\uD83D\uDE00"',
    "u0000": r'"a\u0000b"',
    "u001f": r'"\u001f"',
    "u0041-ascii": r'"\u0041BC"',
    "u007f": r'"\u007f"',
    "u0080": r'"\u0080"',
    "u07ff": r'"\u07ff"',
    "u0800": r'"\u0800"',
    "uffff": r'"\uffff"',
    "ufeff": r'"\ufeff"',
    "escape-then-raw-utf8": r'"\n é € 😀"',
    "raw-utf8-then-escape": r'"é € 😀 \n"',
    "only-escape": r'"\\"',
    "empty": '""',
    "guid-bare-upper": '"0CCE9243-69AE-11D9-BED3-505054503030"',
    "guid-bare-lower": '"0cce9243-69ae-11d9-bed3-505054503030"',
    "guid-braced": '"{0CCE9243-69AE-11D9-BED3-505054503030}"',
    "guid-escaped": r'"\u0030CCE9243-69AE-11D9-BED3-50505450303\u0030"',
    "guid-dash-moved": '"0CCE924-369AE-11D9-BED3-505054503030"',
    "guid-37": '"0CCE9243-69AE-11D9-BED3-5050545030300"',
    "guid-non-hex": '"0CCE9243-69AE-11D9-BED3-50505450303G"',
    "raw-del": '"a\x7fb"',
    "raw-utf8-2byte": '"café"',
    "raw-utf8-3byte": '"€ 中文 日本語"',
    "raw-utf8-4byte": '"😀𝄞"',
    "raw-utf8-u2028": '"a\u2028b"',
    "raw-noncharacter": '"\uffff\ufffe"',
    "windows-path": r'"C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe"',
    "unc-path": r'"\\\\?\\C:\\Windows\\System32\\drivers\\etc\\hosts"',
    "many-backslashes": '"' + "\\\\" * 1000 + '"',
    "backslash-before-quote": r'"C:\\Temp\\"',
    "long-400": '"' + "A" * 400 + '"',
    "long-400-escape-end": '"' + "A" * 400 + r'\n"',
    "long-400-escape-start": '"' + r"\t" + "A" * 400 + '"',
    "long-80k": '"' + "abcdefgh" * 10000 + '"',
    "long-80k-escapes": '"' + "C:\\\\Windows\\\\" * 8000 + '"',
    "long-80k-utf8": '"' + "é€😀a" * 8000 + '"',
    "long-80k-u-escapes": '"' + r"\u00e9\u20ac\ud83d\ude00" * 4000 + '"',
    # invalid or surrogate cases: orjson decides, C must agree (value or error)
    "lone-high": r'"\ud83d"',
    "lone-high-then-text": r'"\ud83dabc"',
    "lone-high-then-escape": r'"\ud83d\n"',
    "high-then-high": r'"\ud83d\ud83d"',
    "lone-low": r'"\ude00"',
    "low-then-high": r'"\ude00\ud83d"',
    "invalid-escape-x": r'"\x41"',
    "invalid-escape-a": r'"\a"',
    "invalid-escape-U": r'"\U0041"',
    "short-u": r'"\u00e"',
    "bad-hex-u": r'"\u00g9"',
    "backslash-at-end": '"abc\\',
    "raw-tab": '"a\tb"',
    "raw-newline": '"a\nb"',
    "raw-nul": '"a\x00b"',
    "raw-0x1f": '"a\x1fb"',
    "unterminated": '"abc',
    "escape-then-raw-tab": '"\\n\tb"',
    "utf8-then-raw-tab": '"é\tb"',
    "utf8-then-raw-nul": '"é\x00"',
}

STRING_IDS_THAT_ERR = {
    "lone-high",
    "lone-high-then-text",
    "lone-high-then-escape",
    "high-then-high",
    "lone-low",
    "low-then-high",
    "invalid-escape-x",
    "invalid-escape-a",
    "invalid-escape-U",
    "short-u",
    "bad-hex-u",
    "backslash-at-end",
    "raw-tab",
    "raw-newline",
    "raw-nul",
    "raw-0x1f",
    "unterminated",
    "escape-then-raw-tab",
    "utf8-then-raw-tab",
    "utf8-then-raw-nul",
}


@pytest.mark.parametrize("text", _expand(STRINGS, placements))
def test_string_values(text: str) -> None:
    check(text)


@pytest.mark.parametrize("text", _expand(STRINGS, key_placements))
def test_string_keys(text: str) -> None:
    check(text)


def test_string_semantics_pinned() -> None:
    """A few results spelled out, so that both sides agreeing on nonsense would be noticed."""
    out = check(placements(r'"\"\\\/\b\f\n\r\t\u00e9\u20ac\ud83d\ude00\u0000"')["eventdata-value"])
    assert out["CommandLine"] == '"\\/\b\f\n\r\t\u00e9\u20ac\U0001f600\x00'
    out = check(placements('"C:\\\\Windows\\\\System32\\\\cmd.exe"')["eventdata-value"])
    assert out["CommandLine"] == "C:\\Windows\\System32\\cmd.exe"
    for name in STRING_IDS_THAT_ERR:
        assert _raises(check(placements(STRINGS[name])["eventdata-value"])), name
    out = check(placements(STRINGS["guid-bare-upper"])["eventdata-value"])
    assert out["CommandLine"] == "{0CCE9243-69AE-11D9-BED3-505054503030}"  # Windows' rendering of a GUID
    for name in ("guid-bare-lower", "guid-braced", "guid-dash-moved", "guid-37", "guid-non-hex"):
        out = check(placements(STRINGS[name])["eventdata-value"])
        assert out["CommandLine"] == json.loads(STRINGS[name]), name


def test_bare_guids_braced_wherever_they_become_a_field() -> None:
    """The C reader braces a bare GUID as it sets each field (no pass over the finished fields
    unless a part was flattened from a dict): every top-level place gets its braces, a GUID
    nested in a list keeps none."""
    bare = STRINGS["guid-bare-upper"]
    braced = "{" + json.loads(bare) + "}"
    where = placements(bare)
    fields = {"eventdata-value": "CommandLine", "eventdata-nested": "Nested", "eventdata-not-object": "Data",
              "system-value": "Computer", "system-attr": "Provider_Name",
              "system-attr-joined": "Provider_Odd", "system-text": "Opcode", "userdata": "Field"}
    for place, name in fields.items():
        assert check(where[place])[name] == braced, place
    assert check(where["eventdata-array"])["List"] == [json.loads(bare)] * 2


def test_strings_in_every_position_at_once() -> None:
    for name, value in STRINGS.items():
        text = record(
            sysm('{"EventID":1,"Computer":' + value + "}"),
            datam("{" + value + ":" + value + ',"X":[' + value + "]}"),
            '"UserData":{' + value + ":{" + value + ":" + value + "}}",
            top=value + ":" + value,
        )
        result = check(text)
        assert _raises(result) == (name in STRING_IDS_THAT_ERR), name


# What ends a run of plain bytes, at every offset of a 16-byte (SSE2) and an 8-byte word: the
# scanner takes the first special byte's position from the word's flag bits, where a borrow may
# also flag bytes above it, so each is followed by bytes a borrow would flag ('#' is '"' ^ 1,
# ' ' is 0x20) and by more text.
WORD_SPECIALS = {
    "closing-quote": "",
    "escape": r"\n",
    "escaped-quote": r"\"",
    "escaped-backslash": r"\\",
    "non-ascii": "é",
    "non-ascii-4byte": "😀",
    "raw-tab": "\t",
    "raw-nul": "\x00",
}


@pytest.fixture
def fallbacks() -> Iterator[list[Any]]:
    """The texts the C parser hands to its Python fallback while the test runs."""
    seen: list[Any] = []

    def counting(text: Any) -> Any:
        seen.append(text)
        return PY_PARSE(text)

    configure = normalize._flatten.configure
    configure(normalize.SYSTEM_ATTRS, normalize._CORE, normalize._int, counting, normalize.Event)
    try:
        yield seen
    finally:
        configure(normalize.SYSTEM_ATTRS, normalize._CORE, normalize._int, PY_PARSE, normalize.Event)


@pytest.mark.parametrize("special", list(WORD_SPECIALS.values()), ids=list(WORD_SPECIALS))
def test_string_end_at_every_offset_of_a_word(special: str, fallbacks: list[Any]) -> None:
    """Equal to the reference, and a valid string is read by the C parser itself: a misplaced
    end would leave the cursor where the next member cannot parse, and the fallback would hide
    it by giving the right answer."""
    bad = special in ("\t", "\x00")
    for before in range(34):
        for after in ("", "#", " #", "#" * 9, "x" * 17):
            value = '"' + "a" * before + special + after + '"'
            # (a spaced EventData name is the fallback's by design: no space in the key)
            key = value.replace(" ", "")
            for text in (placements(value)["eventdata-value"], key_placements(key)["eventdata-key"],
                         placements(value)["system-value"]):
                fallbacks.clear()
                result = check(text)
                assert _raises(result) == bad, (before, after)
                assert bool(fallbacks) == bad, (before, after, text)
            result = check(placements(value)["eventdata-value"])
            if not bad:
                assert result["CommandLine"] == json.loads(value)


def test_eventdata_names_seen_before_follow_a_new_configuration(fallbacks: list[Any]) -> None:
    """A name read before as a plain EventData name is remembered as plain; configure() with a
    set of protected names that now holds it must send the record to the fallback again."""
    text = record(sysm(), datam('{"PlainName":"x","After":"y"}'))
    for _ in range(2):
        assert C_PARSE(text)["PlainName"] == "x"
    assert not fallbacks
    normalize._flatten.configure(normalize.SYSTEM_ATTRS, {*normalize._CORE, "PlainName"}, normalize._int)
    C_PARSE(text)
    assert fallbacks == [text]


INVALID_UTF8 = {
    "ff": b"\xff",
    "fe": b"\xfe",
    "lone-continuation": b"\x80",
    "truncated-2byte": b"\xc3",
    "truncated-3byte": b"\xe2\x82",
    "truncated-4byte": b"\xf0\x9f\x98",
    "overlong-slash": b"\xc0\xaf",
    "overlong-nul": b"\xc0\x80",
    "encoded-high-surrogate": b"\xed\xa0\xbd",
    "encoded-low-surrogate": b"\xed\xb8\x80",
    "beyond-10ffff": b"\xf4\x90\x80\x80",
    "f5": b"\xf5\x80\x80\x80",
    "valid-then-bad": "é".encode() + b"\xff",
}


@pytest.mark.parametrize("raw", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
@pytest.mark.parametrize("where", ["value", "key", "escaped-value", "top"])
def test_invalid_utf8_bytes(raw: bytes, where: str) -> None:
    body = {
        "value": b'{"CommandLine":"a' + raw + b'b"}',
        "key": b'{"a' + raw + b'":"v"}',
        "escaped-value": b'{"CommandLine":"\\n' + raw + b'"}',
        "top": b'{"X":"a"}',
    }[where]
    text = b'{"Event":{"System":{"EventID":1},"EventData":' + body + b"}"
    text += b',"T":"' + raw + b'"}' if where == "top" else b"}"
    assert _raises(check(text))


def test_lone_surrogate_in_str_input() -> None:
    """A Python str holding a lone surrogate cannot be UTF-8: both must fail the same way."""
    for bad in ("\ud83d", "\ude00", "a\udcffb"):
        text = record(sysm(), datam('{"CommandLine":"' + bad + '"}'))
        assert _raises(_check_one(text)[1])


KEYS_LONG = {
    "key-64": '"' + "K" * 64 + '"',
    "key-65": '"' + "K" * 65 + '"',
    "key-200": '"' + "Key" * 70 + '"',
    "key-70k": '"' + "k" * 70000 + '"',
    "key-65-utf8": '"' + "é" * 40 + '"',
    "key-65-escaped": '"' + r"\u0041" * 65 + '"',
    "key-empty": '""',
    "key-space": '"Threat Name"',
    "key-hash-text": '"#text"',
    "key-hash-attributes": '"#attributes"',
    "key-utf8": '"Имя процесса"',
    "key-escaped-Event": r'"\u0045vent"',
}


@pytest.mark.parametrize("text", _expand(KEYS_LONG, key_placements))
def test_long_and_odd_keys(text: str) -> None:
    check(text)


def test_many_distinct_keys_and_key_cache_collisions() -> None:
    """Thousands of distinct short keys, many alike in length and first/last eight bytes."""
    keys = [f"PrefixAB{i:06d}SuffixCD" for i in range(3000)]
    keys += [f"K{i}" for i in range(3000)]
    keys += ["abcdefgh" + "x" * (i % 48) + "12345678" for i in range(200)]
    data = "{" + ",".join(f'"{k}":{i}' for i, k in enumerate(keys)) + "}"
    system = "{" + ",".join(f'"{k}":"s"' for k in keys[::7]) + ',"EventID":7}'
    for _ in range(3):  # again with a warm cache
        out = check(record(sysm(system), datam(data)))
        assert out["PrefixAB002999SuffixCD"] == 2999
    # and parse them again in a different order: cached keys must not leak values
    reordered = "{" + ",".join(f'"{k}":"{k}"' for k in reversed(keys)) + "}"
    out = check(record(sysm(), datam(reordered)))
    assert all(out[k] == k for k in keys)


# --------------------------------------------------------------------------------------------
# numbers and literals

NUMBERS = {
    "zero": "0",
    "minus-zero": "-0",
    "negative": "-42",
    "one-digit": "7",
    "int64-max": str(2**63 - 1),
    "int64-min": str(-(2**63)),
    "uint64-max": str(2**64 - 1),
    "uint64-max-plus-1": str(2**64),
    "int64-min-minus-1": str(-(2**63) - 1),
    "huge": "123456789012345678901234567890",
    "huge-negative": "-123456789012345678901234567890",
    "float": "1.5",
    "float-negative": "-2.25",
    "exp": "1e5",
    "exp-upper": "1E5",
    "exp-plus": "1e+5",
    "exp-minus": "1e-5",
    "frac-exp": "1.25e3",
    "minus-zero-float": "-0.0",
    "zero-float": "0.0",
    "minus-zero-exp": "-0e0",
    "float-long": "3.141592653589793238462643383279",
    "tiny": "5e-324",
    "underflow": "1e-400",
    "overflow": "1e400",
    # invalid: orjson raises, C must too
    "leading-zero": "01",
    "minus-leading-zero": "-01",
    "double-zero": "00",
    "minus-alone": "-",
    "plus": "+1",
    "dot-first": ".5",
    "dot-last": "1.",
    "exp-empty": "1e",
    "exp-sign-only": "1e+",
    "hex": "0x10",
    "minus-minus": "--1",
    "nan": "NaN",
    "infinity": "Infinity",
    "minus-infinity": "-Infinity",
}
NUMBERS_THAT_ERR = {
    "overflow",
    "leading-zero",
    "minus-leading-zero",
    "double-zero",
    "minus-alone",
    "plus",
    "dot-first",
    "dot-last",
    "exp-empty",
    "exp-sign-only",
    "hex",
    "minus-minus",
    "nan",
    "infinity",
    "minus-infinity",
}


@pytest.mark.parametrize("text", _expand(NUMBERS, placements))
def test_numbers(text: str) -> None:
    check(text)


def test_number_semantics_pinned() -> None:
    def value(number: str) -> Any:
        result = check(placements(number)["eventdata-value"])
        return result if _raises(result) else result["CommandLine"]

    assert value("0") == 0 and type(value("0")) is int
    assert value("-0") == 0 and type(value("-0")) is int
    assert value(str(2**63 - 1)) == 2**63 - 1 and value(str(-(2**63))) == -(2**63)
    assert value(str(2**64 - 1)) == 2**64 - 1 and type(value(str(2**64 - 1))) is int
    assert type(value(str(2**64))) is float and type(value(str(-(2**63) - 1))) is float
    assert type(value("1e5")) is float and repr(value("-0.0")) == "-0.0"
    for name in NUMBERS_THAT_ERR:
        assert _raises(value(NUMBERS[name])), name


def test_number_followed_by_every_delimiter() -> None:
    for number in ("0", "-0", "12", "-12", "1.5", str(2**64 - 1), str(2**64)):
        for ws in ("", " ", "\n", "\t", "\r\n  "):
            check(record(sysm(), datam('{"A":' + number + ws + ',"B":[' + number + ws + "]}")))
            check(record(sysm(), datam('{"A":' + number + ws + "}")))
            check(record(sysm(), datam('{"A":' + number + "x}")))


LITERALS = {
    "true": "true",
    "false": "false",
    "null": "null",
    "True": "True",
    "nul": "nul",
    "nulll": "nulll",
    "tru": "tru",
    "falsey": "falsey",
    "None": "None",
    "single-quoted": "'x'",
}


@pytest.mark.parametrize("text", _expand(LITERALS, placements))
def test_literals(text: str) -> None:
    check(text)


def test_literal_types_pinned() -> None:
    out = check(record(sysm(), datam('{"T":true,"F":false,"N":null,"One":1,"Zero":0}')))
    assert out["T"] is True and out["F"] is False and out["N"] is None
    assert type(out["One"]) is int and type(out["Zero"]) is int


# --------------------------------------------------------------------------------------------
# arrays and nested objects in EventData

NESTED = {
    "empty-array": "[]",
    "empty-array-spaced": "[ \n ]",
    "array": '["a",1,-1,1.5,true,false,null,{},[]]',
    "nested-arrays": "[[[]],[[1,[2,[3,[4]]]]]]",
    "array-of-text-objects": '[{"#text":"a"},{"#attributes":{"x":1}},{}]',
    "text-object": '{"#text":"inner"}',
    "text-and-attributes": '{"#text":"inner","#attributes":{"Name":"n"}}',
    "attributes-then-text": '{"#attributes":{"Name":"n"},"#text":"inner"}',
    "attributes-only": '{"#attributes":{"Name":"n"}}',
    "attributes-empty": '{"#attributes":{}}',
    "attributes-null": '{"#attributes":null}',
    "empty-object": "{}",
    "empty-object-spaced": "{ \t }",
    "one-other-key": '{"a":1}',
    "two-keys": '{"a":1,"b":{"c":[1,2]}}',
    "attributes-and-other": '{"#attributes":{"x":1},"a":2}',
    "text-null": '{"#text":null}',
    "text-list": '{"#text":["a","b"]}',
    "text-object-in-text": '{"#text":{"#text":"deep"}}',
    "text-number": '{"#text":42}',
    "duplicate-text": '{"#text":"first","#text":"second"}',
    "duplicate-inner": '{"a":1,"b":2,"a":3}',
    "depth-60": "[" * 60 + "]" * 60,
    "depth-70": "[" * 70 + "]" * 70,
    "depth-70-objects": '{"a":' * 70 + "1" + "}" * 70,
    "depth-2000": "[" * 2000 + "]" * 2000,
    # malformed nesting
    "unclosed-array": "[1,2",
    "unclosed-object": '{"a":1',
    "trailing-comma-array": "[1,]",
    "trailing-comma-object": '{"a":1,}',
    "missing-colon": '{"a" 1}',
    "missing-comma": '{"a":1 "b":2}',
    "array-missing-comma": "[1 2]",
    "unquoted-key": "{a:1}",
    "single-quoted-key": "{'a':1}",
    "number-key": "{1:2}",
    "mismatched": "[}",
    "leading-comma": "[,1]",
}


@pytest.mark.parametrize("text", _expand(NESTED, placements))
def test_arrays_and_nested_objects(text: str) -> None:
    check(text)


def test_nested_semantics_pinned() -> None:
    data = (
        '{"Text":{"#text":"t","#attributes":{"a":1}},"Bare":{"#attributes":{"a":1}},"Empty":{},'
        '"Kept":{"a":1,"b":2},"List":[],"Data":["x","y"],"#attributes":{"Name":"drop"}}'
    )
    out = check(record(sysm(), datam(data)))
    assert out["Text"] == "t" and out["Bare"] is None and out["Empty"] is None
    assert out["Kept"] == {"a": 1, "b": 2} and out["List"] == [] and out["Data"] == ["x", "y"]
    assert "Name" not in out and "#attributes" not in out


# --------------------------------------------------------------------------------------------
# layouts

EVENT_DATA_CORE = '{"Channel":"collides","Level":"overrides","Image":"x.exe"}'
LAYOUTS = {
    "base": BASE,
    "system-only": record(sysm()),
    "eventdata-only": record(datam()),
    "empty-event": record(),
    "empty-event-spaced": '{"Event":{ }}',
    "event-attributes-last": record(sysm(), datam(), '"#attributes":' + ATTRS),
    "eventdata-before-system": record(datam(), sysm()),
    "eventdata-before-system-overlap": record(
        datam('{"Version":"from-data","Image":"a"}'), sysm('{"Version":5,"EventID":1}')
    ),
    "system-twice": record(sysm(), datam(), sysm('{"EventID":2,"Channel":"Other"}')),
    "system-twice-adjacent": record(sysm('{"EventID":2}'), sysm()),
    "system-twice-first-not-object": record('"System":"x"', sysm()),
    "eventdata-twice": record(sysm(), datam('{"A":1,"B":2}'), datam('{"B":3,"C":4}')),
    "eventdata-twice-first-null": record(sysm(), datam("null"), datam()),
    "eventdata-twice-second-null": record(sysm(), datam(), datam("null")),
    "userdata-after-eventdata": record(
        sysm(), datam('{"A":1}'), '"UserData":{"Wrapper":{"Op":"op","A":2,"#attributes":{"xmlns":"u"}}}'
    ),
    "userdata-before-eventdata": record(
        sysm(), '"UserData":{"Wrapper":{"Op":"op","A":2,"#attributes":{"xmlns":"u"}}}', datam('{"A":1}')
    ),
    "userdata-before-system": record(
        '"UserData":{"Wrapper":{"Op":"op","Computer":"u"}}', sysm(), datam('{"A":1}')
    ),
    "userdata-only": record('"UserData":{"W":{"Op":"op"}}'),
    "userdata-loose-values": record(sysm(), '"UserData":{"W":{"Op":"op"},"Loose":5,"Arr":[1],"N":null}'),
    "userdata-core-names": record(sysm(), '"UserData":{"W":{"EventID":99,"Channel":"u","Computer":"u"}}'),
    "userdata-string": record(sysm(), '"UserData":"text"'),
    "userdata-null": record(sysm(), '"UserData":null'),
    "userdata-list": record(sysm(), '"UserData":[{"a":1}]'),
    "userdata-twice": record(sysm(), '"UserData":{"W":{"A":1}}', '"UserData":{"W":{"B":2}}'),
    "userdata-and-eventdata-same-key": record(sysm(), datam('{"K":"data"}'), '"UserData":{"W":{"K":"user"}}'),
    "event-twice": '{"Event":' + record(sysm())[9:-1] + ',"Event":{"System":{"EventID":2}}}',
    "event-twice-first-not-object": '{"Event":5,"Event":' + record(sysm(), datam())[9:-1] + "}",
    "event-twice-second-not-object": '{"Event":' + record(sysm(), datam())[9:-1] + ',"Event":5}',
    "extra-top-before": '{"Before":{"a":[1,2,{"b":"c"}]},"Event":' + record(sysm(), datam())[9:-1] + "}",
    "extra-top-after": record(sysm(), datam(), top='"After":{"Event":{"System":{"EventID":3}}}'),
    "extra-event-members": record('"Foo":1', sysm(), '"Bar":{"EventData":{"A":1}}', datam(), '"Baz":[]'),
    "event-string": '{"Event":"not an object"}',
    "event-null": '{"Event":null}',
    "event-list": '{"Event":[{"System":{"EventID":1}}]}',
    "event-number": '{"Event":1.5}',
    "no-event": '{"NoEvent":1}',
    "empty-object": "{}",
    "top-array": "[" + BASE + "]",
    "top-empty-array": "[]",
    "top-string": '"Event"',
    "top-number": "42",
    "top-null": "null",
    "top-true": "true",
    "eventdata-string": record(sysm(), datam('"just text"')),
    "eventdata-empty-string": record(sysm(), datam('""')),
    "eventdata-null": record(sysm(), datam("null")),
    "eventdata-list": record(sysm(), datam('["a","b"]')),
    "eventdata-number": record(sysm(), datam("5")),
    "eventdata-false": record(sysm(), datam("false")),
    "eventdata-empty": record(sysm(), datam("{}")),
    "eventdata-attributes-only": record(sysm(), datam('{"#attributes":{"Name":"x"}}')),
    "eventdata-attributes-first": record(sysm(), datam('{"#attributes":{"Name":"x"},"A":1}')),
    "eventdata-attributes-middle": record(sysm(), datam('{"A":1,"#attributes":{"Name":"x"},"B":2}')),
    "eventdata-attributes-twice": record(sysm(), datam('{"#attributes":1,"A":1,"#attributes":2}')),
    "system-string": record('"System":"text"', datam()),
    "system-null": record('"System":null', datam()),
    "system-list": record('"System":[1]', datam()),
    "system-empty": record('"System":{}', datam()),
    "system-objects": record(
        sysm(
            '{"Provider":{"#attributes":{"Name":"P","Odd":"x"}},'
            '"EventID":{"#attributes":{"Qualifiers":16384},"#text":7045},'
            '"Execution":{"#attributes":{"ProcessID":4,"KernelTime":9}},'
            '"Correlation":{"#attributes":{"ActivityID":"{A}"}},"Security":{"#attributes":{"UserID":"S-1-5-18"}},'
            '"Weird":{"#text":"t","#attributes":{"a":1}},"Empty":{},"AttrsEmpty":{"#attributes":{}},'
            '"TextNull":{"#text":null},"Other":{"a":1},"Channel":"System","Computer":"H"}'
        ),
        datam(EVENT_DATA_CORE),
    ),
    "system-duplicate-keys": record(sysm('{"EventID":1,"Channel":"A","EventID":2,"Computer":"C"}'), datam()),
    "system-key-in-eventdata-not-core": record(
        sysm('{"EventID":1,"Level":4,"Image":"sys"}'), datam('{"Level":"data","Image":"data"}')
    ),
}

# A protected System name inside EventData: once, duplicated, and without System to protect.
for _name in normalize._CORE:
    LAYOUTS[f"core-{_name}-in-eventdata"] = record(sysm(), datam('{"' + _name + '":"from data","Z":1}'))
    LAYOUTS[f"core-{_name}-in-eventdata-twice"] = record(
        sysm(), datam('{"' + _name + '":"one","Z":1,"' + _name + '":"two"}')
    )
    LAYOUTS[f"core-{_name}-in-eventdata-no-system"] = record(datam('{"' + _name + '":"only","Z":1}'))
    LAYOUTS[f"core-{_name}-in-eventdata-before-system"] = record(datam('{"' + _name + '":"d"}'), sysm())
    LAYOUTS[f"core-{_name}-spaced-in-eventdata"] = record(
        sysm(), datam('{"' + _name[:3] + " " + _name[3:] + '":"spaced"}')
    )
    LAYOUTS[f"core-{_name}-prefixed-exists"] = record(
        sysm(), datam('{"EventData_' + _name + '":"pre","' + _name + '":"d"}')
    )

LAYOUTS.update(
    {
        "duplicate-data-keys": record(sysm(), datam('{"A":1,"B":2,"A":3,"C":4,"B":5}')),
        "duplicate-data-keys-dict-values": record(
            sysm(), datam('{"A":{"#text":"t"},"B":2,"A":{"#attributes":{"x":1}},"A":[1]}')
        ),
        "duplicate-data-keys-overlap-system": record(
            sysm('{"EventID":1,"Version":2,"Task":3}'), datam('{"Task":"a","X":1,"Version":"b","Task":"c"}')
        ),
        "spaced-keys": record(sysm(), datam('{"Threat Name":"x","Path Name ":"p"," Lead":"l","A  B":1}')),
        "spaced-key-collides-after": record(sysm(), datam('{"Threat Name":"spaced","ThreatName":"plain"}')),
        "spaced-key-collides-before": record(sysm(), datam('{"ThreatName":"plain","Threat Name":"spaced"}')),
        "spaced-key-collides-two-spaced": record(sysm(), datam('{"Threat Name":"one","Threat  Name":"two"}')),
        "spaced-key-collides-system": record(
            sysm('{"EventID":1,"ThreatName":"sys"}'), datam('{"Threat Name":"d"}')
        ),
        "spaced-key-all-spaces": record(sysm(), datam('{" ":"space","":"empty"}')),
        "spaced-key-becomes-attributes": record(sysm(), datam('{"#attri butes":"kept"}')),
        "spaced-key-escaped-space": record(sysm(), datam('{"Threat\\u0020Name":"esc","Other":1}')),
        "eventid-string": record(sysm('{"EventID":"4688","Channel":"Security"}'), datam()),
        "eventid-string-spaced": record(sysm('{"EventID":" 4688 "}'), datam()),
        "eventid-hex": record(sysm('{"EventID":"0x10"}'), datam()),
        "eventid-hex-upper": record(sysm('{"EventID":"0X1F"}'), datam()),
        "eventid-bad-string": record(sysm('{"EventID":"abc"}'), datam()),
        "eventid-empty-string": record(sysm('{"EventID":""}'), datam()),
        "eventid-object": record(
            sysm('{"EventID":{"#text":"4688","#attributes":{"Qualifiers":16384}}}'), datam()
        ),
        "eventid-object-int": record(
            sysm('{"EventID":{"#attributes":{"Qualifiers":0},"#text":7045}}'), datam()
        ),
        "eventid-object-attrs-only": record(sysm('{"EventID":{"#attributes":{"Qualifiers":1}}}'), datam()),
        "eventid-object-empty": record(sysm('{"EventID":{}}'), datam()),
        "eventid-null": record(sysm('{"EventID":null}'), datam()),
        "eventid-true": record(sysm('{"EventID":true}'), datam()),
        "eventid-float": record(sysm('{"EventID":4688.0}'), datam()),
        "eventid-negative": record(sysm('{"EventID":-1}'), datam()),
        "eventid-list": record(sysm('{"EventID":["1"]}'), datam()),
        "eventid-from-userdata": record(sysm('{"Channel":"C"}'), '"UserData":{"W":{"EventID":"0x20"}}'),
        "keys-escaped": '{"\\u0045vent":{"\\u0053ystem":'
        + SYSTEM
        + ',"Event\\u0044ata":'
        + EVENT_DATA
        + "}}",
        "eventdata-key-escaped-core": record(sysm(), datam('{"\\u0043hannel":"esc"}')),
    }
)


@pytest.mark.parametrize("text", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_layouts(text: str) -> None:
    check(text)


# System children with attributes and no ``#text`` leave no member of their own (the streaming
# parser keeps no placeholder for them): repeated names, and an attribute whose flat name is
# another child's, must still come out as flatten_system's two passes make them.
SYSTEM_CHILDREN = {
    "attr-named-like-later-child":
        '{"Execution":{"#attributes":{"ProcessID":1}},"ProcessID":{"#attributes":{"X":2}}}',
    "attr-named-like-earlier-member": '{"ProcessID":7,"Execution":{"#attributes":{"ProcessID":1}}}',
    "attr-named-like-later-member": '{"Execution":{"#attributes":{"ProcessID":1}},"ProcessID":7}',
    "attrs-child-twice":
        '{"Provider":{"#attributes":{"Name":"a"}},"Provider":{"#attributes":{"Name":"b"}}}',
    "attrs-child-then-member": '{"Provider":{"#attributes":{"Name":"a"}},"Provider":"x"}',
    "member-then-attrs-child": '{"Provider":"x","Provider":{"#attributes":{"Name":"a"}}}',
    "attrs-child-then-text-child": '{"Provider":{"#attributes":{"Name":"a"}},"Provider":{"#text":"t"}}',
    "text-child-then-attrs-child": '{"Provider":{"#text":"t"},"Provider":{"#attributes":{"Name":"a"}}}',
    "attrs-child-then-empty-child": '{"Security":{"#attributes":{"UserID":"S-1"}},"Security":{}}',
    "empty-child-between": '{"Correlation":{},"Execution":{"#attributes":{"ProcessID":1}},"Channel":"X"}',
    "null-attrs": '{"Security":{"#attributes":null},"Channel":"X"}',
    "text-and-attrs": '{"Provider":{"#attributes":{"Name":"a"},"#text":"t"},"Channel":"X"}',
    "attr-named-like-own-child":
        '{"TimeCreated":{"#attributes":{"SystemTime":"2024-05-01T10:00:00Z"}},"X":1}',
    "unmapped-attrs-children": '{"A":{"#attributes":{"B":1}},"A_B":{"#attributes":{"C":2}},"Z":0}',
}


@pytest.mark.parametrize("system", list(SYSTEM_CHILDREN.values()), ids=list(SYSTEM_CHILDREN))
def test_system_children_without_text(system: str) -> None:
    check(record(sysm(system), datam()))


def test_system_children_without_text_pinned() -> None:
    out = check(record(sysm(SYSTEM_CHILDREN["attr-named-like-later-child"]), datam('{"A":1}')))
    assert "ProcessID" not in out and out["ProcessID_X"] == 2  # the second child's removal wins
    out = check(record(sysm(SYSTEM_CHILDREN["empty-child-between"]), datam('{"A":1}')))
    assert list(out) == ["Correlation", "Channel", "ProcessID", "A"]


# Found by these tests: the C parser streamed EventData members into the flat dict one by one,
# while orjson first folds duplicate keys (first position, last value) and only then does
# flatten_data remove spaces, so a duplicated spaced key colliding with another key after space
# removal kept a different value. The C parser now leaves records with spaced EventData names to
# the fallback.
SPACE_DUPLICATES = {
    "spaced-dup-then-plain": '{"A B":1,"AB":2,"A B":3}',
    "plain-dup-then-spaced": '{"AB":1,"A B":2,"AB":3}',
    "threat-name": '{"Threat Name":"first","ThreatName":"plain","Threat Name":"last"}',
    "escaped-space-dup": '{"A\\u0020B":1,"AB":2,"A B":3}',
}


@pytest.mark.parametrize("data", list(SPACE_DUPLICATES.values()), ids=list(SPACE_DUPLICATES))
def test_duplicate_spaced_keys_colliding_after_space_removal(data: str) -> None:
    check(record(sysm('{"EventID":1}'), datam(data)))


def test_layout_semantics_pinned() -> None:
    assert check(LAYOUTS["no-event"]) is None and check(LAYOUTS["event-string"]) is None
    assert check(LAYOUTS["empty-object"]) is None and check(LAYOUTS["empty-event"]) == {}
    out = check(LAYOUTS["core-Channel-in-eventdata"])
    assert out["Channel"] == "Security" and out["EventData_Channel"] == "from data"
    out = check(LAYOUTS["core-Channel-in-eventdata-no-system"])
    assert out["Channel"] == "only" and "EventData_Channel" not in out
    assert check(LAYOUTS["eventid-hex"])["EventID"] == "0x10"  # not a plain decimal: kept as written
    assert check(LAYOUTS["eventid-string-spaced"])["EventID"] == " 4688 "
    assert check(LAYOUTS["eventid-string"])["EventID"] == 4688
    out = check(LAYOUTS["eventid-object"])
    assert out["EventID"] == 4688 and out["EventID_Qualifiers"] == 16384
    out = check(LAYOUTS["spaced-key-collides-after"])
    assert out["ThreatName"] == "plain"
    out = check(LAYOUTS["userdata-before-eventdata"])
    assert out["A"] == 2 and out["Op"] == "op"  # UserData is flattened after EventData
    out = check(LAYOUTS["eventdata-string"])
    assert out["Data"] == "just text"
    assert check(LAYOUTS["eventdata-twice"])["B"] == 3  # orjson keeps the last EventData
    assert check(LAYOUTS["event-twice-second-not-object"]) is None


# --------------------------------------------------------------------------------------------
# whitespace, truncation, trailing garbage, input types


def test_pretty_and_compact_forms_agree() -> None:
    obj = orjson.loads(LAYOUTS["system-objects"])
    forms = [
        orjson.dumps(obj),
        orjson.dumps(obj, option=orjson.OPT_INDENT_2),
        json.dumps(obj, indent=4),
        json.dumps(obj, indent="\t"),
        json.dumps(obj, separators=(" , ", " : ")),
        orjson.dumps(obj, option=orjson.OPT_INDENT_2).replace(b"\n", b"\r\n"),
        b" \t\r\n" + orjson.dumps(obj) + b"\n\n ",
    ]
    results = [check(f) for f in forms]
    for r in results[1:]:
        _same(r, results[0])


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(" \n\t", id="whitespace-only"),
        pytest.param(BASE + "x", id="trailing-letter"),
        pytest.param(BASE + "}", id="trailing-brace"),
        pytest.param(BASE + ",", id="trailing-comma"),
        pytest.param(BASE + " {}", id="second-object"),
        pytest.param(BASE + "\n" + BASE, id="two-records"),
        pytest.param(BASE + "\x00", id="trailing-nul"),
        pytest.param(BASE + "\f", id="trailing-formfeed"),
        pytest.param("\ufeff" + BASE, id="bom"),
        pytest.param("\f" + BASE, id="leading-formfeed"),
        pytest.param("\v" + BASE, id="leading-vt"),
        pytest.param(BASE.replace(",", "\f,", 1), id="inner-formfeed"),
        pytest.param(BASE.replace(",", "\xa0,", 1), id="inner-nbsp"),
        pytest.param(BASE + " \n", id="trailing-whitespace-ok"),
        pytest.param("{", id="open-brace"),
        pytest.param("}", id="close-brace"),
        pytest.param('{"Event"', id="key-only"),
        pytest.param('{"Event":', id="key-colon"),
        pytest.param('{"Event":{}', id="unclosed-top"),
        pytest.param("{,}", id="comma-only"),
        pytest.param('{"Event":{},}', id="top-trailing-comma"),
        pytest.param('{"Event":{"System":{},}}', id="event-trailing-comma"),
        pytest.param('{"Event":{"EventData":{"A":1,}}}', id="eventdata-trailing-comma"),
        pytest.param('{"Event":{"EventData":{"A":1 "B":2}}}', id="eventdata-missing-comma"),
        pytest.param('{"Event":{"EventData":{"A" 1}}}', id="eventdata-missing-colon"),
        pytest.param('{"Event":{"EventData":{,}}}', id="eventdata-comma-only"),
        pytest.param('{"Event":{"EventData":{A:1}}}', id="eventdata-unquoted-key"),
        pytest.param('{"Event":{"EventData":{"A":}}}', id="eventdata-missing-value"),
        pytest.param('{"Event":{"EventData":{"A":1]}}', id="eventdata-wrong-close"),
        pytest.param('{"Event":{"System" {}}}', id="event-missing-colon"),
        pytest.param('{"Event":{"System":{} "EventData":{}}}', id="event-missing-comma"),
        pytest.param('{"Event":{System:{}}}', id="event-unquoted-key"),
        pytest.param('{"Event":{}]', id="top-wrong-close"),
        pytest.param("{'Event':{}}", id="single-quotes"),
    ],
)
def test_whitespace_and_malformed_text(text: str) -> None:
    check(text)


def test_every_truncation_of_a_record_raises_like_orjson() -> None:
    text = LAYOUTS["system-objects"][:-1] + ',"Extra":[1,-2.5,true,null,"\\u00e9\\n"]}'
    text = text.replace('"Image":"x.exe"', '"Image":"C:\\\\x.exe","Big":18446744073709551615')
    assert check(text) is not None
    for n in range(len(text)):
        check(text[:n])
    pretty = orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2)
    for n in range(0, len(pretty), 3):
        check(pretty[:n])


def test_input_types() -> None:
    raw = BASE.encode()
    expected = PY_PARSE(raw)
    for value in (bytearray(raw), memoryview(raw)):
        _same(C_PARSE(value), PY_PARSE(value))
        _same(C_PARSE(value), expected)

    class Text(str):
        pass

    _same(C_PARSE(Text(BASE)), expected)
    for bad in (None, 42, 4.5, [BASE], {"Event": {}}):
        got, want = _outcome(C_PARSE, bad), _outcome(PY_PARSE, bad)
        assert got[0] == want[0] == "error" and type(got[1]) is type(want[1]), bad


def test_result_is_a_fresh_dict_each_call() -> None:
    first = C_PARSE(BASE)
    first["EventID"] = "changed"
    first["CommandLine"] += "x"
    second = C_PARSE(BASE)
    _same(second, PY_PARSE(BASE))


def test_str_and_bytes_of_non_ascii_record() -> None:
    text = record(
        sysm('{"EventID":1,"Computer":"Рабочая-станция","Channel":"Microsoft-Windows-Sysmon/Operational"}'),
        datam('{"Image":"C:\\\\Users\\\\José\\\\Desktop\\\\файл.exe","用户":"管理员","Emoji":"😀"}'),
    )
    out = check(text)
    assert out["用户"] == "管理员" and out["Image"] == "C:\\Users\\José\\Desktop\\файл.exe"
    _same(C_PARSE(text.encode()), C_PARSE(text))


# --------------------------------------------------------------------------------------------
# real records


def test_c_and_python_agree_on_every_real_record() -> None:
    root = need_shared(ATTACK_SAMPLES)
    regression = need_shared(SIGMAHQ / "regression_data")
    checked = 0
    for path in evtx_files(root) + evtx_files(regression):
        for rec in evtx_records(path):
            text = rec["data"]
            want = PY_PARSE(text)
            got = C_PARSE(text)
            try:
                _same(got, want)
            except AssertionError as exc:
                raise AssertionError(f"{path} record {rec['event_record_id']}: {exc}") from None
            checked += 1
    assert checked > 8000


HAND_RECORDS = [LAYOUTS[name] for name in ("base", "system-objects", "userdata-after-eventdata")] + [
    record(
        sysm('{"EventID":{"#attributes":{"Qualifiers":16384},"#text":7045},"Channel":"System"}'),
        datam(
            '{"ServiceName":"PSEXESVC","ImagePath":"%SystemRoot%\\\\PSEXESVC.exe",'
            '"Threat Name":"Трояни́д","Path":"C:\\\\Users\\\\José\\\\😀.exe","Data":["a",null,1.5]}'
        ),
    ),
    record(
        sysm('{"EventID":"0x10","Channel":"C"}'), datam('{"Data":{"#text":["a","b"]},"Bin":"\\u0000\\u001f"}')
    ),
]


def _sample_records(limit: int = 200) -> list[str]:
    """About ``limit`` real record texts spread over the corpora, or the hand-written ones."""
    roots = [ATTACK_SAMPLES, SIGMAHQ / "regression_data"]
    files = [p for root in roots if root.exists() for p in evtx_files(root)]
    if not files:
        return HAND_RECORDS
    texts: list[str] = []
    step = max(1, len(files) // limit)
    for path in files[::step]:
        for rec in evtx_records(path):
            texts.append(rec["data"])
            break
        if len(texts) >= limit:
            break
    # plus some records with non-ASCII text (if the corpora have them) and the hand-written ones
    for path in files:
        if len(texts) >= limit + 40:
            break
        for rec in itertools.islice(evtx_records(path), 50):
            if not rec["data"].isascii():
                texts.append(rec["data"])
                break
    return texts + HAND_RECORDS


def _reserializations(text: str) -> dict[str, str | bytes]:
    obj = orjson.loads(text)
    return {
        "original": text,
        "orjson": orjson.dumps(obj),
        "orjson-indent2": orjson.dumps(obj, option=orjson.OPT_INDENT_2),
        "json-ascii": json.dumps(obj, ensure_ascii=True),
        "json-ascii-indent": json.dumps(obj, ensure_ascii=True, indent=1),
        "json-utf8": json.dumps(obj, ensure_ascii=False),
        "json-spaced": json.dumps(obj, ensure_ascii=True, separators=(" ,\n", " :\t")),
    }


def test_round_trips_of_real_records_agree() -> None:
    texts = _sample_records()
    assert len(texts) >= (200 if ATTACK_SAMPLES.exists() else len(HAND_RECORDS))
    escaped_non_ascii = 0
    for text in texts:
        forms = _reserializations(text)
        reference = PY_PARSE(text)
        for name, form in forms.items():
            got = C_PARSE(form)
            try:
                _same(got, PY_PARSE(form))
                _same(got, reference)  # every form of one record flattens alike
            except AssertionError as exc:
                raise AssertionError(f"{name} form of {text[:200]!r}: {exc}") from None
            if isinstance(form, bytes):
                _same(C_PARSE(form.decode()), got)
        escaped_non_ascii += "\\u" in forms["json-ascii"] and not text.isascii()
    assert escaped_non_ascii >= 1  # the \\u escapes of non-ASCII text were really exercised


def _system_texts() -> list[str]:
    """System string values that stress the reader's value cache: equal first and last eight
    bytes with another middle, every length up to past the cached limit, bare GUIDs (cached
    braced) and their near misses, more distinct texts than the cache has slots."""
    texts = [f"HOST-{i:04d}" for i in range(1500)]
    texts += ["0123456789abcdef" * 4, "0123456789abcdef" * 4 + "x", ""]
    texts += ["ABCDEFGH" + mid + "12345678" for mid in ("", "x", "y", "xy", "yx", "-" * 40, "+" * 40)]
    texts += ["z" * n for n in range(70)]
    guid = "0CCE9243-69AE-11D9-BED3-50505454303{}"
    texts += [guid.format(d) for d in "0123456789ABCDEF"] + [guid.format("g"), guid.format("a")]
    return texts


def test_values_through_the_value_cache() -> None:
    """Each System string value (member, attribute, #text) and EventData value read twice in
    another order, every record against the Python flattener: a cache slot handing back another
    text, or a bare GUID's braced copy where it does not belong, makes a record differ."""
    texts = _system_texts()
    order = texts + texts[::-1] + texts[::7]
    for i, text in enumerate(order):
        value = json.dumps(text)
        system = ('{"Provider":{"#attributes":{"Name":' + value + ',"Guid":' + value + '}},"EventID":4688,'
                  '"Keywords":' + value + ',"Opcode":{"#attributes":{"A":1},"#text":' + value + '},'
                  '"Channel":"Security","Computer":' + value + "}")
        out = check(record(sysm(system), datam('{"List":[' + value + '],"Plain":' + value + "}")))
        want = "{" + text + "}" if normalize._is_bare_guid(text) and len(text) == 36 else text
        assert (out["Computer"], out["Provider_Name"], out["Opcode"], out["Plain"]) == (want,) * 4, (i, text)
        assert out["List"] == [text]

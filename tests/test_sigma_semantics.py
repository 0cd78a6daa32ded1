"""Sigma semantics: every modifier and trap listed in sigma/compile.py, positive + near miss.

Each case writes a tiny rule, loads it through the real loader/compiler/index and matches
hand-built events (flat dicts in the normalized shape the readers produce).
"""

from __future__ import annotations

import base64
import textwrap
import time
from pathlib import Path

import pytest

from scmwatch.events.model import Event
from scmwatch.sigma import Engine, load_rules

SYSMON = "Microsoft-Windows-Sysmon/Operational"
PROC = {"Channel": SYSMON, "EventID": 1}


def make_rule(
    tmp: Path,
    detection: str,
    logsource: str = "category: process_creation\n  product: windows",
    extra: str = "",
) -> Path:
    body = textwrap.dedent(detection).strip("\n")
    text = (
        "title: test rule\nid: 5d0b6a54-0000-4000-8000-000000000001\nstatus: test\nlevel: high\n"
        f"logsource:\n  {logsource}\ndetection:\n" + textwrap.indent(body, "  ") + "\n" + extra
    )
    p = tmp / f"r{abs(hash(text))}.yml"
    p.write_text(text, encoding="utf-8")
    return p


def engine_for(tmp: Path, detection: str, **kw) -> Engine:
    rs = load_rules([make_rule(tmp, detection, **kw)])
    assert not rs.rejected, rs.rejected
    assert len(rs.rules) == 1
    return Engine(rs)


def hits(engine: Engine, fields: dict, base: dict | None = PROC) -> bool:
    f = {**(base or {}), **fields}
    return bool(engine.match(Event(f, "test", 1, "json")))


@pytest.fixture
def check(tmp_path):
    """check(detection, positive_fields, negative_fields, base=PROC)"""

    def run(detection: str, pos: dict | list[dict], neg: dict | list[dict], base: dict | None = PROC, **kw):
        eng = engine_for(tmp_path, detection, **kw)
        for p in pos if isinstance(pos, list) else [pos]:
            assert hits(eng, p, base), f"should match: {p}"
        for n in neg if isinstance(neg, list) else [neg]:
            assert not hits(eng, n, base), f"should not match: {n}"
        return eng

    return run


# ------------------------------------------------------------------ strings, case, wildcards


def test_case_insensitive_default(check):
    check(
        "sel:\n  Image: 'C:\\Windows\\System32\\CMD.exe'\ncondition: sel",
        {"Image": "c:\\windows\\system32\\cmd.EXE"},
        {"Image": "c:\\windows\\system32\\cmd.exe "},
    )


def test_cased(check):
    check(
        "sel:\n  CommandLine|cased: 'Invoke-Mimikatz'\ncondition: sel",
        {"CommandLine": "Invoke-Mimikatz"},
        {"CommandLine": "invoke-mimikatz"},
    )


def test_contains_startswith_endswith(check):
    check(
        "sel:\n  CommandLine|contains: 'whoami'\n  Image|endswith: '\\cmd.exe'\n"
        "  ParentImage|startswith: 'C:\\Temp\\'\ncondition: sel",
        {"CommandLine": "x WHOAMI /all", "Image": "C:\\w\\cmd.exe", "ParentImage": "c:\\temp\\a.exe"},
        [
            {"CommandLine": "x WHOAMI /all", "Image": "C:\\w\\cmd.exe", "ParentImage": "d:\\temp\\a.exe"},
            {"CommandLine": "x WHOAMI /all", "Image": "C:\\w\\xcmd.exe2", "ParentImage": "c:\\temp\\a.exe"},
        ],
    )


def test_list_is_or_all_is_and(check):
    check(
        "sel:\n  CommandLine|contains: ['aaa', 'bbb']\ncondition: sel",
        [{"CommandLine": "xx bbb"}, {"CommandLine": "aaa"}],
        {"CommandLine": "ab"},
    )
    check(
        "sel:\n  CommandLine|contains|all: ['aaa', 'bbb']\ncondition: sel",
        {"CommandLine": "bbb aaa"},
        {"CommandLine": "aaa only"},
    )


def test_map_and_list_of_maps(check):
    check(
        "sel:\n  - Image|endswith: '\\a.exe'\n    CommandLine|contains: 'x1'\n"
        "  - Image|endswith: '\\b.exe'\ncondition: sel",
        [{"Image": "c:\\a.exe", "CommandLine": "x1"}, {"Image": "c:\\b.exe"}],
        [{"Image": "c:\\a.exe", "CommandLine": "y"}, {"Image": "c:\\c.exe", "CommandLine": "x1"}],
    )


def test_wildcards_star_and_question(check):
    check(
        "sel:\n  Image: 'C:\\Users\\\\*\\AppData\\\\*.exe'\n  OriginalFileName: 'evil?.exe'\ncondition: sel",
        {"Image": "c:\\users\\bob\\appdata\\x.exe", "OriginalFileName": "EVIL1.exe"},
        [
            {"Image": "c:\\users\\bob\\appdata\\x.dll", "OriginalFileName": "evil1.exe"},
            {"Image": "c:\\users\\bob\\appdata\\x.exe", "OriginalFileName": "evil12.exe"},
        ],
    )


def test_escaped_wildcards_are_literal(check):
    # '\*' is a literal star; '\?' a literal question mark.
    check(
        "sel:\n  CommandLine|contains: 'a\\*b'\n  Description: '\\?'\ncondition: sel",
        {"CommandLine": "xa*bx", "Description": "?"},
        [{"CommandLine": "xaZZbx", "Description": "?"}, {"CommandLine": "xa*bx", "Description": "x"}],
    )


def test_escaped_backslash_then_wildcard(check):
    # 'C:\Temp\\*' is backslash then wildcard.
    check(
        "sel:\n  Image: 'C:\\Temp\\\\*'\ncondition: sel",
        {"Image": "C:\\Temp\\anything.exe"},
        {"Image": "C:\\Tempx"},
    )


def test_trailing_whitespace_not_trimmed(check):
    check(
        "sel:\n  ParentCommandLine|endswith: 'cmd.exe\"'\ncondition: sel",
        {"ParentCommandLine": '"C:\\Windows\\system32\\cmd.exe"'},
        {"ParentCommandLine": '"C:\\Windows\\system32\\cmd.exe" '},
    )


def test_empty_string_vs_null_vs_missing(check):
    check(
        "sel:\n  Image|endswith: 'x.exe'\n  Description: ''\ncondition: sel",
        {"Image": "x.exe", "Description": ""},
        [{"Image": "x.exe"}, {"Image": "x.exe", "Description": None}, {"Image": "x.exe", "Description": " "}],
    )
    check(
        "sel:\n  Image|endswith: 'x.exe'\n  Description: null\ncondition: sel",
        [{"Image": "x.exe"}, {"Image": "x.exe", "Description": None}, {"Image": "x.exe", "Description": ""}],
        {"Image": "x.exe", "Description": "d"},
    )


def test_not_over_missing_field_is_true(check):
    check(
        "sel:\n  Image|endswith: 'x.exe'\nfilter:\n  ParentImage|endswith: 'good.exe'\n"
        "condition: sel and not filter",
        [{"Image": "x.exe"}, {"Image": "x.exe", "ParentImage": "bad.exe"}],
        {"Image": "x.exe", "ParentImage": "C:\\good.exe"},
    )


def test_list_valued_field_any_of(check):
    check(
        "sel:\n  Data|contains: 'psexesvc'\ncondition: sel",
        {"Data": ["a", "C:\\PSEXESVC.exe"]},
        {"Data": ["a", "b"]},
        base={"Channel": "System", "EventID": 7045},
        logsource="product: windows\n  service: system",
    )


# ------------------------------------------------------------------ regex


def test_re_is_case_sensitive_and_unanchored(check):
    check(
        "sel:\n  CommandLine|re: 'Invoke-[A-Z]+'\ncondition: sel",
        {"CommandLine": "x Invoke-MIMI y"},
        {"CommandLine": "x invoke-mimi y"},
    )


def test_re_flags_i_m_s(check):
    check(
        "sel:\n  CommandLine|re|i: 'invoke-x'\ncondition: sel",
        {"CommandLine": "INVOKE-X"},
        {"CommandLine": "invoke-y"},
    )
    check(
        "sel:\n  CommandLine|re|m: '^second$'\ncondition: sel",
        {"CommandLine": "first\nsecond\nthird"},
        {"CommandLine": "first second"},
    )
    check("sel:\n  CommandLine|re|s: 'a.b'\ncondition: sel", {"CommandLine": "a\nb"}, {"CommandLine": "ab"})
    check("sel:\n  CommandLine|re: 'a.b'\ncondition: sel", {"CommandLine": "axb"}, {"CommandLine": "a\nb"})


def test_catastrophic_regex_cannot_hang(check):
    eng = check(
        "sel:\n  CommandLine|re: '(a+)+$'\ncondition: sel", {"CommandLine": "aaaa"}, {"CommandLine": "b"}
    )
    start = time.perf_counter()
    assert not hits(eng, {"CommandLine": "a" * 50_000 + "!"})
    assert time.perf_counter() - start < 1.0  # Python's re would take longer than the universe


def test_regex_re2_cannot_compile_is_rejected(tmp_path):
    rs = load_rules([make_rule(tmp_path, "sel:\n  CommandLine|re: '(a)\\1'\ncondition: sel")])
    assert not rs.rules
    assert len(rs.rejected) == 1 and "invalid" in rs.rejected[0][1]


# ------------------------------------------------------------------ encodings


def test_base64(check):
    enc = base64.b64encode(b"whoami /all").decode()
    check(
        "sel:\n  CommandLine|base64: 'whoami /all'\ncondition: sel",
        {"CommandLine": enc},
        {"CommandLine": base64.b64encode(b"whoami /none").decode()},
    )


def test_base64offset_contains(check):
    payloads = [base64.b64encode(pre + b"IEX (New-Object").decode() for pre in (b"", b"x", b"xy")]
    check(
        "sel:\n  CommandLine|base64offset|contains: 'IEX ('\ncondition: sel",
        [{"CommandLine": f"powershell -enc {p}"} for p in payloads],
        {"CommandLine": "powershell -enc " + base64.b64encode(b"iex (New").decode()},
    )


def test_wide_base64offset(check):
    data = "ping 127.0.0.1".encode("utf-16-le")
    check(
        "sel:\n  CommandLine|wide|base64offset|contains: 'ping'\ncondition: sel",
        {"CommandLine": "-e " + base64.b64encode(data).decode()},
        {"CommandLine": "-e " + base64.b64encode(b"ping 127.0.0.1").decode()},
    )


def test_windash(check):
    dashes = ["-", "/", "\u2013", "\u2014", "\u2015"]
    check(
        "sel:\n  CommandLine|windash|contains: ' -exec bypass'\ncondition: sel",
        [{"CommandLine": f"powershell {d}exec bypass"} for d in dashes],
        [{"CommandLine": "powershell exec bypass"}, {"CommandLine": "powershell +exec bypass"}],
    )


# ------------------------------------------------------------------ typed values


def test_cidr(check):
    check(
        "sel:\n  DestinationIp|cidr: '10.0.0.0/8'\ncondition: sel",
        {"DestinationIp": "10.1.2.3"},
        [{"DestinationIp": "11.1.2.3"}, {"DestinationIp": "::ffff:10.1.2.3"}, {"DestinationIp": "nope"}],
        base={"Channel": SYSMON, "EventID": 3},
        logsource="category: network_connection\n  product: windows",
    )
    check(
        "sel:\n  DestinationIp|cidr: 'fe80::/10'\ncondition: sel",
        {"DestinationIp": "fe80::1"},
        {"DestinationIp": "fec0::1"},
        base={"Channel": SYSMON, "EventID": 3},
        logsource="category: network_connection\n  product: windows",
    )


def test_exists(check):
    check(
        "sel:\n  Image|endswith: 'x.exe'\n  OriginalFileName|exists: true\ncondition: sel",
        [{"Image": "x.exe", "OriginalFileName": "a"}, {"Image": "x.exe", "OriginalFileName": None}],
        {"Image": "x.exe"},
    )
    check(
        "sel:\n  Image|endswith: 'x.exe'\n  OriginalFileName|exists: false\ncondition: sel",
        {"Image": "x.exe"},
        [{"Image": "x.exe", "OriginalFileName": None}, {"Image": "x.exe", "OriginalFileName": ""}],
    )


def test_fieldref(check):
    check(
        "sel:\n  ParentImage|fieldref: Image\ncondition: sel",
        {"Image": "C:\\A.exe", "ParentImage": "c:\\a.exe"},
        [{"Image": "C:\\A.exe", "ParentImage": "c:\\b.exe"}, {"ParentImage": "c:\\a.exe"}],
    )
    check(
        "sel:\n  CommandLine|fieldref|contains: Image\ncondition: sel",
        {"Image": "C:\\A.exe", "CommandLine": "run c:\\a.exe now"},
        {"Image": "C:\\A.exe", "CommandLine": "x"},
    )
    check(
        "sel:\n  CommandLine|fieldref|startswith: Image\ncondition: sel",
        {"Image": "C:\\A.exe", "CommandLine": "c:\\a.exe now"},
        {"Image": "C:\\A.exe", "CommandLine": "run c:\\a.exe"},
    )
    check(
        "sel:\n  CommandLine|fieldref|endswith: Image\ncondition: sel",
        {"Image": "C:\\A.exe", "CommandLine": "run c:\\a.exe"},
        {"Image": "C:\\A.exe", "CommandLine": "c:\\a.exe now"},
    )


def test_compare_gt_gte_lt_lte(check):
    net = {
        "base": {"Channel": SYSMON, "EventID": 3},
        "logsource": "category: network_connection\n  product: windows",
    }
    check(
        "sel:\n  DestinationPort|gte: 1024\ncondition: sel",
        [{"DestinationPort": 1024}, {"DestinationPort": "8080"}],
        [{"DestinationPort": 1023}, {"DestinationPort": "0x1000"}, {"DestinationPort": "abc"}, {}],
        **net,
    )
    check(
        "sel:\n  DestinationPort|gt: 1024\ncondition: sel",
        {"DestinationPort": 1025},
        {"DestinationPort": 1024},
        **net,
    )
    check(
        "sel:\n  DestinationPort|lt: 100\ncondition: sel",
        {"DestinationPort": "99"},
        {"DestinationPort": 100},
        **net,
    )
    check(
        "sel:\n  DestinationPort|lte: 100\ncondition: sel",
        {"DestinationPort": 100.0},
        {"DestinationPort": 100.5},
        **net,
    )


def test_number_string_coercion(check):
    sec = {"base": {"Channel": "Security"}, "logsource": "product: windows\n  service: security"}
    check(
        "sel:\n  EventID: 4688\ncondition: sel",
        [{"EventID": 4688}, {"EventID": "4688"}],
        [{"EventID": 4689}, {"EventID": "4688x"}],
        **sec,
    )
    check(
        "sel:\n  EventID: 4624\n  LogonType: '3'\ncondition: sel",
        [{"EventID": 4624, "LogonType": 3}, {"EventID": 4624, "LogonType": "3"}],
        {"EventID": 4624, "LogonType": 30},
        **sec,
    )


def test_timestamp_part_trap(check):
    # SigmaTimestampPart subclasses SigmaNumber: the hour of the field, not the field itself.
    check(
        "sel:\n  Image|endswith: 'x.exe'\n  TimeCreated|hour: 3\ncondition: sel",
        {"Image": "x.exe", "TimeCreated": "2024-05-01T03:15:00Z"},
        [{"Image": "x.exe", "TimeCreated": "2024-05-01T04:15:00Z"}, {"Image": "x.exe", "TimeCreated": 3}],
    )


def test_bool_value(check):
    check(
        "sel:\n  Image|endswith: 'x.exe'\n  Signed: true\ncondition: sel",
        [{"Image": "x.exe", "Signed": "true"}, {"Image": "x.exe", "Signed": True}],
        {"Image": "x.exe", "Signed": "false"},
    )


def test_expand_placeholders(tmp_path):
    det = "sel:\n  Image|endswith: 'x.exe'\n  User|expand: '%admins%'\ncondition: sel"
    rs = load_rules([make_rule(tmp_path, det)])
    assert not rs.rules and "unresolved placeholder %admins%" in rs.rejected[0][1]
    ph = tmp_path / "ph.yml"
    ph.write_text("admins: ['CORP\\\\adm_*', 'root']\n", encoding="utf-8")
    eng = Engine(load_rules([make_rule(tmp_path, det)], placeholders=ph))
    assert hits(eng, {"Image": "x.exe", "User": "corp\\ADM_bob"})
    assert hits(eng, {"Image": "x.exe", "User": "root"})
    assert not hits(eng, {"Image": "x.exe", "User": "corp\\bob"})


# ------------------------------------------------------------------ keywords and conditions


def test_keywords_substring_over_values_not_system(check):
    check(
        "keywords:\n  - 'mimikatz'\n  - 'sekurlsa::*'\ncondition: keywords",
        [{"CommandLine": "run MIMIKATZ.exe"}, {"Data": ["x", "sekurlsa::logonpasswords"]}],
        [{"CommandLine": "mimi katz"}, {"Computer": "mimikatz-host"}],
        base={"Channel": "Application", "EventID": 1000},
        logsource="product: windows\n  service: application",
    )


def test_keyword_beside_a_system_field_literal(check, tmp_path):
    """The literal prefilter leaves the System fields out of a keyword rule's text (a keyword
    search skips them): a literal that a rule takes from a System field by name must still be
    found, whether it is the keyword rule's own or another rule's in the same bucket."""
    base = {"Channel": "Application", "EventID": 1000}
    logsource = "product: windows\n  service: application"
    check(
        "keywords:\n  - 'mimikatz'\nsel:\n  Computer|contains: 'dc01xyz'\ncondition: keywords and sel",
        {"CommandLine": "run mimikatz", "Computer": "DC01XYZ.corp"},
        [{"CommandLine": "run mimikatz", "Computer": "web01"}, {"Computer": "dc01xyz mimikatz"}],
        base=base, logsource=logsource,
    )
    second = tmp_path / "second.yml"
    second.write_text(
        "title: system field rule\nid: 5d0b6a54-0000-4000-8000-000000000002\nstatus: test\nlevel: high\n"
        f"logsource:\n  {logsource}\ndetection:\n  sel:\n    Computer|contains: 'dc01xyz'\n"
        "  condition: sel\n",
        encoding="utf-8")
    keyword = make_rule(tmp_path, "keywords:\n  - 'mimikatz'\ncondition: keywords", logsource=logsource)
    both = load_rules([keyword, second])
    assert len(both.rules) == 2
    for eng in (Engine(both), Engine(both, hyperscan_after=0)):  # pyahocorasick, then Hyperscan
        got = [r.title for r in eng.match(Event({**base, "Computer": "DC01XYZ"}, "t", 1, "json"))]
        assert got == ["system field rule"]


def test_keywords_all(check):
    check(
        "keywords:\n  '|all':\n    - 'alpha'\n    - 'beta'\ncondition: keywords",
        [{"A": "alpha", "B": "beta"}, {"A": "alphabeta"}],
        {"A": "alpha"},
        base={"Channel": "Application", "EventID": 1000},
        logsource="product: windows\n  service: application",
    )


def test_condition_grammar(check):
    det = """
sel_a:
  CommandLine|contains: 'aaa'
sel_b:
  CommandLine|contains: 'bbb'
_private:
  CommandLine|contains: 'zzz'
filter:
  Image|endswith: 'ok.exe'
condition: (1 of sel_* or all of them) and not (filter and not 1 of _priv*)
"""
    check(
        det,
        [{"CommandLine": "aaa"}, {"CommandLine": "bbb zzz", "Image": "ok.exe"}],
        [
            {"CommandLine": "ccc"},
            {"CommandLine": "aaa", "Image": "C:\\ok.exe"},
            {"CommandLine": "bbb", "Image": "ok.exe"},
        ],
    )
    check(
        "sel_a:\n  CommandLine|contains: 'aaa'\nsel_b:\n  Image|endswith: 'b.exe'\ncondition: all of sel_*",
        {"CommandLine": "aaa", "Image": "b.exe"},
        [{"CommandLine": "aaa"}, {"Image": "b.exe"}],
    )


def test_them_excludes_underscore(check):
    check(
        "sel:\n  CommandLine|contains: 'aaa'\n_x:\n  CommandLine|contains: 'zzz'\ncondition: all of them",
        {"CommandLine": "aaa"},
        {"CommandLine": "zzz"},
    )


def test_neq_via_not(check):
    check(
        "sel:\n  Image|endswith: 'x.exe'\n  User|neq: 'SYSTEM'\ncondition: sel",
        [{"Image": "x.exe", "User": "bob"}],
        {"Image": "x.exe", "User": "system"},
    )


def test_deeply_nested_condition(check):
    """Conditions nested deeper than the generated code may nest are split into helper functions."""
    n = 60
    sels = "".join(f"s{i}:\n  CommandLine|contains: 'tok{i}x'\n" for i in range(n))
    cond = "s0"
    for i in range(1, n):
        cond = f"(s{i} {'and' if i % 2 else 'or'} {cond})"
    check(
        sels + f"condition: {cond}",
        {"CommandLine": " ".join(f"tok{i}x" for i in range(n))},
        {"CommandLine": " ".join(f"tok{i}x" for i in range(n) if i != n - 1)},
    )


def test_field_names_with_spaces_match_stripped_event_names(check):
    defender = {"Channel": "Microsoft-Windows-Windows Defender/Operational", "EventID": 1116}
    check(
        "sel:\n  Threat Name|contains: 'Mimikatz'\ncondition: sel",
        {"ThreatName": "HackTool:Win32/Mimikatz.D"},
        {"ThreatName": "Trojan:Win32/Other"},
        base=defender,
        logsource="product: windows\n  service: windefend",
    )

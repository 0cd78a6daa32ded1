"""Issue 20 regressions: each defect the differential checks found, with the issue's own example,
and each documented choice (README "Sigma engine"), through the real loader, compiler and index."""

from __future__ import annotations

import pytest

from test_sigma_semantics import PROC, SYSMON, engine_for, hits


@pytest.fixture
def check(tmp_path):
    """check(detection, positive_fields, negative_fields, base=PROC, logsource=...)"""

    def run(detection: str, pos: dict | list[dict], neg: dict | list[dict], base: dict | None = PROC, **kw):
        eng = engine_for(tmp_path, detection, **kw)
        for p in pos if isinstance(pos, list) else [pos]:
            assert hits(eng, p, base), f"should match: {p}"
        for n in neg if isinstance(neg, list) else [neg]:
            assert not hits(eng, n, base), f"should not match: {n}"

    return run


APP = {"base": {"Channel": "Application", "EventID": 1000},
       "logsource": "product: windows\n  service: application"}
SEC = {"base": {"Channel": "Security", "EventID": 4624},
       "logsource": "product: windows\n  service: security"}
NET = {"base": {"Channel": SYSMON, "EventID": 3},
       "logsource": "category: network_connection\n  product: windows"}


def test_keyword_regex_keeps_its_flags(check):
    check("keywords:\n  '|re|i': 'who.mi'\ncondition: keywords",
          [{"CommandLine": "WHOAMI"}, {"CommandLine": "whoami"}], {"CommandLine": "who"}, **APP)
    check("keywords:\n  '|re|m': '^whoami$'\ncondition: keywords",
          {"CommandLine": "cd\nwhoami\ndir"}, {"CommandLine": "cd whoami dir"}, **APP)
    check("keywords:\n  '|re|s': 'a.b'\ncondition: keywords",
          {"CommandLine": "a\nb"}, {"CommandLine": "a\n\nb"}, **APP)
    check("keywords:\n  '|re': 'who.mi'\ncondition: keywords",
          {"CommandLine": "whoami"}, {"CommandLine": "WHOAMI"}, **APP)


def test_numeric_keyword_is_a_substring(check):
    check("keywords:\n  - 4688\ncondition: keywords",
          [{"Message": "x4688x"}, {"Message": " 4688"}, {"Message": "14688"}, {"Pid": 14688}],
          [{"Message": "468"}, {"EventRecordID": 4688}], **APP)


def test_numbers_are_parsed_strictly(check):
    check("sel:\n  LogonType: 5\ncondition: sel",
          [{"LogonType": 5}, {"LogonType": "5"}, {"LogonType": 5.0}, {"LogonType": "5.0"}],
          [{"LogonType": v} for v in (" 5", "5 ", "05", "+5", "\uff15", "5_0", "0x5", "5e0", True)],
          **SEC)
    check("sel:\n  LogonType|gt: 5\ncondition: sel",
          [{"LogonType": "6"}, {"LogonType": 6}, {"LogonType": "5.5"}],
          [{"LogonType": v} for v in ("inf", "Infinity", "1e1", "5_0", " 50", "50 ", "\uff16", "nan", "+6")],
          **SEC)
    check("sel:\n  LogonType|lt: 0\ncondition: sel", {"LogonType": "-1"}, {"LogonType": "-inf"}, **SEC)


def test_booleans_and_cidrs_are_not_trimmed(check):
    check("sel:\n  Image|endswith: 'x.exe'\n  Enabled: true\ncondition: sel",
          [{"Image": "x.exe", "Enabled": "true"}, {"Image": "x.exe", "Enabled": "True"},
           {"Image": "x.exe", "Enabled": True}],
          [{"Image": "x.exe", "Enabled": v} for v in (" true", "true ", 1, "1", "yes")],
          logsource="category: process_creation\n  product: windows")
    check("sel:\n  DestinationIp|cidr: '10.0.0.0/8'\ncondition: sel",
          {"DestinationIp": "10.1.2.3"},
          [{"DestinationIp": v} for v in (" 10.1.2.3", "10.1.2.3 ", "10.1.2.3\n", "\uff11\uff10.1.2.3")],
          **NET)
    # the evasion from the issue: an "internal" filter under `not` must not swallow padded values
    check("sel:\n  Initiated: 'true'\nfilter:\n  DestinationIp|cidr: '10.0.0.0/8'\n"
          "condition: sel and not filter",
          {"Initiated": "true", "DestinationIp": "10.0.0.7 "},
          {"Initiated": "true", "DestinationIp": "10.0.0.7"}, **NET)


def test_pcre_dollar_matches_before_a_final_newline(check):
    check("sel:\n  CommandLine|re: '^whoami$'\ncondition: sel",
          [{"CommandLine": "whoami"}, {"CommandLine": "whoami\n"}],
          [{"CommandLine": "whoami\n\n"}, {"CommandLine": "whoami\nx"}, {"CommandLine": "whoami x"}],
          logsource="category: process_creation\n  product: windows",
          base={"Channel": SYSMON, "EventID": 1})
    # '$' inside a class and escaped '\$' stay literal
    check("sel:\n  CommandLine|re: '^a[$]\\$$'\ncondition: sel",
          [{"CommandLine": "a$$"}, {"CommandLine": "a$$\n"}], {"CommandLine": "a"},
          logsource="category: process_creation\n  product: windows",
          base={"Channel": SYSMON, "EventID": 1})


def test_pcre_dollar_translation():
    from scmwatch.sigma.values import pcre_dollar

    assert pcre_dollar("^a$") == "^a(?:\\n?\\z)"
    assert pcre_dollar("a\\$[$]") == "a\\$[$]"
    assert pcre_dollar("[]$]$") == "[]$](?:\\n?\\z)"
    assert pcre_dollar("^a$", "m") == "^a$"
    assert pcre_dollar("(?m)^a$") == "(?m)^a$"


def test_case_folding_is_lower_not_casefold(check):
    """Chosen: ``str.lower`` (Unicode simple lower-casing), like Windows' own case-insensitive
    names, not ``casefold`` (``ß`` → ``ss``): ``ß`` and ``ss`` stay different, dotted capital
    ``İ`` lowers to ``i̇`` (two code points) so ``WHOAMİ`` is not ``whoami``; ``Ä``/``ä`` and
    Cyrillic/Greek capitals match their lower case."""
    check("sel:\n  CommandLine: 'whoami'\ncondition: sel",
          [{"CommandLine": "WHOAMI"}, {"CommandLine": "WhoAmI"}], {"CommandLine": "WHOAM\u0130"},
          logsource="category: process_creation\n  product: windows", base={"Channel": SYSMON, "EventID": 1})
    check("sel:\n  User: 'stra\u00dfe'\ncondition: sel",
          [{"User": "STRA\u00dfE"}], [{"User": "strasse"}, {"User": "STRASSE"}],
          logsource="category: process_creation\n  product: windows", base={"Channel": SYSMON, "EventID": 1})
    check("sel:\n  User: '\u00e4\u03c3\u043f'\ncondition: sel",
          [{"User": "\u00c4\u03a3\u041f"}], [{"User": "a\u03c3\u043f"}],
          logsource="category: process_creation\n  product: windows", base={"Channel": SYSMON, "EventID": 1})


def test_windash_only_at_word_starts(check):
    """pySigma's windash expands a dash only where ``\\B[-/]\\b`` matches: at the start of a word
    (after a space or the value start, before a word character). A dash inside a word
    (``a-b``) or before a non-word character (``--``) stays as written."""
    check("sel:\n  CommandLine|windash|contains: 'x -enc a-b'\ncondition: sel",
          [{"CommandLine": "x /enc a-b"}, {"CommandLine": "x \u2013enc a-b"}],
          [{"CommandLine": "x /enc a/b"}, {"CommandLine": "x -enc a\u2013b"}],
          logsource="category: process_creation\n  product: windows", base={"Channel": SYSMON, "EventID": 1})


def test_reader_keeps_an_event_id_that_is_not_a_plain_decimal(check):
    from scmwatch.events.normalize import from_evtx_dict_py

    odd = ["\uff14\uff16\uff18\uff18", "0x1250", "+4688", " 4688", "4688 ", "04688"]
    for raw in [*odd, "4688"]:
        rec = {"Event": {"System": {"EventID": raw, "Channel": "Security"}, "EventData": {"A": "x"}}}
        want = 4688 if raw == "4688" else raw
        assert from_evtx_dict_py(rec)["EventID"] == want
    check("sel:\n  EventID: 4688\ncondition: sel", [{"EventID": 4688}, {"EventID": "4688"}],
          [{"EventID": v} for v in odd], base={"Channel": "Security"},
          logsource="product: windows\n  service: security")


def test_non_decimal_event_ids_are_counted_by_the_readers(tmp_path):
    import json

    from scmwatch.events import ReadStats, iter_events

    lines = [{"EventID": v, "Channel": "Security", "TimeCreated": "2024-05-01T00:00:00Z"}
             for v in ("4688", "0x1250", "+4688", " 4688", "\uff14\uff16\uff18\uff18")]
    (tmp_path / "a.json").write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    (tmp_path / "b.xml").write_text(
        '<Events><Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        "<EventID>0x1250</EventID><Channel>Security</Channel></System></Event></Events>", encoding="utf-8")
    stats = ReadStats()
    events = list(iter_events([str(tmp_path)], stats))
    assert [e.fields["EventID"] for e in events] == [4688, "0x1250", "+4688", " 4688",
                                                     "\uff14\uff16\uff18\uff18", "0x1250"]
    assert stats.errors["eventid-not-decimal"] == 5
    reported = [e for e in stats.first_errors if e.kind == "eventid-not-decimal"]
    assert len(reported) == 1 and "'0x1250' is not a plain decimal" in reported[0].message

"""Does a service name look machine-generated rather than chosen by a person?

Offensive tools name throw-away services with random strings: Metasploit psexec 16 random
mixed-case letters, Cobalt Strike 7 random alphanumerics. Vendors name services with words,
abbreviations and version digits: ``TrustedInstaller``, ``MsKeyboardFilter``, ``W32Time``,
``semav6msr64``, or a word plus an instance id (Defender's ``MpKsl0e0f4a60``).

Two shapes are told apart reliably and only those are flagged:

* 12 or more letters, mixed case, no digits: random letters change case at about every second
  letter and rarely form common English bigrams; CamelCase words change case only at word starts
  and are made of common bigrams. Flagged when (case changes - common bigrams) per letter pair is
  at least 0.2, unless capitalised words (``Xbox``, ``Net``, ``Svc``) make up 60 % of the letters.
* 16 or more letters in one case with at most one pair in five a common bigram (Empire's
  invoke_smbexec: 20 random upper-case letters; ``dmwappushservice`` has one in two).
* letters and digits interleaved at four or more places (``a9b2c3f``).

Short all-letter names (``MsMpSvc``, ``AppXSvc``, ``WdNisDrv``) score like random strings, so
names under 12 letters are never flagged by the first test: impacket's 4-letter and old
Metasploit's 8-letter names are left to the tool-specific rules. Measured by
``tests/test_service_names.py``: 16 random letters 0.73, 7 random alphanumerics 0.11 flagged
(hex-like 7 characters 0.33); none of the ~400 real Windows and vendor service names there.
"""

from __future__ import annotations

import re

_ALNUM = re.compile(r"[A-Za-z0-9]{7,64}")
_WORD = re.compile(r"[A-Z][a-z]{2,}")
_INSTANCE_SUFFIX = re.compile(r"[A-Za-z]{3,}(?=[0-9a-f]*[0-9])[0-9a-f]{6,}")
# the 60 most frequent English letter pairs: words are built from them, random letters rarely are
_COMMON = frozenset(
    "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le ve co "
    "me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns di fo ho pe ec pr no ct us "
    "ac ot il tr ly nc et ut ss so rs un lo".split()
)


def looks_random(name: object) -> bool:
    """True when ``name`` has one of the two random shapes described in the module docstring."""
    if not isinstance(name, str) or not _ALNUM.fullmatch(name) or _INSTANCE_SUFFIX.fullmatch(name):
        return False
    digits = sum(c.isdigit() for c in name)
    letters = len(name) - digits
    if digits >= 2 and letters >= 2:
        return sum(a.isdigit() != b.isdigit() for a, b in zip(name, name[1:], strict=False)) >= 4
    if digits or letters < 12:
        return False
    if name.isupper() or name.islower():  # one case: only long runs without common pairs
        return letters >= 16 and _common(name) <= 0.2 * (letters - 1)
    if sum(len(w) for w in _WORD.findall(name)) >= 0.6 * letters:
        return False  # CamelCase words: XboxNetApiSvc, WinHttpAutoProxySvc
    changes = sum(a.isupper() != b.isupper() for a, b in zip(name, name[1:], strict=False))
    return (changes - _common(name)) / (letters - 1) >= 0.2


def _common(name: str) -> int:
    """How many adjacent letter pairs of ``name`` are common English bigrams."""
    low = name.lower()
    return sum(low[i:i + 2] in _COMMON for i in range(len(low) - 1))

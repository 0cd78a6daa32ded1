"""Seeded random DACLs: the audit's access check and findings against the MS-DTYP reference.

5,000 random descriptors (allow/deny in any order, inherit-only and inherited ACEs, generic and
object-specific rights, letters and hex masks, owners with and without OWNER RIGHTS, NULL and
empty DACLs, lower-case SDDL) over the four object types the audit checks. For each one:
the maximum-allowed access the audit computes equals the rights the reference grants one request
at a time, for every token of the model and for random tokens; the tokens a finding names are
exactly the tokens the reference lets have a dangerous right; the proposed fix leaves none; the
binary form gives the same descriptor.
"""

from __future__ import annotations

import random

import pytest

import msdtyp_reference as ref
from scmwatch.audit import principals as P
from scmwatch.audit.checks import (
    FILE_DANGEROUS,
    PARENT_DIR_DANGEROUS,
    SCM_DANGEROUS,
    SERVICE_DANGEROUS,
    nonadmin_grants,
    proposed_sddl,
)
from scmwatch.audit.sd import (
    DIRECTORY,
    FILE,
    SCM,
    SERVICE,
    effective_access,
    parse_binary,
    parse_sddl,
    to_binary,
)

CASES = 5000
SEED = 20261205
TYPES = {
    "service": (SERVICE, SERVICE_DANGEROUS),
    "scm": (SCM, SCM_DANGEROUS),
    "file": (FILE, FILE_DANGEROUS),
    "directory": (DIRECTORY, PARENT_DIR_DANGEROUS),
}
ACE_SIDS = [
    *("WD", "AU", "BU", "IU", "NU", "SU", "LS", "NS", "AN", "BG", "BA", "SY", "AC", "OW", "CO", "PU", "RD"),
    *("S-1-5-12", "S-1-16-8192", "S-1-2-0", "S-1-5-3", "S-1-5-14", "S-1-5-15", "S-1-2-1"),
    "S-1-15-3-1024-528118966-3876874398-709513571-1907873084-3598227634-3698730060-278077788-3990600205",
    *("S-1-5-21-1-2-3-1001", "S-1-5-21-1-2-3-501", "S-1-5-21-1-2-3-513", "S-1-5-21-1-2-3-512"),
    "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464",
]
OWNERS = ["SY", "BA", "S-1-5-21-1-2-3-1001", "BU", "AU", "S-1-5-21-1-2-3-501", "NS"]
LETTERS = [
    "CC",
    "DC",
    "LC",
    "SW",
    "RP",
    "WP",
    "DT",
    "LO",
    "CR",
    "SD",
    "RC",
    "WD",
    "WO",
    "GA",
    "GR",
    "GW",
    "GX",
]
FLAGS = ["", "", "", "ID", "IO", "OICI", "CIIO", "OICIID", "OICIIOID"]


def random_sddl(rng: random.Random) -> str:
    owner = f"O:{rng.choice(OWNERS)}" if rng.random() < 0.4 else ""
    roll = rng.random()
    if roll < 0.04:
        dacl = "NO_ACCESS_CONTROL"
    elif roll < 0.08:
        dacl = ""
    else:
        aces = []
        for _ in range(rng.randint(1, 8)):
            kind = "A" if rng.random() < 0.7 else "D"
            if rng.random() < 0.2:
                rights = f"0x{rng.getrandbits(24) | rng.choice([0, 1 << 28, 1 << 30, 1 << 31]):x}"
            else:
                rights = "".join(rng.sample(LETTERS, rng.randint(1, 6)))
            aces.append(f"({kind};{rng.choice(FLAGS)};{rights};;;{rng.choice(ACE_SIDS)})")
        dacl = rng.choice(["", "", "P", "AI", "PAI"]) + "".join(aces)
    text = f"{owner}D:{dacl}"
    return text.lower() if rng.random() < 0.1 else text


def model_tokens(sd) -> set[P.Token]:
    """Every token the audit instantiates for this descriptor: the model's own, and each one
    with a named SID it does not already hold."""
    named = {a.sid for a in (sd.dacl.aces if sd.dacl else [])} | ({sd.owner} if sd.owner else set())
    return set(P.TOKENS) | {t for sid in named for t in P.tokens_holding(sid)}


def test_random_dacls_agree_with_the_ms_dtyp_reference():
    rng = random.Random(SEED)
    pool = sorted({parse_sddl(f"D:(A;;CC;;;{s})").dacl.aces[0].sid for s in ACE_SIDS})
    checked = findings = 0
    for n in range(CASES):
        text = random_sddl(rng)
        typename = rng.choice(sorted(TYPES))
        objtype, dangerous = TYPES[typename]
        valid = ref.MAPPINGS[typename][3]  # the type's ALL_ACCESS: the rights that mean something
        sd = parse_sddl(text)
        rsd = ref.parse(text, typename)
        assert parse_binary(to_binary(sd)).to_sddl() == sd.to_sddl(), text

        tokens = model_tokens(sd)
        extra = [frozenset(rng.sample(pool, rng.randint(0, 6))) for _ in range(2)]
        want = {
            sids: ref.granted_rights(rsd, sids, typename) for sids in {t.sids for t in tokens} | set(extra)
        }
        for sids, rights in want.items():
            got = effective_access(sd, sids, objtype) & valid
            assert got == rights, f"case {n} {typename} {text} token {sorted(sids)}: {got:#x} != {rights:#x}"
            checked += 1

        grants = nonadmin_grants(sd, objtype, dangerous)
        expected_names = {t.name for t in tokens if want[t.sids] & dangerous}
        assert {name for g in grants for name in g.tokens} == expected_names, f"case {n} {typename} {text}"
        for g in grants:
            holders = P.TOKENS if sd.dacl is None else P.tokens_holding(g.sid)
            reachable = 0
            for t in holders:
                if t.name in g.tokens:
                    reachable |= want[t.sids]
            assert g.rights & ~reachable == 0, f"case {n}: {g} {text}"
        if grants:
            findings += 1
            fixed = ref.parse(proposed_sddl(sd, objtype, dangerous), typename)
            for t in tokens:
                assert not ref.granted_rights(fixed, t.sids, typename) & dangerous, f"case {n}: fix of {text}"
    # The generator must exercise both outcomes often, or the agreement above proves little.
    assert CASES * 0.2 < findings < CASES * 0.9, findings
    assert checked > CASES * 10


@pytest.mark.parametrize(
    "sddl",
    [
        "D:(A;;GA;;;SY)(A;;GA;;;BA)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;AC)",
        "D:(A;;GA;;;SY)(A;;DCWDWO;;;S-1-15-3-1024-1065365936-1281604716-3511738428-1654721687)",
        "D:(A;;GA;;;SY)(A;;DC;;;S-1-5-12)(A;;WD;;;S-1-5-33)",
    ],
)
def test_appcontainer_capability_and_restricted_sids_never_grant_alone(sddl):
    assert nonadmin_grants(parse_sddl(sddl), SERVICE, SERVICE_DANGEROUS) == []

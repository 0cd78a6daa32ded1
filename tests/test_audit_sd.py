"""SDDL / binary security descriptors and the access check behind every audit finding."""

from __future__ import annotations

import pytest

from scmwatch.audit import principals as P
from scmwatch.audit.sd import (
    DIRECTORY,
    FILE,
    GENERIC_ALL,
    READ_CONTROL,
    SCM,
    SERVICE,
    WRITE_DAC,
    WRITE_OWNER,
    SDError,
    effective_access,
    mask_to_sddl,
    parse_binary,
    parse_sddl,
    sid_from_sddl,
    to_binary,
)

SVC_DEFAULT = (
    "D:(A;;CCLCSWRPWPDTLOCRRC;;;SY)(A;;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;BA)(A;;CCLCSWLOCRRC;;;IU)"
    "(A;;CCLCSWLOCRRC;;;SU)S:(AU;FA;CCDCLCSWRPWPDTLOCRSDRCWDWO;;;WD)"
)
CHANGE_CONFIG = 0x2
CREATE_SERVICE = 0x2
FILE_WRITE_DATA = 0x2


def user(sid: str) -> frozenset[str]:
    """The first token of the model holding ``sid`` (the interactive logon for ordinary users)."""
    return P.tokens_holding(sid)[0].sids


NETWORK_LOGON = next(t.sids for t in P.TOKENS if t.name == "network")


# ---- parsing --------------------------------------------------------------------------------


def test_sc_sdshow_output_parses_with_surrounding_blank_lines():
    sd = parse_sddl("\r\n" + SVC_DEFAULT + "\r\n\r\n")
    assert [a.sid for a in sd.dacl.aces] == ["S-1-5-18", "S-1-5-32-544", "S-1-5-4", "S-1-5-6"]
    assert sd.dacl.aces[0].mask == 0x201FD  # CC LC SW RP WP DT LO CR RC
    assert len(sd.sacl.aces) == 1 and sd.sacl.aces[0].flags == 0x80  # FA = failed access audit
    assert sd.to_sddl() == SVC_DEFAULT


@pytest.mark.parametrize(
    "abbrev,sid",
    [
        ("WD", "S-1-1-0"),
        ("AU", "S-1-5-11"),
        ("BU", "S-1-5-32-545"),
        ("IU", "S-1-5-4"),
        ("BG", "S-1-5-32-546"),
        ("BA", "S-1-5-32-544"),
        ("SY", "S-1-5-18"),
        ("LS", "S-1-5-19"),
        ("NS", "S-1-5-20"),
        ("AC", "S-1-15-2-1"),
        ("NU", "S-1-5-2"),
        ("SU", "S-1-5-6"),
        ("AN", "S-1-5-7"),
        ("s-1-5-21-1-2-3-1001", "S-1-5-21-1-2-3-1001"),
    ],
)
def test_well_known_sid_abbreviations_and_full_sids(abbrev, sid):
    assert sid_from_sddl(abbrev) == sid


def test_full_sid_and_abbreviation_are_the_same_principal():
    a = parse_sddl("D:(A;;DC;;;AU)")
    b = parse_sddl("D:(A;;DC;;;S-1-5-11)")
    tok = user(P.AUTHENTICATED_USERS)
    assert effective_access(a, tok, SERVICE) == effective_access(b, tok, SERVICE) == CHANGE_CONFIG


def test_domain_relative_abbreviation_keeps_its_rid():
    assert sid_from_sddl("DA").endswith("-512") and P.is_admin(sid_from_sddl("DA"))
    assert sid_from_sddl("DU").endswith("-513") and not P.is_admin(sid_from_sddl("DU"))


def test_flags_owner_group_and_hex_masks():
    sd = parse_sddl("O:BAG:SYD:PAI(A;OICIID;0x1301bf;;;BU)(A;CIIO;GA;;;CO)")
    assert sd.owner == "S-1-5-32-544" and sd.group == "S-1-5-18"
    assert sd.dacl.protected and sd.dacl.auto_inherited
    assert sd.dacl.aces[0].mask == 0x1301BF and sd.dacl.aces[0].inherited
    assert sd.dacl.aces[1].inherit_only


def test_conditional_ace_with_parentheses_in_the_condition():
    sd = parse_sddl('O:SYG:SYD:AI(XA;ID;0x1200a9;;;BU;(WIN://SYSAPPID Contains "A(b)c"))(A;;FA;;;SY)')
    assert len(sd.dacl.aces) == 2
    assert "A(b)c" in sd.dacl.aces[0].condition


@pytest.mark.parametrize(
    "bad",
    [
        "D:(A;;XYZ;;;SY)",
        "D:(A;;CC;;;NOPE)",
        "D:(A;;CC;;SY)",
        "D:(A;;CC;;;SY",
        "D:(Q;;CC;;;SY)",
        "D:(A;ZZ;CC;;;SY)",
        "hello",
        "",
        "D:XX(A;;CC;;;SY)",
        "D:(A;;CC;;;SY)D:(A;;CC;;;SY)",
    ],
)
def test_invalid_sddl_raises_sderror(bad):
    with pytest.raises(SDError):
        parse_sddl(bad)


# ---- binary ---------------------------------------------------------------------------------


def test_binary_layout_matches_ms_dtyp_by_hand():
    # Header (rev 1, control SELF_RELATIVE|DACL_PRESENT, owner@20, group@32, no SACL, DACL@44),
    # owner SY, group SY, DACL rev 2 size 28 with one ACCESS_ALLOWED ACE GENERIC_ALL to Everyone.
    expected = bytes.fromhex(
        "01000480"
        "14000000"
        "20000000"
        "00000000"
        "2c000000"
        "010100000000000512000000"
        "010100000000000512000000"
        "02001c0001000000"
        "00001400"
        "00000010"
        "010100000000000100000000"
    )
    assert to_binary(parse_sddl("O:SYG:SYD:(A;;GA;;;WD)")) == expected
    back = parse_binary(expected)
    assert (
        back.owner == "S-1-5-18"
        and back.dacl.aces[0].mask == GENERIC_ALL
        and back.dacl.aces[0].sid == "S-1-1-0"
    )


@pytest.mark.parametrize(
    "sddl",
    [
        "O:SYG:SY" + SVC_DEFAULT,
        "O:BAG:SYD:PAI(A;OICIID;FA;;;SY)(D;;DCWDWO;;;WD)(A;CIIO;GA;;;CO)(A;;0x1301bf;;;S-1-5-21-1-2-3-1001)",
        "D:",
        "O:SYG:SYD:AI(A;ID;CCDCLC;;;AU)S:(AU;SAFA;GA;;;WD)",
    ],
)
def test_binary_roundtrip(sddl):
    sd = parse_sddl(sddl)
    assert parse_binary(to_binary(sd)).to_sddl() == sd.to_sddl()


def test_null_and_empty_dacl_survive_binary_roundtrip_with_opposite_meanings():
    null = parse_binary(to_binary(parse_sddl("D:NO_ACCESS_CONTROL")))
    empty = parse_binary(to_binary(parse_sddl("D:")))
    assert null.dacl is None and empty.dacl is not None and empty.dacl.aces == []
    assert effective_access(null, user(P.EVERYONE), SERVICE) == SERVICE.generic_all
    assert effective_access(empty, user(P.EVERYONE), SERVICE) == 0


@pytest.mark.parametrize("cut", [1, 5, 13, 30])
def test_truncated_binary_raises(cut):
    blob = to_binary(parse_sddl("O:SYG:SY" + SVC_DEFAULT))
    with pytest.raises(SDError):
        parse_binary(blob[:-cut])


def test_binary_rejects_short_and_absolute_descriptors():
    with pytest.raises(SDError):
        parse_binary(b"\x01\x00\x04\x80")
    blob = bytearray(to_binary(parse_sddl("D:(A;;GA;;;WD)")))
    blob[3] = 0x00  # clear SE_SELF_RELATIVE
    with pytest.raises(SDError):
        parse_binary(bytes(blob))


# ---- access check ----------------------------------------------------------------------------


def test_deny_before_allow_blocks_the_group_member():
    sd = parse_sddl("D:(D;;DCWDWO;;;WD)(A;;GA;;;AU)")
    eff = effective_access(sd, user(P.AUTHENTICATED_USERS), SERVICE)
    assert not eff & (CHANGE_CONFIG | WRITE_DAC | WRITE_OWNER)
    assert eff & 0x10  # SERVICE_START still granted


def test_allow_before_deny_wins_as_in_the_kernel():
    sd = parse_sddl("D:(A;;DC;;;IU)(D;;DC;;;WD)")
    assert effective_access(sd, user(P.INTERACTIVE), SERVICE) & CHANGE_CONFIG
    # A token without IU (a network logon) only meets the deny.
    assert not effective_access(sd, NETWORK_LOGON, SERVICE) & CHANGE_CONFIG


def test_inherit_only_aces_do_not_apply_to_the_object():
    sd = parse_sddl("D:(A;OICIIO;GA;;;AU)(A;;LC;;;AU)")
    eff = effective_access(sd, user(P.AUTHENTICATED_USERS), DIRECTORY)
    assert eff == 0x4  # FILE_ADD_SUBDIRECTORY only: folders yes, files (FILE_ADD_FILE) no


def test_inherited_aces_do_apply():
    sd = parse_sddl("D:AI(A;ID;0x1301bf;;;AU)")
    assert effective_access(sd, user(P.AUTHENTICATED_USERS), FILE) & FILE_WRITE_DATA


def test_generic_write_maps_differently_per_object_type():
    gw = parse_sddl("D:(A;;GW;;;BU)")
    tok = user(P.USERS)
    assert effective_access(gw, tok, SERVICE) == READ_CONTROL | CHANGE_CONFIG
    assert effective_access(gw, tok, SCM) == READ_CONTROL | CREATE_SERVICE | 0x20  # + MODIFY_BOOT_CONFIG
    assert effective_access(gw, tok, FILE) == 0x120116  # FILE_GENERIC_WRITE
    gx = parse_sddl("D:(A;;GXGR;;;BU)")
    assert not effective_access(gx, tok, SERVICE) & CHANGE_CONFIG
    assert not effective_access(gx, tok, SCM) & CREATE_SERVICE
    assert not effective_access(gx, tok, FILE) & FILE_WRITE_DATA


def test_generic_all_maps_to_each_all_access():
    ga = parse_sddl("D:(A;;GA;;;WD)")
    assert effective_access(ga, user(P.EVERYONE), SERVICE) == 0xF01FF
    assert effective_access(ga, user(P.EVERYONE), SCM) == 0xF003F
    assert effective_access(ga, user(P.EVERYONE), FILE) == 0x1F01FF


def test_owner_gets_write_dac_unless_owner_rights_ace():
    u = "S-1-5-21-1-2-3-1001"
    sd = parse_sddl(f"O:{u}D:(A;;FR;;;BU)")
    assert effective_access(sd, user(u), FILE) & WRITE_DAC
    sd2 = parse_sddl(f"O:{u}D:(A;;FR;;;BU)(A;;FR;;;OW)")
    assert not effective_access(sd2, user(u), FILE) & WRITE_DAC


def test_group_membership_is_part_of_the_token():
    sd = parse_sddl("D:(A;;DC;;;AU)")
    assert effective_access(sd, user(P.USERS), SERVICE) & CHANGE_CONFIG  # a User is also Authenticated
    assert not effective_access(sd, user(P.GUESTS), SERVICE) & CHANGE_CONFIG  # a Guest is not


def test_conditional_aces_are_taken_at_their_worst():
    allow = parse_sddl('D:(XA;;DC;;;AU;(@User.dept == "x"))')
    deny = parse_sddl('D:(XD;;DC;;;AU;(@User.dept == "x"))(A;;DC;;;AU)')
    tok = user(P.AUTHENTICATED_USERS)
    assert effective_access(allow, tok, SERVICE) & CHANGE_CONFIG
    assert effective_access(deny, tok, SERVICE) & CHANGE_CONFIG


def test_mask_to_sddl_prefers_letters_and_aliases():
    assert mask_to_sddl(0x201FD) == "CCLCSWRPWPDTLOCRRC"
    assert mask_to_sddl(0xF003F) == "KA"
    assert mask_to_sddl(0x1F01FF) == "FA"
    assert mask_to_sddl(0x1301BF) == "0x1301bf"

"""The detection catalogue: the T1569.002 seeds the built-in pack implements, named once.

A seed is one of the 18 MaxPatrol SIEM rules of Positive Technologies' T1569.002 article (their
``PT-CR-<n>`` id) or the MITRE analytic services.exe -> cmd.exe (key ``none``). Pack rules name
their seed in the ``maxpatrol_rule`` attribute (``"PT-CR-589 Remoting_SysInternals_PsExec"``);
the coverage report, the simulator's ground truth and its checks all key on :func:`detection_key`
of that attribute, so a seed id appears here and nowhere else in the code. What each
detection looks for, and the telemetry facts the rules rely on, are in docs/detections.md
(cited across the code and the pack as ``detections.md §N``).
"""

from __future__ import annotations

from typing import Any

ATTR = "maxpatrol_rule"

WINEXEC = "PT-CR-215"
BINPATH = "PT-CR-785"
UNC = "PT-CR-1752"
SVCCTL = "PT-CR-1981"
IMPACKET = "PT-CR-226"
PSEXEC = "PT-CR-589"
MSSQL = "PT-CR-425"
NIMEXEC = "PT-CR-1838"
WANNA_SUB = "PT-CR-2756"
WANNA = "PT-CR-2757"
SMBEXEC = "PT-CR-523"
SLIVER = "PT-CR-1356"
MS17 = "PT-CR-2754"
REMREG = "PT-CR-1962"
HIDDEN = "PT-CR-778"
ODDPATH = "PT-CR-257"
PSEXEC_SRC = "PT-CR-217"
CLI = "PT-CR-271"
MITRE = "none"  # the MITRE analytic services.exe -> cmd.exe /c
# Detections with no MaxPatrol rule (the pack's own variants) share the "none" key with the
# MITRE analytic: labels name what must fire, the rule titles say which variant it is.
VARIANT = MITRE

# (seed id, seed name, detection section, known limits of the single-event/correlation form)
SEEDS: list[tuple[str, str, str, str]] = [
    (WINEXEC, "Remoting_WinExec", "2.1 winexe", ""),
    (BINPATH, "Modify_And_Start_Remote_Service", "2.2 remote binPath change",
     "set/start/restore needs the correlation; 4657 variants need a SACL on the Services key"),
    (UNC, "Service_From_Remote_File_Creation", "2.3 UNC service binary", ""),
    (SVCCTL, "SVCCTL_Connection", "2.4 svcctl bind",
     "Zeek dce_rpc is covered; RPC Firewall logs (product rpc_firewall) have no event source in scmwatch"),
    (IMPACKET, "Remoting_Impacket_PsExec", "2.5 impacket psexec", ""),
    (PSEXEC, "Remoting_SysInternals_PsExec", "2.6 PsExec (target)", ""),
    (MSSQL, "MSSQL_Windows_Service_Control", "2.7 MSSQL service control",
     "xp_servicecontrol -> 7036/7040 link is a correlation"),
    (NIMEXEC, "NimExec_Activity", "2.8 NimExec", "the NimExec chain itself is a correlation"),
    (WANNA_SUB, "Subrule_WannaMine_Usage", "2.9 WannaMine (signals)",
     "DNS signal needs a miner-pool domain list (only a keyword list ships)"),
    (WANNA, "WannaMine_Usage", "2.9 WannaMine (host correlation)", "correlation only"),
    (SMBEXEC, "Remote_Connection_Through_SMBEXEC_WinXP", "2.10 smbexec",
     "Windows XP/2003 .evt logs (Security 601/592) cannot be read; modern-Windows evidence is matched"),
    (SLIVER, "Sliver_PsExec", "2.11 Sliver psexec", ""),
    (MS17, "MS17_010_SMB_Code_Execution", "2.12 MS17-010 follow-up",
     "single events match any computer account from a remote IP; 'own account' needs the correlation"),
    (REMREG, "Remote_Registry_Enable", "2.13 RemoteRegistry enable", ""),
    (HIDDEN, "Hidden_Service_Create", "2.14 hidden service",
     "the 'no 7045/4697 for that key' absence check is a correlation"),
    (ODDPATH, "Windows_Service_Installed", "2.15 service outside system dirs",
     "no signer in the logs: Program Files is trusted by path"),
    (PSEXEC_SRC, "Execute_PSEXEC", "2.16 PsExec (source)", ""),
    (CLI, "Service_Created_Or_Modified", "2.17 CLI/PowerShell service change", ""),
    (MITRE, "MITRE analytic: services.exe -> cmd.exe /c", "2.18 services.exe spawns a shell",
     "needs the parent image: Sysmon 1 or 4688 on Windows 10/2016+"),
]

# Service-execution variants the pack covers beyond the seeds (issue: detections that hold on
# unseen logs): (key, what, pack rules by name, data sources it needs, what it cannot see).
VARIANTS: list[tuple[str, str, tuple[str, ...], str, str]] = [
    ("lineage", "services.exe -> shell on Windows 7 / 2008 R2 (4688 without the parent)",
     ("services_spawns_cmd", "services_spawns_script_host"),
     "Security 4688 + System SCM events (7036/7045 carry the SCM's PID) or earlier 4688s; Sysmon 1",
     "a creator PID seen in no logged event stays unknown"),
    ("metasploit-psexec", "Metasploit psexec / psexec_psh / getsystem services",
     ("metasploit_getsystem_service_system", "metasploit_getsystem_service_security",
      "metasploit_psexec_psh_service_system", "metasploit_psexec_psh_service_security",
      "metasploit_psexec_native_service_system", "metasploit_psexec_psh_command"),
     "System 7045 or Security 4697; process creation for the launcher", ""),
    ("random-name-failure", "non-service payloads: SCM timeouts/failures of random-named services",
     ("service_random_name_start_failure", "service_random_name_install",
      "service_random_name_install_security"),
     "System 7000/7009/7011/7034 (written by default), 7045 / 4697",
     "names under 12 letters (impacket, old Metasploit) are not judged; 7 random alphanumerics ~10 %"),
    ("metadata-smuggling", "payload chunks in service names/descriptions read back (Tchopper)",
     ("service_metadata_readback_install", "service_metadata_readback_install_security",
      "service_metadata_readback_process", "service_metadata_readback_script", "service_name_encoded_chunk"),
     "System 7045 / Security 4697, process creation, PowerShell 4104", ""),
    ("repoint-restore", "existing service re-pointed, started, restored (SCShell, SharpNoPSExec, NimExec)",
     ("corr_785_modify_and_start", "corr_1838_nimexec", "corr_scm_child_writable_dir"),
     "Sysmon 13 (or Security 4657 with a SACL) + Sysmon 1 / 4688 or System 7009/7000",
     "4657 needs a SACL on the Services key"),
    ("byovd", "vulnerable-driver services from user-writable folders (BYOVD)",
     ("driver_service_writable_path_system", "driver_service_writable_path_security",
      "driver_service_writable_path_registry", "driver_dropped_by_user_writable_process"),
     "System 7045 / Security 4697 / Sysmon 13, Sysmon 11 for the drop", ""),
    ("renamed-psexec-4688", "renamed PsExec with Security 4688 only (no OriginalFileName)",
     ("psexec_client_remote_cmdline", "psexec_share_access", "psexec_pipes", "corr_lateral_movement_chain"),
     "Security 4688 (\\host -accepteula shape) on the source, 5145 pipe names on the target",
     "a renamed binary run without -accepteula or \\host arguments"),
]

# Defender attack surface reduction rule "Block process creations originating from PSExec and
# WMI commands" (M1040): Defender 1121 (block) / 1122 (audit) name it; the audit checks its mode.
ASR_PSEXEC_WMI = "d1e49aac-8f56-4280-b9ba-993a6d77406c"


def detection_key(value: Any) -> str | None:
    """``"PT-CR-589 Remoting_SysInternals_PsExec"`` -> ``"PT-CR-589"``; ``none`` -> ``"none"``;
    None for a missing or empty attribute."""
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    if text.lower() == MITRE:
        return MITRE
    return text.split()[0]

"""Recall of the built-in rule pack on the shared EVTX attack-sample corpus.

Hunts each recording in ``../shared/corpora/evtx-attack-samples/`` with the built-in pack exactly
as ``scmwatch hunt`` does (single-event rules, correlation rules, building blocks suppressed) and
prints, per file, which rules fired and how often.
Files we classify as service-based execution (PsExec and clones, RemCom, Metasploit psexec,
smbexec, remote service creation over svcctl/7045, services.exe spawning a shell, sc.exe /
PowerShell service changes) are listed in ``EXPECTED`` with the reason; the script ends with
recall over them and the list of alerts on every *other* file, which must each be justified (a
false positive is a rule bug). Exit status 1 when an expected recording raised no alert.

    .venv/bin/python bench/pack_recall.py [CORPUS_DIR] [--all]

``--all`` also prints files without alerts. Also prints events/s of the whole pack (reader +
engine) for information; the engine benchmark is the reference for throughput.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from common import ATTACK_SAMPLES
from scmwatch.hunt import run_hunt
from scmwatch.rules import pack_paths
from scmwatch.sigma import Engine, load_rules

DEFAULT_CORPUS = ATTACK_SAMPLES

# Recordings of service-based execution (T1569.002 and its service-install building blocks),
# found by listing the corpus and inspecting 7045/4697/5145/Sysmon 1/13/17/18 events.
EXPECTED: dict[str, str] = {
    "Lateral Movement/LM_renamed_psexecsvc_5145.evtx": "PsExec -r renamed service (5145 ADMIN$ + pipes)",
    "Defense Evasion/DE_renamed_psexec_service_sysmon_17_18.evtx": "PsExec -r svchost, renamed pipes",
    "Lateral Movement/remote_file_copy_system_proc_file_write_sysmon_11.evtx": "PSEXESVC.exe process",
    "Privilege Escalation/sysmon_privesc_psexec_dwell.evtx": "renamed PsExec client + PSEXESVC",
    "Persistence/persist_valid_account_guest_rid_hijack.evtx": "PsExec EulaAccepted + PSEXESVC service key",
    "Persistence/persistence_sysmon_11_13_1_shime_appfix.evtx": "PSEXESVC.exe and services.exe -> cmd /c",
    "Lateral Movement/LM_REMCOM_5145_TargetHost.evtx": "RemCom: RemComSvc.exe over ADMIN$, svcctl",
    "Lateral Movement/LM_sysmon_psexec_smb_meterpreter.evtx": "Metasploit psexec_psh (\\ntsvcs pipe)",
    "Lateral Movement/LM_Remote_Service01_5145_svcctl.evtx": "remote service creation: svcctl bind",
    "Lateral Movement/LM_Remote_Service02_7045.evtx": "remote service creation: 7045 cmd.exe/calc.exe",
    "Privilege Escalation/sysmon_13_1_meterpreter_getsystem_NamedPipeImpersonation.evtx":
        "Meterpreter getsystem: cmd.exe /c echo > \\\\.\\pipe service",
    "Privilege Escalation/System_7045_namedpipe_privesc.evtx": "WinPwnage %COMSPEC% service",
    "AutomatedTestingTools/PanacheSysmon_vs_AtomicRedTeam01.evtx": "sc.exe create AtomicTestService",
    "Defense Evasion/apt10_jjs_sideloading_prochollowing_persist_as_service_sysmon_1_7_8_13.evtx":
        "persistence as a service from C:\\Users",
    "Lateral Movement/lm_remote_registry_sysmon_1_13_3.evtx": "RemoteRegistry service started",
    "Defense Evasion/DSE_bypass_BYOV_TDL_dummydriver_sysmon_6_7_13.evtx":
        "BYOVD: TDL/Furutaka from C:\\Users\\Public drops VBoxDrv.sys, the SCM registers it",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default=str(DEFAULT_CORPUS))
    ap.add_argument("--all", action="store_true", help="also list files without alerts")
    args = ap.parse_args(argv)
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        print(f"pack_recall: corpus not found: {corpus}", file=sys.stderr)
        return 2
    ruleset = load_rules(pack_paths())
    if ruleset.rejected:
        for path, why in ruleset.rejected:
            print(f"pack_recall: rejected {path}: {why}", file=sys.stderr)
    engine = Engine(ruleset)
    names = {r.id: r.name or r.id for r in ruleset.rules}
    names.update({str(c.id): c.name or str(c.id) for c in ruleset.correlations})
    files = sorted(p for p in corpus.rglob("*.evtx"))
    per_file: dict[str, Counter] = {}
    n_events = 0
    t0 = time.perf_counter()
    for path in files:
        # What `scmwatch hunt FILE` reports: single-event alerts minus correlation building blocks
        # (generate: false), plus correlation alerts; each recording is hunted on its own.
        rel = path.relative_to(corpus).as_posix()
        result = run_hunt([str(path)], ruleset, engine=engine)
        n_events += result.stats.events
        hits: Counter = Counter()
        for alert in result.alerts:
            kind = "corr " if alert.correlation else ""
            hits[f"{kind}{names.get(alert.rule_id, alert.rule_id)} [{alert.level}]"] += 1
        per_file[rel] = hits
    secs = time.perf_counter() - t0

    print(f"# pack: {len(ruleset.rules)} rules; corpus: {len(files)} files, {n_events} events, "
          f"{secs:.2f} s ({n_events / secs:,.0f} events/s incl. EVTX parsing)\n")
    print("## Service-execution recordings (expected to alert)")
    missed = []
    for rel, why in EXPECTED.items():
        hits = per_file.get(rel)
        if hits is None:
            print(f"  ?? {rel}: not in corpus")
            continue
        mark = "OK" if hits else "MISSED"
        if not hits:
            missed.append(rel)
        print(f"  {mark:6} {rel}  ({why})")
        for name, n in sorted(hits.items()):
            print(f"           {n:4d} x {name}")
    print("\n## Alerts on other files (each must be justified in the rule-pack notes)")
    others = 0
    for rel, hits in per_file.items():
        if rel in EXPECTED or (not hits and not args.all):
            continue
        others += bool(hits)
        print(f"  {rel}")
        for name, n in sorted(hits.items()):
            print(f"           {n:4d} x {name}")
    found = len(EXPECTED) - len(missed)
    print(f"\nrecall: {found}/{len(EXPECTED)} service-execution recordings detected; "
          f"{others} other files with alerts")
    for rel in missed:
        print(f"MISSED: {rel}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Mitigation audit for T1569.002: service/SCM permissions (M1026), the PsExec/WMI ASR rule (M1040),
writable or interceptable service binaries (M1022). Reads collector snapshots, ``reg export`` files
and sc.exe output; see ``scmwatch audit --help``."""

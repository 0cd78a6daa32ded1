"""The small "world" every scenario writes into: hosts, accounts, processes, logon sessions.

Attack traces only look real when the identifiers line up across events and hosts: the
``TargetLogonId`` of a network logon is the ``SubjectLogonId`` of the 5145 and the 4697 that
follow it, a child's ``ParentProcessId`` is its parent's ``ProcessId``, the source host's IP is
the ``IpAddress`` on the target. This module owns those identities so scenarios only say *what*
happens, never how to invent a consistent PID or logon id.

Everything is drawn from one ``random.Random`` so a seed reproduces the whole dataset.
"""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import dataclass, field
from functools import lru_cache

DOMAIN = "CORP"
DNS_DOMAIN = "corp.example.com"
DOMAIN_SID = "S-1-5-21-3623811015-3361044348-30300820"

# Well-known processes every Windows host runs, with the PID range they usually get.
CORE_PROCESSES = {
    "System": "System",
    "smss": "C:\\Windows\\System32\\smss.exe",
    "wininit": "C:\\Windows\\System32\\wininit.exe",
    "services": "C:\\Windows\\System32\\services.exe",
    "lsass": "C:\\Windows\\System32\\lsass.exe",
    "sysmon": "C:\\Windows\\Sysmon64.exe",
    "eventlog": "C:\\Windows\\System32\\svchost.exe",
    "explorer": "C:\\Windows\\explorer.exe",
}


@dataclass(slots=True)
class Account:
    """A user or machine account as the Security log names it."""

    name: str  # SAM name: "jdoe", "WS0001$"
    domain: str  # NetBIOS domain: "CORP", "NT AUTHORITY"
    sid: str
    admin: bool = False

    @property
    def qualified(self) -> str:
        """``DOMAIN\\name`` as Sysmon's ``User`` field writes it."""
        return f"{self.domain}\\{self.name}"


SYSTEM = Account("SYSTEM", "NT AUTHORITY", "S-1-5-18", admin=True)
LOCAL_SERVICE = Account("LOCAL SERVICE", "NT AUTHORITY", "S-1-5-19")
NETWORK_SERVICE = Account("NETWORK SERVICE", "NT AUTHORITY", "S-1-5-20")


@dataclass(slots=True)
class Proc:
    """A running process: what Sysmon 1 / 4688 describe and children point back to."""

    pid: int
    guid: str
    image: str
    cmdline: str
    user: Account
    logon_id: str  # hex, "0x3e7" for SYSTEM
    logon_guid: str
    integrity: str = "System"
    parent: Proc | None = None

    @property
    def name(self) -> str:
        return self.image.rsplit("\\", 1)[-1]


@dataclass(slots=True)
class Logon:
    """One logon session (4624): its id ties later Security events to the source address."""

    logon_id: str
    account: Account
    logon_type: int
    ip: str
    port: int
    workstation: str
    auth: str  # "NTLM" | "Kerberos" | "Negotiate"
    guid: str


LEGACY_OS = frozenset({"win7", "win2008r2"})  # hosts whose Security log has no process parents


@dataclass
class Host:
    """One Windows machine (or a Linux attack box that leaves no Windows logs of its own)."""

    name: str  # NetBIOS name, upper case
    ip: str
    os: str  # "win10", "win2016", "win2019", "win7", "win2008r2", "linux"
    role: str  # "workstation", "server", "dc", "sql", "fileserver", "attacker"
    rng: random.Random
    machine_sid: str = ""
    core: dict[str, Proc] = field(default_factory=dict)
    _pid: int = 0
    _logon: int = 0
    _guid_seed: str = ""
    # Services installed on the host: key name → (display name, image path, start type text)
    services: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DNS_DOMAIN}" if self.os != "linux" else self.name.lower()

    @property
    def computer(self) -> str:
        """The ``Computer`` value Windows writes (FQDN for domain members)."""
        return self.fqdn

    @property
    def registry_audit(self) -> bool:
        """Servers audit the Services key (SACL + *Audit Registry*): they log 4657 for its values."""
        return self.role in ("dc", "fileserver", "sql", "server")

    @property
    def machine_account(self) -> Account:
        return Account(f"{self.name}$", DOMAIN, self.machine_sid)

    @property
    def modern(self) -> bool:
        """Win10/2016+ writes ``ParentProcessName`` in 4688 (v2) and 4624 v2; Win7 / 2008 R2 write
        4688 v1 without the parent and 4624 v0 (detections.md §0.5)."""
        return self.os not in LEGACY_OS

    def new_pid(self) -> int:
        self._pid += self.rng.randrange(4, 400, 4)
        if self._pid > 60000:
            self._pid = 1000 + self.rng.randrange(0, 400, 4)
        return self._pid

    def new_logon_id(self) -> str:
        self._logon += self.rng.randrange(0x100, 0x4000)
        return hex(self._logon)

    def guid(self, t: float) -> str:
        """A Sysmon-style process GUID: host-stable prefix, creation time, random tail (as real ones)."""
        n = self.rng.getrandbits(48)
        ts = int(t) & 0xFFFFFFFF
        return f"{self._guid_seed}-{ts >> 16:04X}-{ts & 0xFFFF:04X}-0000-{n:012X}"

    def spawn(
        self,
        t: float,
        image: str,
        cmdline: str,
        parent: Proc | None,
        user: Account | None = None,
        logon_id: str | None = None,
        integrity: str | None = None,
    ) -> Proc:
        """A new process; user and logon session are inherited from the parent unless given."""
        if user is None:
            user = parent.user if parent else SYSTEM
        if logon_id is None:
            logon_id = parent.logon_id if parent else "0x3e7"
        if integrity is None:
            integrity = parent.integrity if parent else "System"
        lg = parent.logon_guid if parent and parent.logon_id == logon_id else self.guid(t)
        return Proc(self.new_pid(), self.guid(t), image, cmdline, user, logon_id, lg, integrity, parent)


@dataclass
class World:
    """The simulated network: hosts by role, accounts, the attacker's boxes."""

    rng: random.Random
    hosts: list[Host]
    users: list[Account]
    admins: list[Account]
    attacker_linux: Host
    attacker_windows: Host
    boot_time: float

    @property
    def windows_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.os != "linux"]

    def by_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.role == role]

    def servers(self) -> list[Host]:
        return [h for h in self.hosts if h.role in ("server", "sql", "fileserver", "dc")]

    def workstations(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "workstation"]


def rand_letters(rng: random.Random, n: int, alphabet: str = string.ascii_letters) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


@lru_cache(maxsize=4096)
def fake_hashes(image: str) -> str:
    """Deterministic Sysmon ``Hashes`` value for an image path (stable across runs)."""
    h = hashlib.sha256(image.lower().encode()).hexdigest().upper()
    md5 = hashlib.md5(image.lower().encode()).hexdigest().upper()  # noqa: S324 - not security
    sha1 = hashlib.sha1(image.lower().encode()).hexdigest().upper()  # noqa: S324
    return f"SHA1={sha1},MD5={md5},SHA256={h},IMPHASH={md5[::-1]}"


def build_world(rng: random.Random, n_hosts: int, boot_time: float) -> World:
    """A domain with a DC, a file server, an SQL server, app servers and workstations.

    Every third workstation from the second (WS0002, WS0005, ...) runs Windows 7 and every third
    app server from the second Windows Server 2008 R2: their Security logs write 4688 v1 (no
    ``ParentProcessName``) and 4624 v0, the logs that defeat parent-based rules.

    ``n_hosts`` counts Windows hosts (minimum 4: DC, file server, SQL server, one workstation);
    one extra Windows workstation is the attacker's foothold and one Linux box the attacker's
    own machine (it leaves only network traces).
    """
    n_hosts = max(4, n_hosts)
    hosts: list[Host] = []
    roles = ["dc", "fileserver", "sql"]
    n_servers = max(0, n_hosts // 6)
    roles += ["server"] * n_servers
    roles += ["workstation"] * (n_hosts - len(roles))
    counters = {"dc": 0, "fileserver": 0, "sql": 0, "server": 0, "workstation": 0}
    prefix = {"dc": "DC", "fileserver": "FS", "sql": "SQL", "server": "APP", "workstation": "WS"}
    for i, role in enumerate(roles):
        counters[role] += 1
        width = 4 if role == "workstation" else 2
        name = f"{prefix[role]}{counters[role]:0{width}d}"
        subnet = 10 if role == "workstation" else 20
        ip = f"10.1.{subnet + (i // 250)}.{10 + i % 240}"
        os = "win10" if role == "workstation" else rng.choice(["win2016", "win2019"])
        if role == "workstation" and counters[role] % 3 == 2:
            os = "win7"  # every third workstation, from the second on, is a legacy host
        elif role == "server" and counters[role] % 3 == 2:
            os = "win2008r2"
        hosts.append(_make_host(rng, name, ip, os, role, boot_time))
    foothold = _make_host(rng, "WS9001", "10.1.10.251", "win10", "workstation", boot_time)
    hosts.append(foothold)
    attacker = _make_host(rng, "kali", "10.1.99.23", "linux", "attacker", boot_time)
    users = [
        Account(n, DOMAIN, f"{DOMAIN_SID}-{1104 + k}")
        for k, n in enumerate(
            ["jdoe", "asmith", "bwayne", "ckent", "dprince", "pparker", "tstark", "nromanoff"]
        )
    ]
    admins = [
        Account("adm-jdoe", DOMAIN, f"{DOMAIN_SID}-1201", admin=True),
        Account("adm-itops", DOMAIN, f"{DOMAIN_SID}-1202", admin=True),
        Account("Administrator", DOMAIN, f"{DOMAIN_SID}-500", admin=True),
    ]
    return World(rng, hosts, users, admins, attacker, foothold, boot_time)


def _make_host(rng: random.Random, name: str, ip: str, os: str, role: str, boot: float) -> Host:
    h = Host(name=name, ip=ip, os=os, role=role, rng=random.Random(rng.getrandbits(64)))
    h.machine_sid = f"{DOMAIN_SID}-{rng.randrange(1300, 9000)}"
    h._guid_seed = f"{rng.getrandbits(32):08X}"
    h._pid = 300
    h._logon = rng.randrange(0x30000, 0x90000)
    if os == "linux":
        return h
    system = Proc(4, h.guid(boot), "System", "", SYSTEM, "0x3e7", h.guid(boot))
    h.core["System"] = system
    wininit = h.spawn(boot, CORE_PROCESSES["wininit"], "wininit.exe", system)
    for key in ("services", "lsass"):
        h.core[key] = h.spawn(
            boot + 1, CORE_PROCESSES[key], "C:\\Windows\\system32\\" + key + ".exe", wininit
        )
    h.core["wininit"] = wininit
    services = h.core["services"]
    h.core["sysmon"] = h.spawn(boot + 5, CORE_PROCESSES["sysmon"], "C:\\Windows\\Sysmon64.exe", services)
    mpeng = "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24030.9-0\\MsMpEng.exe"
    h.core["defender"] = h.spawn(boot + 6, mpeng, f'"{mpeng}"', services)
    h.core["eventlog"] = h.spawn(
        boot + 2,
        CORE_PROCESSES["eventlog"],
        "C:\\Windows\\System32\\svchost.exe -k LocalServiceNetworkRestricted -p",
        services,
        user=LOCAL_SERVICE,
        logon_id="0x3e5",
    )
    h.core["netsvcs"] = h.spawn(
        boot + 2,
        CORE_PROCESSES["eventlog"],
        "C:\\Windows\\system32\\svchost.exe -k netsvcs -p",
        services,
    )
    return h

"""The random-service-name test (scmwatch.events.names) against real names and random generators.

The real names are Windows' own service keys and common vendor services (security agents, drivers
abused in BYOVD, hardware utilities), written down for this test; the corpus and simulator names
are added when available. The rates below are the ones the module docstring quotes.
"""

from __future__ import annotations

import random
import string

import pytest

from paths import ATTACK_SAMPLES
from scmwatch.events.model import ReadStats
from scmwatch.events.names import looks_random
from scmwatch.events.read import iter_events
from scmwatch.simulate.background import SERVICE_PROCS, SYSTEM_INSTALLS

REAL = [
    "AGSService", "AJRouter", "ALG", "AMDExternalEventsUtility", "AMDPowerProfiler",
    "AMDRyzenMasterDriverV22", "AMDSAFD", "ASUSOptimization", "ATSZIO64", "AarSvc", "AdobeARMservice",
    "AdobeUpdateService", "AppIDSvc", "AppMgmt", "AppReadiness", "AppXSvc", "Appinfo",
    "ArmouryCrateService", "AsIO3", "AssignedAccessManagerSvc", "AsusCertService", "AtomicTestService",
    "AudioEndpointBuilder", "Audiosrv", "AxInstSV", "BDESVC", "BFE", "BITS", "BTAGService",
    "BcastDVRUserService", "BluetoothUserService", "BrokerInfrastructure", "BthAvctpSvc",
    "CCleanerPerformanceOptimizerService", "CDPSvc", "CDPUserSvc", "CSFalconService", "CaptureService",
    "CbDefense", "CertPropSvc", "CiscoAMP", "ClipSVC", "ConsentUxUserSvc", "CoreMessagingRegistrar",
    "CredentialEnrollmentManagerUserSvc", "CrowdStrike", "CryptSvc", "CscService", "CyOptics",
    "CyProtectDrv", "CylanceSvc", "DPS", "DcomLaunch", "DellClientManagementService", "DevQueryBroker",
    "DeviceAssociationService", "DeviceInstall", "DevicePickerUserSvc", "DevicesFlowUserSvc", "Dhcp",
    "DiagTrack", "DialogBlockingService", "DispBrokerDesktopSvc", "DisplayEnhancementService",
    "DmEnrollmentSvc", "Dnscache", "DoSvc", "DropboxUpdate", "DsSvc", "DusmSvc", "EFS",
    "ESProtectionDriver", "EntAppSvc", "EventLog", "EventSystem", "FDResPub", "Fax", "FontCache3",
    "FrameServer", "FvSvc", "GLCKIO2", "GameInputSvc", "GoogleChromeElevationService",
    "GoogleUpdaterService140", "GraphicsPerfSvc", "HPSysInfoCap", "HWiNFO64", "HvHost",
    "HxUpdateServiceInfo", "IKEEXT", "ImControllerService", "InstallService", "Intel2xDriver",
    "Intel2xHeci", "InventorySvc", "IpxlatCfgSvc", "KNDBWM", "KeyIso", "Killer", "KtmRm", "LMS", "LSM",
    "LanmanServer", "LanmanWorkstation", "LenovoVantageService", "LicenseManager", "LightingService",
    "LocalKdc", "LxpSvc", "LxssManager", "MBAMService", "MBAMSwissArmy", "MSDTC", "MSIService", "MSSQL15",
    "MSiSCSI", "MapsBroker", "McAfeeFramework", "McpManagementService", "MessagingService",
    "MicrosoftEdgeElevationService", "MixedRealityOpenXRSvc", "MozillaMaintenance", "MpKsl0e0f4a60",
    "MpKslDrv", "MpKslc0b0f2a1", "MsIo64", "MsKeyboardFilter", "MsMpSvc", "NPSMSvc", "NTIOLib",
    "NVDisplay", "NahimicService", "NaturalAuthentication", "NcaSvc", "NcbService", "NcdAutoSetup",
    "NdisCap", "NetSetupSvc", "NetTcpPortSharing", "Netlogon", "Netman", "NgcCtnrSvc", "NlaSvc",
    "NvContainerLocalSystem", "OneDriveUpdaterSvc", "OneSyncSvc", "P9RdrService", "PNRPAutoReg",
    "PROCEXP152", "PcaSvc", "PeerDistSvc", "PenService", "PerfHost", "PhoneSvc", "PimIndexMaintenanceSvc",
    "PlugPlay", "PolicyAgent", "PortProxy", "Power", "PrintNotify", "PrintWorkflowUserSvc", "ProfSvc",
    "PushToInstall", "QWAVE", "QcomWlanSrv", "QualysAgent", "ROGLiveService", "RTCore64",
    "Rapid7InsightAgent", "RasAuto", "RasMan", "RemoteAccess", "RemoteRegistry", "RetailDemo", "RmSvc",
    "RpcEptMapper", "RpcSs", "RstMwService", "RtkAudioUniversalService", "RtkBtManServ", "SAVService",
    "SCPolicySvc", "SCardSvr", "SDRSVC", "SEMgrSvc", "SENS", "SNMP", "SNMPTRAP", "SQLAgent", "SSDPSRV",
    "SamSs", "ScDeviceEnum", "Schedule", "SecurityHealthService", "Sense", "SensorService",
    "SentinelAgent", "SentinelMonitor", "SepMasterService", "Service", "SessionEnv", "SgrmBroker",
    "SharedAccess", "SharedRealitySvc", "ShellHWDetection", "SmartCardSvc", "SmsRouter", "SntpService",
    "Sophos", "Spooler", "SstpSvc", "StateRepository", "StiSvc", "StorSvc", "SupportAssistAgent",
    "SynTPEnhService", "SynapticsSvc", "SysMain", "Sysmon64", "SysmonDrv", "TaniumClient", "TapiSrv",
    "TeamViewer15", "TeamsUpdaterSvc", "TermService", "TextInputManagementService", "Themes",
    "TieringEngineService", "TimeBrokerSvc", "TmCCSF", "TokenBroker", "TrkWks", "TroubleshootingSvc",
    "TrustedInstaller", "UI0Detect", "UdkUserSvc", "UevAgentService", "UmRdpService", "UnistoreSvc",
    "UserDataSvc", "UserManager", "UsoSvc", "VBoxDrv", "VGAuthService", "VMTools", "VSS", "VacSvc",
    "VaultSvc", "W32Time", "W3SVC", "WAS", "WEPHOSTSVC", "WFDSConMgrSvc", "WFPLWFS", "WMPNetworkSvc",
    "WManSvc", "WPDBusEnum", "WRSVC", "WSearch", "WaaSMedicSvc", "WalletService", "WarpJITSvc",
    "WavesSysSvc", "WbioSrvc", "Wcmsvc", "WdBoot", "WdFilter", "WdNisDrv", "WdNisSvc", "WdiServiceHost",
    "Wecsvc", "WerSvc", "WiaRpc", "WinDefend", "WinHttpAutoProxySvc", "WinPwnage", "WinRM", "WinRing0x64",
    "Winmgmt", "WpcMonSvc", "WpnService", "WpnUserService", "XblAuthManager", "XblGameSave", "XboxGipSvc",
    "XboxNetApiSvc", "ZeroConfigNetworkingService", "ZoomCptService", "amdfendr", "amdlog", "autotimesvc",
    "avast", "avgntflt", "avgsvc", "avipbb", "avnetflt", "brave", "bravem", "bthserv", "camsvc", "cbdhsvc",
    "cphs", "cplspcon", "cpuz141", "csagent", "cxmon", "dbutil23", "diagnosticshub", "dmwappushservice",
    "edgeupdatem", "ekrn", "embeddedmode", "ene", "esifsvc", "fdPHost", "fhsvc", "fluentbit", "gdrv",
    "gpsvc", "gupdate", "gupdatem", "hidserv", "hmpalertsvc", "hns", "iaStorAfsService", "iaStorV",
    "ibtsiva", "icssvc", "igccservice", "igfxCUIService2", "iphlpsvc", "iqvw64e", "jhi_service", "klif",
    "klim6", "kneps", "kprocesshacker", "lfsvc", "lmhosts", "mbamchameleon", "mbamswissarmy", "mhyprot2",
    "mpssvc", "netprofm", "nsi", "ntrtscan", "nxlog", "osqueryd", "p2pimsvc", "p2psvc",
    "perceptionsimulation", "pla", "remotesvc", "seclogon", "semav6msr64", "shpamsvc", "smphost",
    "spectrum", "splunkd", "spoolfool", "sppsvc", "stisvc", "svsvc", "swprv", "tiledatamodelsvc",
    "tzautoupdate", "uhssvc", "upnphost", "vds", "velociraptor", "vmcompute", "vmicguestinterface",
    "vmicheartbeat", "vmickvpexchange", "vmicrdv", "vmicshutdown", "vmictimesync", "vmicvmsession",
    "vmicvss", "vmvss", "webthreatdefsvc", "whesvc", "winlogbeat", "wisvc", "wlidsvc", "wlpasvc",
    "wmiApSrv", "workfolderssvc", "wscsvc", "wuauserv", "wuqisvc", "xagt", "zam64",
]


def _rate(alphabet: str, length: int, n: int = 4000) -> float:
    rng = random.Random(7)
    return sum(looks_random("".join(rng.choice(alphabet) for _ in range(length))) for _ in range(n)) / n


def test_no_real_service_name_looks_random():
    assert [n for n in REAL if looks_random(n)] == []


def test_simulator_background_service_names_do_not_look_random():
    names = {s[0] for s in SERVICE_PROCS} | {s[1] for s in SERVICE_PROCS} | {s[0] for s in SYSTEM_INSTALLS}
    assert names and not [n for n in names if looks_random(n)]


def test_random_generators_are_flagged_at_the_documented_rates():
    assert _rate(string.ascii_letters, 16) >= 0.65  # Metasploit psexec: rand_text_alpha(16)
    assert _rate(string.ascii_letters + string.digits, 7) >= 0.08  # Cobalt Strike-style 7 alnum
    assert _rate("0123456789abcdef", 7) >= 0.25


@pytest.mark.parametrize("name", ["qAcPZAvTZqHWbDSe", "tKwPzXaQmBnVcLsE", "a9b2c3f", "7e1b8a3d"])
def test_random_examples(name):
    assert looks_random(name)


@pytest.mark.parametrize("name", ["MpKsl0e0f4a60", "semav6msr64", "WinHttpAutoProxySvc", "MsMpSvc",
                                  "CDPUserSvc_3e4f1", "Windows Event Log", "", None, 12345, "x" * 200])
def test_vendor_shapes_and_odd_values_are_not_random(name):
    assert not looks_random(name)


@pytest.mark.skipif(not ATTACK_SAMPLES.is_dir(), reason="../shared corpus not present")
def test_no_service_name_in_the_corpus_looks_random():
    seen = set()
    for ev in iter_events([str(ATTACK_SAMPLES)], ReadStats()):
        f = ev.fields
        for key in ("ServiceName", "param1", "param2"):
            v = f.get(key)
            if isinstance(v, str) and f.get("EventID") in (7045, 4697, 7036, 7040, 7000, 7009, 7011, 7034):
                seen.add(v)
    assert seen and not [n for n in seen if looks_random(n)]

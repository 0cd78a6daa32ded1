<#
.SYNOPSIS
    scmwatch audit collector: writes one JSON snapshot of this host's service security state.

.DESCRIPTION
    Plain Windows PowerShell 5.1 (works on 7.x too). No modules to install, nothing stays running,
    nothing on the host is changed. Run it elevated: sc.exe sdshow and some file ACLs need admin.

    It records every service and driver (name, display name, ImagePath, start type, account,
    service DACL from 'sc.exe sdshow', ServiceDll), the SCM's own DACL ('sc.exe sdshow scmanager'),
    the ACL (SDDL) of each service binary / DLL and of every directory above it, the Defender ASR rules
    (Get-MpPreference, else the ASR policy registry key), host name and OS version.

    Output: <OutDir>\<COMPUTERNAME>.scmwatch.json (UTF-8). Collect the files from all hosts, then:
        scmwatch audit <folder with the .scmwatch.json files>

.PARAMETER OutDir
    Where to write the snapshot (default: current directory; a share works too).

.EXAMPLE
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File .\collect.ps1 -OutDir \\fileserver\audit$
#>
[CmdletBinding()]
param(
    [string]$OutDir = "."
)

$SchemaName = 'scmwatch.audit.snapshot'
$SchemaVersion = 1
$CollectorVersion = '1.0'
$Errors = New-Object System.Collections.ArrayList

function Get-WmiInstances([string]$Class) {
    # Get-CimInstance where available (PS 3+), Get-WmiObject as the 5.1 fallback.
    try {
        return @(Get-CimInstance -ClassName $Class -ErrorAction Stop)
    } catch {
        try {
            return @(Get-WmiObject -Class $Class -ErrorAction Stop)
        } catch {
            [void]$Errors.Add("${Class}: " + $_.Exception.Message)
            return @()
        }
    }
}

function Get-SdShow([string]$Name) {
    # sc.exe prints the SDDL between blank lines, or '[SC] OpenService FAILED n:' and a message.
    $lines = & sc.exe sdshow $Name 2>&1
    $text = ((@($lines) | ForEach-Object { "$_".Trim() }) -join '').Trim()
    if ($LASTEXITCODE -ne 0 -or $text -notmatch '^(O:|G:|D:|S:)') {
        return @{ sddl = $null; error = ('sc.exe sdshow ' + $Name + ': ' + $text) }
    }
    return @{ sddl = $text; error = $null }
}

function Expand-ImagePath([string]$PathName) {
    if (-not $PathName) { return $null }
    $p = [Environment]::ExpandEnvironmentVariables($PathName.Trim())
    # StartsWith, not -like: '?' is a wildcard for -like.
    $ci = [StringComparison]::OrdinalIgnoreCase
    if ($p.StartsWith('\??\')) { $p = $p.Substring(4) }
    if ($p.StartsWith('\SystemRoot\', $ci)) { $p = $env:SystemRoot + $p.Substring(11) }
    if ($p -like 'system32\*' -or $p -like 'SysWOW64\*') { $p = Join-Path $env:SystemRoot $p }
    return $p
}

function Resolve-ServiceBinary([string]$PathName) {
    # Which file the SCM would run: the quoted part, else the shortest existing space-delimited
    # prefix (with '.exe' appended as CreateProcess does), else up to the first known extension.
    $p = Expand-ImagePath $PathName
    if (-not $p) { return $null }
    if ($p.StartsWith('"')) {
        $end = $p.IndexOf('"', 1)
        if ($end -gt 1) { return $p.Substring(1, $end - 1) }
        return $p.Substring(1)
    }
    if ($p.StartsWith('\\')) {
        if ($p -match '^(.+?\.(exe|com|bat|cmd|sys|dll))(\s|$)') { return $Matches[1] }
        return ($p -split ' ')[0]
    }
    $parts = $p -split ' '
    for ($i = 1; $i -le $parts.Count; $i++) {
        $candidate = ($parts[0..($i - 1)] -join ' ')
        if (Test-Path -LiteralPath $candidate -PathType Leaf) { return $candidate }
        if (Test-Path -LiteralPath ($candidate + '.exe') -PathType Leaf) { return ($candidate + '.exe') }
    }
    if ($p -match '^(.+?\.(exe|com|bat|cmd|sys|dll))(\s|$)') { return $Matches[1] }
    return $parts[0]
}

function Get-PathAcl([string]$Path) {
    $item = [ordered]@{ path = $Path; sddl = $null; exists = $false; is_dir = $false; error = $null }
    if ($Path.StartsWith('\\')) {
        $item.exists = $null
        $item.error = 'network path: not queried'
        return $item
    }
    try {
        if (Test-Path -LiteralPath $Path) {
            $item.exists = $true
            $item.is_dir = [bool](Test-Path -LiteralPath $Path -PathType Container)
            $item.sddl = (Get-Acl -LiteralPath $Path -ErrorAction Stop).Sddl
        }
    } catch {
        $item.error = $_.Exception.Message
    }
    return $item
}

# ---- host ----------------------------------------------------------------------------------
$os = Get-WmiInstances 'Win32_OperatingSystem' | Select-Object -First 1
$cs = Get-WmiInstances 'Win32_ComputerSystem' | Select-Object -First 1
$hostInfo = [ordered]@{
    name       = $env:COMPUTERNAME
    domain     = $(if ($cs) { $cs.Domain } else { $null })
    os_caption = $(if ($os) { $os.Caption } else { $null })
    os_version = $(if ($os) { $os.Version } else { [Environment]::OSVersion.Version.ToString() })
}

# ---- SCM -----------------------------------------------------------------------------------
$scmSd = Get-SdShow 'scmanager'
$scm = [ordered]@{ sddl = $scmSd.sddl; error = $scmSd.error }

# ---- services and drivers ------------------------------------------------------------------
$services = New-Object System.Collections.ArrayList
$pathSet = @{}
$all = @(Get-WmiInstances 'Win32_Service') + @(Get-WmiInstances 'Win32_SystemDriver')
foreach ($s in $all) {
    $type = $null
    try {
        $type = (Get-ItemProperty -LiteralPath ('HKLM:\SYSTEM\CurrentControlSet\Services\' + $s.Name) `
            -Name Type -ErrorAction Stop).Type
    } catch { }
    $dll = $null
    try {
        $dll = (Get-ItemProperty -LiteralPath ('HKLM:\SYSTEM\CurrentControlSet\Services\' + $s.Name + '\Parameters') `
            -Name ServiceDll -ErrorAction Stop).ServiceDll
        if ($dll) { $dll = Expand-ImagePath $dll }
    } catch { }
    $sd = Get-SdShow $s.Name
    $binary = Resolve-ServiceBinary $s.PathName
    $account = $null
    if ($s.PSObject.Properties['StartName']) { $account = $s.StartName }
    [void]$services.Add([ordered]@{
        name         = $s.Name
        display_name = $s.DisplayName
        image_path   = $s.PathName
        binary       = $binary
        start_type   = $s.StartMode
        service_type = $type
        account      = $account
        sddl         = $sd.sddl
        sddl_error   = $sd.error
        service_dll  = $dll
    })
    # The binary, the service DLL and every directory above them, once each.
    foreach ($start in @($binary, $dll)) {
        $p = $start
        while ($p) {
            $key = $p.ToLowerInvariant()
            if ($pathSet.ContainsKey($key)) { break }
            $pathSet[$key] = $p
            try { $p = [System.IO.Path]::GetDirectoryName($p) } catch { $p = $null }
        }
    }
}
$paths = New-Object System.Collections.ArrayList
foreach ($p in ($pathSet.Values | Sort-Object)) {
    [void]$paths.Add((Get-PathAcl $p))
}

# ---- Defender ASR --------------------------------------------------------------------------
$defender = [ordered]@{ available = $false; source = $null; asr_rules = @(); error = $null }
$rules = New-Object System.Collections.ArrayList
try {
    $mp = Get-MpPreference -ErrorAction Stop
    $ids = @($mp.AttackSurfaceReductionRules_Ids)
    $acts = @($mp.AttackSurfaceReductionRules_Actions)
    for ($i = 0; $i -lt $ids.Count; $i++) {
        if (-not $ids[$i]) { continue }
        $act = $null
        if ($i -lt $acts.Count -and $null -ne $acts[$i]) { $act = [int]$acts[$i] }
        [void]$rules.Add([ordered]@{ id = ("" + $ids[$i]).ToLowerInvariant(); action = $act })
    }
    $defender.available = $true
    $defender.source = 'Get-MpPreference'
} catch {
    $defender.error = 'Get-MpPreference: ' + $_.Exception.Message
    $policy = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows Defender\Windows Defender Exploit Guard\ASR\Rules'
    if (Test-Path -LiteralPath $policy) {
        $props = Get-ItemProperty -LiteralPath $policy
        foreach ($prop in $props.PSObject.Properties) {
            if ($prop.Name -match '^[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}$') {
                [void]$rules.Add([ordered]@{ id = $prop.Name.ToLowerInvariant(); action = [int]$prop.Value })
            }
        }
        $defender.available = $true
        $defender.source = 'policy-registry'
    }
}
$defender.asr_rules = @($rules)

# ---- write ---------------------------------------------------------------------------------
$snapshot = [ordered]@{
    schema            = $SchemaName
    schema_version    = $SchemaVersion
    collector_version = $CollectorVersion
    collected_at      = (Get-Date).ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'")
    host              = $hostInfo
    scm               = $scm
    services          = @($services)
    paths             = @($paths)
    defender          = $defender
    errors            = @($Errors)
}
$json = ConvertTo-Json -InputObject $snapshot -Depth 6
if (-not (Test-Path -LiteralPath $OutDir)) { New-Item -ItemType Directory -Path $OutDir | Out-Null }
$file = Join-Path (Resolve-Path -LiteralPath $OutDir).ProviderPath ($env:COMPUTERNAME + '.scmwatch.json')
[System.IO.File]::WriteAllText($file, $json, (New-Object System.Text.UTF8Encoding($false)))
Write-Host ("scmwatch: wrote " + $file + " (" + $services.Count + " services, " + $paths.Count + " paths)")

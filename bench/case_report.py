"""``scmwatch report`` on a case with many alerts (default 100k): seconds and HTML size.

The case is written through the real writer (``CaseWriter``, the sink ``hunt --case`` uses)
from generated alerts: --hosts hosts, 40 rules, one alert in ten a correlation with 2-5
evidence events whose command lines name another host (so the lateral-movement graph has
edges). The report then runs as the CLI in a fresh process with the default alert limit
(2,000 listed, the rest summarised) and with --max-alerts 10000.

    python bench/case_report.py [--alerts 100000] [--hosts 200]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from common import run_cli
from scmwatch.alerts import LEVELS, Alert
from scmwatch.case import CaseWriter
from scmwatch.events.model import Event, format_time

START = 1_714_982_400.0  # 2024-05-06T08:00:00Z


def make_alert(rng: random.Random, i: int, hosts: list[str]) -> Alert:
    host = rng.choice(hosts)
    rule = rng.randrange(40)
    t = START + rng.uniform(0, 7 * 86400)
    fields = {"EventID": 7045, "Channel": "System", "Computer": f"{host}.corp.example.com",
              "TimeCreated": format_time(t), "ServiceName": f"svc{rng.randrange(5000)}",
              "ImagePath": f"C:\\Windows\\Temp\\{rng.randrange(10**6)}.exe", "AccountName": "LocalSystem"}
    ev = Event(fields, f"logs/{host}/System.evtx", i, "evtx", t)
    level = LEVELS[1 + rule % 4]
    if i % 10:
        return Alert(f"rule-{rule:02d}", f"Generated rule {rule:02d}", level, "bench", ["attack.t1569.002"],
                     ev)
    src = rng.choice(hosts)
    chain = [Event({"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
                    "Computer": f"{src}.corp.example.com", "TimeCreated": format_time(t - k),
                    "Image": "C:\\Tools\\psexec.exe", "CommandLine": f"psexec.exe \\\\{host} -s cmd"},
                   f"logs/{src}/Sysmon.evtx", i * 10 + k, "evtx", t - k)
             for k in range(rng.randint(1, 4), 0, -1)]
    corr = {"type": "temporal_ordered", "group_by": {"link.host": host},
            "window": {"start": format_time(t - 5), "end": format_time(t), "timespan": 120.0}}
    return Alert("corr-lateral", "Generated lateral chain", "critical", "bench", ["attack.t1569.002"], ev,
                 events=[*chain, ev], correlation=corr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=100_000)
    ap.add_argument("--hosts", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(7)
    hosts = [f"ws{n:04d}" for n in range(args.hosts)]
    with tempfile.TemporaryDirectory(prefix="scmwatch-bench-report-") as tmp:
        case = Path(tmp) / "case.duckdb"
        start = time.perf_counter()
        writer = CaseWriter(str(case), command="bench/case_report.py")
        for i in range(args.alerts):
            writer.write(make_alert(rng, i, hosts))
        writer.close({"events": args.alerts})
        seconds = time.perf_counter() - start
        print(f"case: {args.alerts:,} alerts written in {seconds:.1f} s ({args.alerts / seconds:,.0f} "
              f"alerts/s), {case.stat().st_size / 1e6:.1f} MB")
        for extra in ([], ["--max-alerts", "10000"]):
            out = Path(tmp) / "report.html"
            secs, rss, _ = run_cli(["report", str(case), "-o", str(out), *extra])
            label = " ".join(extra) or "default (2,000 listed)"
            print(f"report {label:<24} {secs:6.2f} s  {out.stat().st_size / 1e6:6.2f} MB HTML  "
                  f"peak RSS {rss / 1024:.0f} MB")
            os.unlink(out)


if __name__ == "__main__":
    main()

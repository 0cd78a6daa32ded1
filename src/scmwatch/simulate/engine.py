"""The generation loop: schedule attack instances in a stream of background episodes, merge
their events in time order, write them, and record ground truth in ``labels.jsonl``.

Streaming by construction: episodes are produced in start-time order and each one's events lie
within [start - LOOKBACK, start + its duration], so a heap holds only the events of the last
few minutes; everything older than the next episode's start minus LOOKBACK is written out.
Memory therefore stays flat from 1 thousand to 10 million events.
"""

from __future__ import annotations

import bisect
import heapq
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from scmwatch.simulate import background as bg
from scmwatch.simulate.actions import Ctx
from scmwatch.simulate.labels import pack_rules_by_detection
from scmwatch.simulate.records import ALL_TELEMETRY, TELEMETRY_OF, Label, Rec
from scmwatch.simulate.scenarios import Scenario, load_all
from scmwatch.simulate.world import Host, World, build_world

LOOKBACK = 120.0  # scenarios may emit events up to this long before their nominal start


@dataclass
class Options:
    scenarios: list[str]
    out: Path
    hosts: int = 8
    events: int = 20000
    seed: int = 1
    fmt: str = "jsonl"
    start: float = datetime(2024, 5, 6, 8, 0, tzinfo=UTC).timestamp()
    telemetry: tuple[str, ...] = ALL_TELEMETRY
    instances: int = 1  # instances of each scenario
    labels: Path | None = None  # default: out / "labels.jsonl"
    compress: bool = False  # gzip the log files


@dataclass
class Result:
    events: int = 0
    files: int = 0
    instances: int = 0
    labelled: int = 0
    seconds: float = 0.0
    labels: Path | None = None
    by_scenario: dict[str, int] = field(default_factory=dict)


def expand_names(names: list[str]) -> list[str]:
    """``all`` → every scenario; unknown names raise ``KeyError`` with the name."""
    registry = load_all()
    out: list[str] = []
    for name in names:
        if name == "all":
            out.extend(n for n in registry if n not in out)
        elif name == "none":
            continue
        elif name not in registry:
            raise KeyError(name)
        elif name not in out:
            out.append(name)
    return out


def _targets(world: World, sc: Scenario) -> list[Host]:
    foothold = world.attacker_windows
    pool = {
        "any": [h for h in world.windows_hosts if h is not foothold],
        "server": world.servers(),
        "sql": world.by_role("sql"),
        "fileserver": world.by_role("fileserver"),
        "workstation": [h for h in world.workstations() if h is not foothold],
    }[sc.target]
    return pool or [h for h in world.windows_hosts if h is not foothold]


# Keep instances on one host apart, so each label set stands alone: correlation windows reach
# 2 min (binPath hijack) and 1 h (WannaMine, for repeats of the same scenario).
GUARD_ANY = 600.0
GUARD_SAME = 3900.0


def _pick_target(
    rng: random.Random, pool: list[Host], name: str, at: float, used: list[tuple[float, str, Host]]
) -> Host:
    """A random target not attacked within the guard windows; the least recently hit one otherwise."""

    def busy(h: Host) -> bool:
        return any(
            h is u and (at - t0 < GUARD_ANY or (n == name and at - t0 < GUARD_SAME)) for t0, n, u in used
        )

    free = [h for h in pool if not busy(h)]
    if free:
        return rng.choice(free)
    last = {id(h): max((t0 for t0, _, u in used if u is h), default=0.0) for h in pool}
    return min(pool, key=lambda h: last[id(h)])


def simulate(opts: Options) -> Result:
    t_begin = time.perf_counter()
    registry = load_all()
    names = expand_names(opts.scenarios)
    rng = random.Random(opts.seed)
    world = build_world(rng, opts.hosts, opts.start - 86400)
    opts.out.mkdir(parents=True, exist_ok=True)
    from scmwatch.simulate.writers import Writer

    writer = Writer(opts.out, opts.fmt, opts.compress)
    allowed = set(opts.telemetry)
    full = allowed >= set(ALL_TELEMETRY)
    channel_ok: dict[str, bool] = {}

    def keep(rec: Rec) -> bool:
        ok = channel_ok.get(rec.channel)
        if ok is None:
            tel = "zeek" if rec.channel.startswith("zeek/") else TELEMETRY_OF.get(rec.channel, "")
            ok = channel_ok[rec.channel] = tel in allowed
        return ok

    # Timeline: size it so the background reaches the requested event count at ~0.5 episodes/s/host.
    n_hosts = len(world.windows_hosts)
    episode_rate = 0.5 * n_hosts
    duration = max(7200.0, opts.events / bg.AVG_EVENTS_PER_EPISODE / episode_rate)
    instances: list[tuple[float, str, int]] = []
    total = len(names) * opts.instances
    for k in range(total):
        name = names[k % len(names)]
        slot = (k + 0.5) / max(total, 1)
        at = opts.start + duration * (0.05 + 0.9 * slot) + rng.uniform(-0.2, 0.2) * duration / max(total, 1)
        instances.append((at, name, k + 1))
    instances.sort()

    kinds = bg.KINDS
    hosts_for = {
        "any": world.windows_hosts,
        "workstation": world.workstations(),
        "server": world.servers(),
        "sql": world.by_role("sql") or world.servers(),
    }
    cum: list[float] = []
    acc = 0.0
    for _, w, _, _ in kinds:
        acc += w
        cum.append(acc)

    labels_path = opts.labels or (opts.out / "labels.jsonl")
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    rules_by_det = pack_rules_by_detection()
    label_lines: list[bytes] = []
    inst_info: dict[int, dict] = {}
    heap: list[tuple[float, int, Rec]] = []
    seq = 0
    produced = 0
    result = Result(labels=labels_path)

    def push(recs: list[Rec]) -> None:
        nonlocal seq, produced
        for rec in recs:
            if keep(rec):
                seq += 1
                produced += 1
                heapq.heappush(heap, (rec.t, seq, rec))

    def flush(watermark: float) -> None:
        while heap and heap[0][0] < watermark:
            _, _, rec = heapq.heappop(heap)
            rel, line, rid = writer.write(rec)
            lab = rec.label
            if lab is not None:
                info = inst_info[lab.instance]
                info["events"] += 1
                info["first"] = min(info["first"], rec.t)
                info["last"] = max(info["last"], rec.t)
                result.labelled += 1
                expect, allow = lab.expect, lab.allow
                if opts.fmt == "ecs" and "Data" in rec.data:
                    # Winlogbeat renames unnamed <Data> to param1..N: rules on Data cannot see it
                    expect, allow = (), lab.allow + lab.expect
                entry = {
                    "kind": "event",
                    "instance": lab.instance,
                    "scenario": lab.scenario,
                    "file": rel,
                    "line": line,
                    "record_id": rid,
                    "channel": rec.channel,
                    "event_id": rec.eid or None,
                    "computer": rec.host.computer if rec.host else None,
                    "time": writer.clock.iso(rec.t),
                    "expect": list(expect),
                    "allow": [d for d in allow if d not in expect],
                }
                label_lines.append(orjson.dumps(entry) + b"\n")

    ctx = Ctx(world, rng)
    used: list[tuple[float, str, Host]] = []  # (start, scenario, target) of the instances so far
    t = opts.start
    next_i = 0
    while True:
        attacks_left = next_i < len(instances)
        if produced >= opts.events and not attacks_left:
            break
        t += rng.expovariate(episode_rate)
        while next_i < len(instances) and instances[next_i][0] <= t:
            at, name, k = instances[next_i]
            next_i += 1
            sc = registry[name]
            irng = random.Random(f"{opts.seed}/{k}/{name}")
            dst = _pick_target(irng, _targets(world, sc), name, at, used)
            used.append((at, name, dst))
            src = {"windows": world.attacker_windows, "linux": world.attacker_linux}.get(sc.source, dst)
            ictx = Ctx(world, irng, label=Label(k, name))
            sc.run(ictx, at, src, dst)
            for rec in ictx.recs:
                if rec.t < at - LOOKBACK:
                    raise AssertionError(f"{name}: event {rec.eid} earlier than its lookback window")
            corr_full = full and not (
                opts.fmt == "ecs" and any("Data" in rec.data for rec in ictx.recs if rec.label is not None)
            )
            inst_info[k] = {
                "kind": "instance",
                "instance": k,
                "scenario": name,
                "source": src.computer,
                "target": dst.computer,
                "source_ip": src.ip,
                "target_ip": dst.ip,
                # correlations join several sources: only required when every source is written
                # (and, in ECS, when no event of the instance lost its unnamed <Data> to param1..N)
                "correlations": sorted(ictx.corr) if corr_full else [],
                "allowed_correlations": sorted(
                    (ictx.corr_allowed | ictx.corr) - (ictx.corr if corr_full else set())
                ),
                "events": 0,
                "first": float("inf"),
                "last": 0.0,
            }
            push(ictx.recs)
            result.by_scenario[name] = result.by_scenario.get(name, 0) + 1
        if produced < opts.events:
            i = bisect.bisect_left(cum, rng.random() * acc)
            _, _, fn, where = kinds[i]
            pool = hosts_for[where] or world.windows_hosts
            ctx.recs = []
            fn(ctx, t, pool[int(rng.random() * len(pool))])
            push(ctx.recs)
        flush(t - LOOKBACK)
    flush(float("inf"))
    writer.close()

    with open(labels_path, "wb") as fh:
        # the rule ids behind each detection key, once (events and instances name detections)
        fh.write(orjson.dumps({"kind": "pack", "rules_by_detection": rules_by_det}) + b"\n")
        fh.writelines(label_lines)
        for k in sorted(inst_info):
            info = inst_info[k]
            if info["events"]:
                info["first"] = writer.clock.iso(info["first"])
                info["last"] = writer.clock.iso(info["last"])
            else:
                info["first"] = info["last"] = None
            fh.write(orjson.dumps(info) + b"\n")
    result.events = writer.events
    result.files = len(writer.files)
    result.instances = len(instances)
    result.seconds = time.perf_counter() - t_begin
    return result

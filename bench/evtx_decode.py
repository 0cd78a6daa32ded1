"""The C EVTX chunk decoder alone (``events/_evtx.c``): microseconds per event of
``decode_chunk`` over every chunk of the shared attack corpus, held in memory (no file reads,
no hunt), ungated and with a gate that keeps every record (as a hunt with all SigmaHQ asks).

``--base PATH`` loads another build of the extension (e.g. main's ``_evtx*.so`` copied
aside) and runs it alternately with this one, pass by pass, so machine noise hits both alike;
it also checks that both give the same events.

    python bench/evtx_decode.py [--seconds 3] [--base PATH]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import sys
import time
from typing import Any

from common import ATTACK_SAMPLES, evtx_files
from scmwatch.events import evtx_reader
from scmwatch.events.evtx_reader import CHUNK_SIZE, HEADER_SIZE
from scmwatch.events.model import Event
from scmwatch.events.normalize import _CORE, SYSTEM_ATTRS, from_evtx_dict


def load_build(path: str) -> Any:
    """Another build of ``_evtx``, configured as evtx_reader configures its own."""
    loader = importlib.machinery.ExtensionFileLoader("scmwatch.events._evtx", path)
    spec = importlib.util.spec_from_file_location("scmwatch.events._evtx", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    module.configure(from_evtx_dict, Event, SYSTEM_ATTRS, _CORE)
    return module.decode_chunk


def events_of(decode: Any, chunks: list[bytes], want: Any) -> list:
    out = []
    for chunk in chunks:
        got = decode(chunk, "x", want, {})
        if isinstance(got, tuple):
            out.extend((e.record_id, list(e.fields.items())) for e in got[0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum time per side and mode")
    ap.add_argument("--base", help="another build of the _evtx extension to run alternately")
    args = ap.parse_args()
    if evtx_reader.DECODE_CHUNK is None:
        print("the C decoder is not built (or SCMWATCH_PURE_PYTHON is set)", file=sys.stderr)
        return 1
    chunks = []
    for path in evtx_files(ATTACK_SAMPLES):
        with open(path, "rb") as fh:
            data = fh.read()
        for i in range((len(data) - HEADER_SIZE) // CHUNK_SIZE):
            chunks.append(data[HEADER_SIZE + i * CHUNK_SIZE:HEADER_SIZE + (i + 1) * CHUNK_SIZE])
    if not chunks:
        print(f"no .evtx files under {ATTACK_SAMPLES}", file=sys.stderr)
        return 1
    builds = {"this build": evtx_reader.DECODE_CHUNK}
    if args.base:
        builds = {"base": load_build(args.base), **builds}
        same = events_of(builds["base"], chunks, None) == events_of(evtx_reader.DECODE_CHUNK, chunks, None)
        print(f"same events from both builds: {same}")
    for mode, want in (("ungated", None), ("gate keeps all", lambda channel, eid: True)):
        totals = {k: [0, 0.0] for k in builds}
        while min(t for _, t in totals.values()) < args.seconds:
            for name, decode in builds.items():
                t0 = time.perf_counter()
                n = 0
                for chunk in chunks:
                    got = decode(chunk, "x", want, {})
                    if isinstance(got, tuple):
                        n += len(got[0]) + got[1]
                totals[name][1] += time.perf_counter() - t0
                totals[name][0] += n
        line = "   ".join(f"{k}: {t / n * 1e6:5.2f} us/event" for k, (n, t) in totals.items())
        print(f"{mode:15s} {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

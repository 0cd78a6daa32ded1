"""Progress for URL inputs: the bar's total comes from the sizes the fsspec backend reports
(a remote directory's listing, a named object's HEAD Content-Length), served on loopback."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

from scmwatch.events import ReadStats, discover  # noqa: E402
from scmwatch.hunt import run_hunt  # noqa: E402
from scmwatch.progress import Progress, input_size  # noqa: E402
from scmwatch.rules import PACK_DIR  # noqa: E402
from scmwatch.sigma import Engine, load_rules  # noqa: E402

LINE = '{"EventID": 7045, "Channel": "System", "Computer": "ws1", "TimeCreated": "2024-05-01T10:00:00Z", ' \
    '"ServiceName": "x%d", "ImagePath": "cmd.exe /c echo %d"}\n'


@pytest.fixture()
def served(tmp_path: Path):
    root = tmp_path / "www"
    (root / "logs").mkdir(parents=True)
    for i, n in enumerate((3, 40)):
        (root / "logs" / f"h{i}.jsonl").write_text("".join(LINE % (k, k) for k in range(n)))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_inputs_carry_their_size_for_the_progress_total(served):
    root, base = served
    sizes = {f.name: f.stat().st_size for f in (root / "logs").iterdir()}
    named = list(discover([f"{base}/logs/h1.jsonl"], ReadStats()))
    assert [i.size for i in named] == [sizes["h1.jsonl"]]
    listed = list(discover([f"{base}/logs/"], ReadStats()))
    assert sorted(i.size for i in listed) == sorted(sizes.values())
    assert input_size(listed) == sum(sizes.values()) > 0


def test_the_bar_advances_by_the_bytes_of_url_inputs(served):
    root, base = served
    rs = load_rules([str(PACK_DIR)])
    done = []
    real = Progress.advance

    def advance(self, nbytes, events):
        done.append(nbytes)
        real(self, nbytes, events)

    Progress.advance = advance
    try:
        res = run_hunt([f"{base}/logs/"], rs, engine=Engine(rs))
    finally:
        Progress.advance = real
    assert res.summary["events"] == 43 and res.summary["files"] == 2
    assert sorted(done) == sorted(f.stat().st_size for f in (root / "logs").iterdir())

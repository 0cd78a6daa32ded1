"""``scmwatch rules update`` against a real HTTP server on 127.0.0.1 serving packages built here
(from rules written by the test): a good release, a corrupt zip, a path-traversal member, an
interrupted download, a rule that does not load, an oversized package. After every failure the
previously installed set must still be there, unchanged."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scmwatch.cli import main as cli_main
from scmwatch.export import update as upd

RULE = """title: Test rule {n}
id: 7e570000-0000-4000-8000-{n:012d}
status: test
level: medium
logsource: {{product: windows, service: system}}
detection:
  selection:
    EventID: 7045
    ServiceName: 'svc{n}'
  condition: selection
"""


def package(n_rules: int, extra: dict[str, str] | None = None, stored: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zf:
        for n in range(1, n_rules + 1):
            zf.writestr(f"rules/windows/builtin/system/rule_{n}.yml", RULE.format(n=n))
        zf.writestr("LICENSE", "test licence text\n")
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    return buf.getvalue()


class Server:
    """Serves ``routes[path] = (body, mode)``; mode 'truncate' sends half the body, then closes."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                body, mode = routes.get(self.path, (b"", "missing"))
                if mode == "missing":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if mode == "truncate" else body)
                self.wfile.flush()
                if mode == "truncate":
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 5
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    monkeypatch.setenv("SCMWATCH_DATA_DIR", str(d))
    return d


def _state(data_dir: Path) -> tuple[str, dict, list[str]]:
    root = data_dir / "rules"
    link = root / "sigmahq"
    files = sorted(str(p.relative_to(link)) for p in link.rglob("*.yml"))
    return str(link.resolve()), json.loads((root / "sigmahq.json").read_text()), files


def _install_good(server, data_dir, capsys) -> tuple[str, dict, list[str]]:
    server.routes["/download/r2026-11-30/sigma_core.zip"] = (package(3), "ok")
    assert cli_main(["rules", "update", "--source", server.url("/download/r2026-11-30/sigma_core.zip")]) == 0
    assert "installed SigmaHQ rules r2026-11-30: 3 rules in 3 files" in capsys.readouterr().err
    return _state(data_dir)


def test_update_installs_records_and_is_usable_as_rules_sigmahq(server, data_dir, capsys, tmp_path):
    target, record, files = _install_good(server, data_dir, capsys)
    assert record["version"] == "r2026-11-30" and record["rules"] == 3 and len(record["sha256"]) == 64
    assert files == [f"rules/windows/builtin/system/rule_{n}.yml" for n in (1, 2, 3)]
    assert not (Path(target) / "LICENSE").exists()  # rule files only
    events = tmp_path / "e.ndjson"
    events.write_text(json.dumps({"EventID": 7045, "Channel": "System", "Computer": "h",
                                  "TimeCreated": "2024-05-01T10:00:00Z", "ServiceName": "svc2"}) + "\n")
    assert cli_main(["hunt", str(events), "--rules", "sigmahq", "--format", "jsonl"]) == 0
    out = capsys.readouterr().out
    assert [json.loads(x)["title"] for x in out.splitlines()] == ["Test rule 2"]
    assert cli_main(["rules", "export", "-t", "sqlite", "--rules", "sigmahq"]) == 0
    assert capsys.readouterr().out.count("SELECT") == 3
    # a second release replaces the first, and the old set directory is removed
    server.routes["/download/r2026-12-01/sigma_core.zip"] = (package(4), "ok")
    assert cli_main(["rules", "update", "--source", server.url("/download/r2026-12-01/sigma_core.zip")]) == 0
    assert "(was r2026-11-30)" in capsys.readouterr().err
    new_target, record, files = _state(data_dir)
    assert record["version"] == "r2026-12-01" and len(files) == 4 and not Path(target).exists()


@pytest.mark.parametrize("name, body, mode, message", [
    ("corrupt", package(3)[:-40] + b"\x00" * 40, "ok", "not a valid zip package"),
    ("crc", package(3, stored=True).replace(b"svc2", b"svcX"), "ok", "bad CRC"),
    ("traversal", package(2, {"../../evil.yml": RULE.format(n=9)}), "ok", "path traversal"),
    ("absolute", package(2, {"/tmp/evil.yml": RULE.format(n=9)}), "ok", "path traversal"),
    ("interrupted", package(3), "truncate", "download interrupted"),
    ("broken rule", package(2, {"rules/bad.yml": "title: x\ndetection: [1, 2\n"}), "ok", "do not load"),
    ("no rules", package(0), "ok", "no Sigma rule files"),
    ("http error", b"", "missing", "HTTP 404"),
])
def test_a_failed_update_keeps_the_previous_set(server, data_dir, capsys, tmp_path, name, body, mode,
                                                message):
    before = _install_good(server, data_dir, capsys)
    server.routes["/bad.zip"] = (body, mode)
    assert cli_main(["rules", "update", "--source", server.url("/bad.zip")]) == 1
    err = capsys.readouterr().err
    assert message in err and "kept r2026-11-30 (3 rules)" in err
    assert _state(data_dir) == before
    assert not (tmp_path / "evil.yml").exists() and not (data_dir / "evil.yml").exists()
    leftovers = [p.name for p in (data_dir / "rules").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_size_limits(server, data_dir, capsys, monkeypatch):
    server.routes["/big.zip"] = (package(3), "ok")
    monkeypatch.setattr(upd, "MAX_DOWNLOAD", 200)
    assert cli_main(["rules", "update", "--source", server.url("/big.zip")]) == 1
    assert "over the 200 byte limit" in capsys.readouterr().err
    monkeypatch.setattr(upd, "MAX_DOWNLOAD", 64 << 20)
    monkeypatch.setattr(upd, "MAX_UNPACKED", 300)
    assert cli_main(["rules", "update", "--source", server.url("/big.zip")]) == 1
    assert "unpacks to over 300 bytes" in capsys.readouterr().err
    assert not (data_dir / "rules" / "sigmahq").exists()


def test_update_from_a_file_and_rules_sigmahq_before_any_update(tmp_path, data_dir, capsys):
    events = tmp_path / "e.ndjson"
    events.write_text("{}\n")
    assert cli_main(["hunt", str(events), "--rules", "sigmahq"]) == 2
    assert "run 'scmwatch rules update' first" in capsys.readouterr().err
    zpath = tmp_path / "sigma_all_rules.zip"
    zpath.write_bytes(package(2))
    assert cli_main(["rules", "update", "--source", str(zpath)]) == 0
    rec = upd.installed()
    assert rec is not None and rec.version.startswith("sha256:") and rec.rules == 2
    assert cli_main(["rules", "update", "--source", str(tmp_path / "missing.zip")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_channels_name_the_release_assets():
    assert upd.CHANNELS == {"core": "sigma_core.zip", "core+": "sigma_core+.zip",
                            "all": "sigma_all_rules.zip"}
    with pytest.raises(upd.UpdateError, match="unsupported source scheme"):
        upd.fetch("ftp://example.invalid/x.zip", Path("/dev/null"))

"""The network side of ``scmwatch watch``: listeners, webhook and metrics options, set up around
the watcher (library: ``scmwatch.live.listen``, ``.webhook``, ``.metrics``)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from scmwatch.escape import terminal
from scmwatch.live.listen import (
    MAX_BODY,
    AddressError,
    ListenerThread,
    is_loopback,
    open_listeners,
    parse_address,
    spool_dir,
)
from scmwatch.live.metrics import Registry, watcher_samples
from scmwatch.live.webhook import (
    FORMATS,
    GIVE_UP_AFTER,
    WebhookDelivery,
    WebhookError,
    WebhookTarget,
    check_url,
)


def add_network_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network input, webhook and metrics")
    g.add_argument("--listen-http", metavar="[HOST:]PORT", default=None,
                   help="accept NDJSON / JSON-array batches by HTTP POST (NXLog om_http, Fluent Bit http, "
                   "Logstash http; gzip, chunked); answered 200 once fsynced in STATE/spool/http "
                   "(HOST defaults to 127.0.0.1)")
    g.add_argument("--listen-tcp", metavar="[HOST:]PORT", default=None,
                   help="accept newline-delimited JSON over TCP (NXLog om_tcp); spooled in STATE/spool/tcp")
    g.add_argument("--max-body", type=int, default=MAX_BODY, metavar="BYTES",
                   help=f"largest HTTP body accepted, raw or gunzipped (default {MAX_BODY}); larger: 413")
    g.add_argument("--webhook", metavar="URL", default=None,
                   help="POST every alert here (retries with backoff, Idempotency-Key: <alert id>, "
                   "STATE/dead-letter.jsonl when the receiver stays down)")
    g.add_argument("--webhook-format", choices=FORMATS, default="json",
                   help="json (the alert plus alert_id, default), slack (mrkdwn text), teams (Adaptive Card)")
    g.add_argument("--webhook-give-up", type=float, default=GIVE_UP_AFTER, metavar="SECONDS",
                   help="dead-letter an alert not delivered this long after it was raised "
                   f"(default {GIVE_UP_AFTER:g})")
    g.add_argument("--metrics", metavar="[HOST:]PORT", default=None,
                   help="serve GET /metrics (Prometheus text) and /metrics.json on this address")


def network_problem(args: argparse.Namespace) -> str | None:
    """A one-line usage error in the network options, or None."""
    for opt in ("listen_http", "listen_tcp", "metrics"):
        text = getattr(args, opt)
        if text is None:
            continue
        try:
            parse_address(text)
        except AddressError as exc:
            return f"--{opt.replace('_', '-')}: {exc}"
    if args.max_body <= 0:
        return "--max-body must be positive"
    if args.webhook_give_up <= 0:
        return "--webhook-give-up must be positive"
    if args.webhook is not None:
        try:
            check_url(args.webhook)
        except WebhookError as exc:
            return f"--webhook: {exc}"
    return None


class Network:
    """What the network options start, in the order the watcher needs them: :meth:`open` binds
    the listeners (their spool directories become sources) before the watcher starts,
    :meth:`target` is the webhook delivery target, :meth:`serve_metrics` exposes the watcher,
    :meth:`close` stops accepting first, then delivery."""

    def __init__(self, args: argparse.Namespace, state_dir: str) -> None:
        self.args = args
        self.state_dir = state_dir
        self.addresses = {kind: addr for kind, addr in (("http", args.listen_http), ("tcp", args.listen_tcp))
                          if addr is not None}
        self.registry = Registry()
        self.thread: ListenerThread | None = None
        self.webhook: WebhookTarget | None = None

    def spools(self) -> list[str]:
        """The spool directories to follow as sources: every listener's, also of a previous run
        with a listener this run does not open (what it acknowledged is still processed)."""
        out = []
        for kind in ("http", "tcp"):
            path = spool_dir(self.state_dir, kind)
            if kind in self.addresses or os.path.isdir(path):
                os.makedirs(path, exist_ok=True)
                out.append(path)
        return out

    def open(self) -> None:
        """Bind the listeners and the metrics endpoint (raises OSError: port in use, ...)."""
        for kind, text in self.addresses.items():
            host, _ = parse_address(text)
            if not is_loopback(host):
                _warn(f"--listen-{kind} on {host}, not loopback: anyone who can reach it can inject "
                      "events (no authentication; put a TLS proxy in front)")
        if self.args.metrics is not None and not is_loopback(parse_address(self.args.metrics)[0]):
            _warn("--metrics not on loopback: the counters name your sources")
        if self.addresses or self.args.metrics is not None:
            self.thread = open_listeners(self.state_dir, self.addresses, max_body=self.args.max_body,
                                         report=_warn, metrics=self.args.metrics, registry=self.registry)
            for lst in self.thread.listeners:
                _warn(f"watch: listening for {lst.kind.upper()} on {lst.host}:{lst.port}")
            for ep in self.thread.endpoints:
                _warn(f"watch: metrics on http://{ep.host}:{ep.port}/metrics")

    def target(self) -> WebhookTarget | None:
        if self.args.webhook is None:
            return None
        delivery = WebhookDelivery(self.state_dir, self.args.webhook, self.args.webhook_format,
                                   give_up_after=self.args.webhook_give_up, report=_warn)
        if delivery.stats.resumed:
            _warn(f"watch: {delivery.stats.resumed} alert(s) from the last run still to deliver "
                  "to the webhook")
        self.webhook = WebhookTarget(delivery)
        self.registry.register(delivery.samples)
        return self.webhook

    def serve_metrics(self, watcher: Any) -> None:
        """Expose ``watcher.metrics()`` (a JSON-able snapshot) on the metrics endpoint."""
        self.registry.register(lambda: watcher_samples(watcher.metrics()))

    def close(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None


def _warn(msg: str) -> None:
    print(f"scmwatch: {terminal(msg)}", file=sys.stderr, flush=True)

"""Live detection: ``scmwatch watch`` follows logs as they grow, on the hunt's seam.

Modules, in data-flow order:

* :mod:`~scmwatch.live.sources` -- files followed across rotation, directories (new files join;
  ``.evtx`` read once complete), stdin; each yields batches of complete records and keeps a
  checkpointable :class:`~scmwatch.live.sources.Position`;
* :mod:`~scmwatch.live.watcher` -- the loop: each batch is a ``hunt_unit``, hits become alerts
  at once, candidates go through the event-time watermark into the streaming correlator;
* :mod:`~scmwatch.live.deliver` -- delivery targets (JSONL file, stdout, case) behind one
  interface, each alert with its stable id;
* :mod:`~scmwatch.live.checkpoint` -- the state directory: lock and atomic checkpoint.

Exactly-once: the protocol
--------------------------

An alert's id is :func:`scmwatch.alerts.alert_id`: a hash of its rule and of the
(source, record id) of every event it rests on (plus the source's rotation generation), so the
same events give the same id in any run. The loop alternates *process* and *checkpoint*:

1. **Process** a batch: read past the source's position, match, correlate; every alert is
   delivered to every target at once (appended to the JSONL file, staged in the case) unless
   its id is known as delivered.
2. **Checkpoint** (every ``--checkpoint-interval`` seconds, on SIGTERM, at the end):
   a) every target makes what it received durable and returns its own state (the JSONL file:
   ``fsync``, then its size; the case: ``COMMIT``);
   b) then one file is written atomically (tmp + fsync + rename + fsync of the directory):
   positions, the correlation state (correlator, watermark merge, lineage), the ids delivered
   recently, and the targets' states.

The checkpoint is a consistent cut: its positions, correlation state and "delivered" all
describe the moment after the same batch. After ``kill -9`` at any point, a restart loads the
last checkpoint and replays the input from its positions with its correlation state, which
produces again exactly the alerts produced after that checkpoint (same events, same state, same
order: candidates are released by event time and source, never by arrival). Those were
delivered or not before the crash; each target says which ids it holds beyond its checkpointed
state (the JSONL file reads back the lines past its checkpointed size and cuts a half-written
last line; the case has them committed), and such an alert is not delivered to that target
again. A crash between 2a and 2b only means more lines to read back.

What exactly-once does not cover: stdout (cannot be read back: at-least-once) and stdin (cannot
be replayed: at-most-once for what was read after the last checkpoint); a file rotated away
*and deleted* while the watcher was down (the rest of it is gone; said on stderr); releases
forced by ``--idle-timeout`` depend on wall-clock time, so around a crash they may decide a
correlation differently than an uninterrupted run would have; a change of rules, of the
``--tune`` file or of ``--lateness``/``--min-level`` is refused with the old state (start over with another
``--state``).

Seams for other runners and delivery (network listeners, webhook, metrics):

* a listener writes each received batch durably into NDJSON spool files under
  ``StateDir.spool(name)`` and names that directory as a source: the follower reads it like any
  followed file, so acknowledged data is replayed after a crash;
* a delivery target implements :class:`~scmwatch.live.deliver.DeliveryTarget`
  (``start(saved) -> ids held``, ``deliver(id, alert)``, ``sync() -> state``, ``close()``);
* :meth:`~scmwatch.live.watcher.Watcher.metrics` is a JSON-able snapshot (events/s, lag per
  source, alerts, late events, state size) any thread may ask for.
"""

from __future__ import annotations

DEFAULT_STATE = ".scmwatch-state"

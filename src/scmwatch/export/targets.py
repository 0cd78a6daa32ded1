"""The export targets: which pySigma backend, which pipelines, which saved-search form.

The backends are optional (``pip install 'scmwatch[export]'``); :func:`backend_for` raises
:class:`BackendMissing` naming the extra when one is not installed. Default pipelines map the
field names scmwatch's events carry (the names Windows writes; :mod:`scmwatch.export.gating`
adds ``Channel``/``EventID``) onto what each SIEM usually stores:

* ``splunk``: none (the Splunk Add-on for Windows with ``XmlWinEventLog`` extracts ``Channel``,
  ``EventID`` and the EventData names as they are);
* ``lucene``/``esql``/``eql``: pySigma's ``ecs_windows`` (Winlogbeat/Elastic Agent ECS names)
  without its own logsource conditions, which would duplicate ours;
* ``kusto``: ``sentinel_windowsevent``: Microsoft Sentinel's ``WindowsEvent`` table (Windows
  Forwarded Events / AMA connector): System fields are columns, the rest ``EventData.<name>``;
* ``loki``: none (events shipped as scmwatch's flat JSON, read with ``| json``);
* ``sqlite``: none (a table of scmwatch's flat events, as ``rules export --verify`` builds).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXTRA = "scmwatch[export]"


class BackendMissing(Exception):
    """A target's pySigma backend is not installed."""


class PipelineError(Exception):
    """A pipeline name that is neither built in, installed, nor a readable YAML file."""


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    backend: str
    package: str
    pipelines: tuple[str, ...] = ()
    saved_format: str | None = None  # the backend's own saved-search output format, if it has one
    saved_file: str = "rules.txt"  # file name of the saved-search form under -o DIR
    options: dict[str, Any] = field(default_factory=dict)
    describe: str = ""


ELASTIC = ("sigma.backends.elasticsearch", "pysigma-backend-elasticsearch")
TARGETS: dict[str, Target] = {
    "splunk": Target("splunk", "sigma.backends.splunk", "SplunkBackend", "pysigma-backend-splunk",
                     saved_format="savedsearches", saved_file="savedsearches.conf",
                     describe="Splunk SPL; savedsearches.conf stanzas"),
    "lucene": Target("lucene", ELASTIC[0], "LuceneBackend", ELASTIC[1], ("ecs_windows_fields",),
                     "siem_rule_ndjson", "detection-rules.ndjson",
                     describe="Elasticsearch Lucene (ECS); Elastic Security detection-rule NDJSON"),
    "esql": Target("esql", ELASTIC[0], "ESQLBackend", ELASTIC[1], ("ecs_windows_fields",),
                   "siem_rule_ndjson", "detection-rules.ndjson",
                   describe="Elasticsearch ES|QL (ECS); Elastic Security detection-rule NDJSON"),
    "eql": Target("eql", ELASTIC[0], "EqlBackend", ELASTIC[1], ("ecs_windows_fields",),
                  "siem_rule_ndjson", "detection-rules.ndjson",
                  describe="Elasticsearch EQL (ECS); Elastic Security detection-rule NDJSON"),
    "kusto": Target("kusto", "sigma.backends.kusto", "KustoBackend", "pysigma-backend-kusto",
                    ("sentinel_windowsevent",), None, "sentinel-analytics-rules.yaml",
                    describe="KQL on Sentinel's WindowsEvent table; Sentinel analytics-rule YAML"),
    "loki": Target("loki", "sigma.backends.loki", "LogQLBackend", "pysigma-backend-loki",
                   saved_format="ruler", saved_file="loki-rules.yaml",
                   describe="Grafana Loki LogQL; Loki ruler YAML"),
    "sqlite": Target("sqlite", "sigma.backends.sqlite", "sqliteBackend", "pysigma-backend-sqlite",
                     saved_format="zircolite", saved_file="zircolite.json",
                     describe="SQLite over a table of flat events; Zircolite JSON"),
}

# Columns of Sentinel's WindowsEvent table that hold System fields (everything else is EventData).
WINDOWSEVENT_COLUMNS = {"Channel": "Channel", "EventID": "EventID", "Computer": "Computer",
                        "Provider_Name": "Provider", "EventRecordID": "EventRecordId",
                        "TimeCreated": "TimeGenerated", "Level": "EventLevel", "Task": "Task",
                        "Keywords": "Keywords"}


def install_hint(target: Target) -> str:
    """How to install a target's backend: the extra, plus --no-deps for those pinned to pySigma 1."""
    if target.name == "sqlite":
        return f"pip install '{EXTRA}'"
    return (f"pip install '{EXTRA}' && pip install --no-deps {target.package} (it declares pysigma<2 but "
            "works with pySigma 2; versions in requirements-export.txt)")


def backend_class(target: Target) -> type:
    try:
        module = importlib.import_module(target.module)
    except ImportError as exc:
        raise BackendMissing(
            f"target '{target.name}' needs {target.package}: {install_hint(target)}") from exc
    return getattr(module, target.backend)


def _sentinel_windowsevent():
    from sigma.processing.conditions import IncludeFieldCondition
    from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline, QueryPostprocessingItem
    from sigma.processing.postprocessing import EmbedQueryTransformation
    from sigma.processing.transformations import AddFieldnamePrefixTransformation, FieldMappingTransformation

    system = list(WINDOWSEVENT_COLUMNS)
    return ProcessingPipeline(
        name="scmwatch: Sentinel WindowsEvent table", priority=20,
        items=[
            ProcessingItem(AddFieldnamePrefixTransformation("EventData."), identifier="eventdata_prefix",
                           field_name_conditions=[IncludeFieldCondition(system)],
                           field_name_condition_negation=True),
            ProcessingItem(FieldMappingTransformation(WINDOWSEVENT_COLUMNS), identifier="system_columns"),
        ],
        postprocessing_items=[QueryPostprocessingItem(
            EmbedQueryTransformation(prefix="WindowsEvent\n| where "), identifier="windowsevent_table")],
    )


# Corrections to pySigma's ecs_windows for the fields scmwatch's queries use: it has no mapping for
# `Computer` (so a group-by lands on winlog.event_data.Computer, which Winlogbeat never writes), and it
# maps 4688's ParentProcessName (a full path) to process.parent.name (a file name), where an
# `endswith '\services.exe'` can never match.
ECS_CORRECTIONS = {"Computer": "winlog.computer_name",
                   "ParentProcessName": "process.parent.executable.caseless"}


def _ecs_windows_fields():
    from sigma.pipelines.elasticsearch.windows import ecs_windows as pipeline
    from sigma.processing.pipeline import ProcessingItem
    from sigma.processing.transformations import FieldMappingTransformation

    p = pipeline()
    fix = ProcessingItem(FieldMappingTransformation(ECS_CORRECTIONS), identifier="scmwatch_ecs_corrections")
    p.items = [fix, *(i for i in p.items if not (i.identifier or "").startswith("windows_logsource_"))]
    p.name = "ECS Windows field mappings (logsource conditions left to scmwatch)"
    return p


BUILTIN_PIPELINES = {"sentinel_windowsevent": _sentinel_windowsevent,
                     "ecs_windows_fields": _ecs_windows_fields}


def resolve_pipeline(name: str):
    """A pipeline by name: built in here, installed as a pySigma plugin, or a YAML file."""
    from sigma.processing.pipeline import ProcessingPipeline

    if name in BUILTIN_PIPELINES:
        try:
            return BUILTIN_PIPELINES[name]()
        except ImportError as exc:
            raise BackendMissing(f"pipeline '{name}' needs a backend package: pip install '{EXTRA}'") from exc
    path = Path(name)
    if path.suffix.lower() in (".yml", ".yaml"):
        try:
            return ProcessingPipeline.from_yaml(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PipelineError(f"pipeline file {name}: {exc.strerror or exc}") from exc
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PipelineError(f"pipeline file {name}: {first}") from exc
    from sigma.plugins import InstalledSigmaPlugins

    installed = InstalledSigmaPlugins.autodiscover().pipelines
    if name not in installed:
        known = sorted({*BUILTIN_PIPELINES, *installed})
        raise PipelineError(f"unknown pipeline '{name}' (known: {', '.join(known)}; or a .yml file)")
    return installed[name]()


def make_backend(target: Target, pipelines: list[str] | None = None) -> Any:
    """The target's backend with its pipelines (``pipelines`` None: the target's defaults)."""
    cls = backend_class(target)
    names = list(target.pipelines) if pipelines is None else pipelines
    pipeline = None
    for n in names:
        p = resolve_pipeline(n)
        pipeline = p if pipeline is None else pipeline + p
    backend = cls(processing_pipeline=pipeline, collect_errors=True, **target.options)
    if target.name == "kusto":
        # The Kusto backend quotes any field name that is not a bare word, and 'a.b' is a string
        # literal in KQL; a dotted name is a dynamic-column path (EventData.ServiceName) and stays bare.
        backend.field_quote_pattern = re.compile(r"^[\w.]+$")
    return backend

"""Rule export through pySigma backends, proven equal in SQLite, and SigmaHQ rule updates.

Modules, one job each: ``gating`` (scmwatch's logsource gating written into each rule),
``targets`` (backends, pipelines, the optional-dependency message), ``convert`` (rules and
correlations to queries, with a reason for each one not exported), ``formats`` (listing and
saved-search forms), ``verify`` (engine vs SQLite on the same events), ``update``
(``rules update``: fetch, check and install a SigmaHQ release).

The pySigma backends are optional (``scmwatch[export]``); importing this package does not need them.
"""

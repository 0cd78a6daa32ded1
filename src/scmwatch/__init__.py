"""scmwatch: find abuse of the Windows Service Control Manager (T1569.002) in event logs."""

__version__ = "0.1.0"

"""Test-wide settings."""

from __future__ import annotations

import os
import tempfile

# Compiled Hyperscan databases go to a private cache for the test run, not the user's ~/.cache.
os.environ.setdefault("SCMWATCH_CACHE_DIR", tempfile.mkdtemp(prefix="scmwatch-test-cache-"))

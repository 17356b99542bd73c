"""Deprecated: `agents.hosting` was split among the modules that own each piece.

- `client_for`, `LocalClient`, `Client`, `completion_info` → `agents.clients`
- `run_cache` → `agents.cache`
- `default_backend` → `agents.backends` (also `agents.default_backend`)
"""

import warnings

from agents.backends import default_backend
from agents.cache import run_cache
from agents.clients import Client, LocalClient, client_for, completion_info

__all__ = ["Client", "LocalClient", "client_for", "completion_info", "default_backend", "run_cache"]

warnings.warn("agents.hosting is deprecated: import client_for/LocalClient/completion_info from agents.clients, "
              "run_cache from agents.cache, default_backend from agents.backends", DeprecationWarning, stacklevel=2)

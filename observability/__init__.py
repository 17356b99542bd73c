"""Observability: OpenTelemetry spans, trace files, the `swarm` CLI views.

Export every run's spans with one call:

    import observability
    inst = observability.instrument("otlp")      # Phoenix at http://127.0.0.1:6006/v1/traces
    ...                                          # every policy run in this process is exported
    inst.shutdown()                              # flush, detach the listener, close the exporter

`instrument(exporter, endpoint=None, project="default", capture_content=False, ...)` is
`observability.exporters.instrument`: exporter "otlp", "console", "memory" (spans on
`inst.memory_exporter`, for tests) or "none"; it registers an `OTelListener` with
`swarm.add_listener` and returns the `Instrumentation` handle (`.listener`, `.provider`,
`.force_flush()`, `.shutdown()`; also a context manager). Imported lazily, so `import observability`
stays cheap for code that only reads trace files.
"""

from __future__ import annotations

from typing import Any

__all__ = ["instrument", "Instrumentation", "OTelListener"]


def __getattr__(name: str) -> Any:
    if name in ("instrument", "Instrumentation"):
        from observability import exporters

        return getattr(exporters, name)
    if name == "OTelListener":
        from observability.otel import OTelListener

        return OTelListener
    raise AttributeError(f"module 'observability' has no attribute {name!r}")

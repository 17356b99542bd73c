"""Observability: OpenTelemetry spans, trace files, the `swarm` CLI views."""

"""plp-swarm core (filled in by the core commit)."""

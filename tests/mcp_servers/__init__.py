"""Real MCP servers the tests start (stdio subprocesses or streamable HTTP on 127.0.0.1)."""

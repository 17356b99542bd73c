"""MCP (Model Context Protocol) servers as agent tools, and programs served as MCP tools.

    from agents import Agent, mcp_tools

    tools = mcp_tools(command=["python", "my_server.py"])       # stdio; or mcp_tools(url="http://127.0.0.1:8000/mcp")
    agent = Agent(name="solver", tools=tools)

- `mcp_tools` / `mcp_tools_async` (`agents.mcp.tools`): a server's tools as `MCPTool`s;
- `MCPServerParams` (`agents.mcp.params`): how to reach a server;
- `MCPCallFailed` (a `swarm.ParticleLost`) and `MCPServerError` (`agents.mcp.errors`);
- `close_all` (`agents.mcp.connection`): close this process's sessions (also done at exit);
- `agents.mcp.serve`: `swarm mcp FILE.py[:program]`, a program under a policy as an MCP tool.

Built on the official `mcp` SDK (2.x), see docs/mcp.md for why and for the semantics.
"""

from agents.mcp.connection import close_all
from agents.mcp.errors import MCPCallFailed, MCPServerError
from agents.mcp.params import MCPServerParams
from agents.mcp.tools import MCPTool, mcp_tools, mcp_tools_async, render_result

__all__ = ["mcp_tools", "mcp_tools_async", "MCPTool", "MCPServerParams", "MCPCallFailed", "MCPServerError",
           "close_all", "render_result"]

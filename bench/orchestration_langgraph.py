"""The LangGraph side of bench/orchestration.py; runs in .venv-bench (stdlib + langgraph only).

The same fan-out as plp-swarm's: N agents, each sending K messages, every message one call of a
fake backend (`fake_reply` of bench/asyncio_fanout.py, an `asyncio.sleep(latency)` test double). In
LangGraph's idiom each message is one execution of an "agent" node: a "tick" node fans out to N
agent nodes with `Send` (one superstep), their messages are merged into the state by an
`operator.add` reducer, and the graph loops for K rounds. A plain-asyncio run of the same calls
(`run_asyncio`, the same file's), interleaved with LangGraph's in this process, is the baseline.
Prints one JSON object: {"langgraph": [s…], "asyncio": [s…]}.

    .venv-bench/bin/python bench/orchestration_langgraph.py --agents 100 --messages 10 --latency 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import sys
import time
from pathlib import Path
from typing import Annotated, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.asyncio_fanout import fake_reply, run_asyncio  # noqa: E402  (stdlib only, shared with orchestration.py)


class TeamState(TypedDict):
    round: int
    messages: Annotated[list, operator.add]


class AgentTask(TypedDict):
    agent: int
    round: int


def build_graph(n_agents: int, n_messages: int, latency: float):
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    async def agent(task: AgentTask) -> dict:
        reply = await fake_reply(latency)
        return {"messages": [(task["agent"], task["round"], reply)]}

    def tick(state: TeamState) -> dict:
        return {"round": state["round"] + 1}

    def fan_out(state: TeamState):
        if state["round"] > n_messages:
            return END
        return [Send("agent", {"agent": i, "round": state["round"]}) for i in range(n_agents)]

    graph = StateGraph(TeamState)
    graph.add_node("tick", tick)
    graph.add_node("agent", agent)
    graph.add_edge(START, "tick")
    graph.add_conditional_edges("tick", fan_out, ["agent", END])
    graph.add_edge("agent", "tick")
    return graph.compile()


def run_langgraph(n_agents: int, n_messages: int, latency: float) -> None:
    app = build_graph(n_agents, n_messages, latency)
    out = asyncio.run(app.ainvoke({"round": 0, "messages": []}, {"recursion_limit": 4 * n_messages + 10}))
    assert len(out["messages"]) == n_agents * n_messages, len(out["messages"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    fns = {"langgraph": lambda: run_langgraph(args.agents, args.messages, args.latency),
           "asyncio": lambda: run_asyncio(args.agents, args.messages, args.latency)}
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(args.repeats):
        for name in names[r % 2:] + names[:r % 2]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    import importlib.metadata

    print(json.dumps({**times, "version": importlib.metadata.version("langgraph")}))


if __name__ == "__main__":
    main()

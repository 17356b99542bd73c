"""The global trace: every event of a run in one append-only tree (docs/theory.md §3.2: resampling copies
pointers).

A node is one event (sample, factor, guarantee, interact, error) and points to the previous event of
its execution; a particle is a pointer to a leaf. Resampling copies pointers, never events, so
offspring share their ancestors' events. The coordinator owns the tree; `Result`, trace files,
checkpoints, reports and spans read it. Per node the tree also keeps the step at which it was
appended and the particle that appended it, which answers the questions weights exist for:

    tree.trace(leaf)                       the whole trace of a particle (materialised on demand)
    tree.lineage(leaf)                     the particle ids along its ancestry, root first
    tree.events_at(leaves, step=3)         what the particles' ancestors did at step 3
    tree.sharing(node, leaves)             which particles have a given event in their past

Large payloads are stored once: `PayloadStore` interns the strings and prompt message lists of new
events' metadata, so a message that appears in many prompts (a chat history, a shared system prompt)
is held once, and a prompt that extends the previous one is a `MessageChain` node pointing at it.
"""

from __future__ import annotations

from array import array
from itertools import chain
from collections.abc import Sequence
from typing import Any, Iterable, Iterator

from swarm.trace import LazyTrace, Trace

ROOT = -1
_LONG = 64
"""Strings at least this long in event metadata are interned (stored once per distinct value)."""


class MessageChain(Sequence):
    """A list of chat messages stored as a persistent linked list: a prompt that extends an earlier
    one points at it, so a conversation of T turns costs O(T) memory however many prompts it was
    sent as. Reads like a list of message dicts; compares equal to one."""

    __slots__ = ("prev", "message", "length", "__weakref__")

    def __init__(self, prev: "MessageChain | None", message: Any) -> None:
        self.prev = prev
        self.message = message
        self.length = 1 + (prev.length if prev is not None else 0)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Any]:
        return iter(self.to_list())

    def __getitem__(self, index: Any) -> Any:
        return self.to_list()[index]

    def to_list(self) -> list[Any]:
        out = []
        node: MessageChain | None = self
        while node is not None:
            out.append(node.message)
            node = node.prev
        out.reverse()
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MessageChain):
            return self is other or self.to_list() == other.to_list()
        if isinstance(other, (list, tuple)):
            return self.to_list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MessageChain({self.to_list()!r})"

    def __reduce__(self) -> tuple:
        return (_chain_from_list, (self.to_list(),))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            lambda v: v, serialization=core_schema.plain_serializer_function_ser_schema(lambda v: v.to_list()))


def _chain_from_list(messages: list[Any]) -> MessageChain | list:
    node = None
    for message in messages:
        node = MessageChain(node, message)
    return node if node is not None else []


class PayloadStore:
    """Interns the metadata of new events: long strings by value, prompts (lists of message dicts)
    as `MessageChain`s that share every prefix already seen."""

    def __init__(self) -> None:
        self._strings: dict[str, str] = {}
        self._messages: dict[Any, Any] = {}
        self._chains: dict[tuple[int, Any], MessageChain] = {}
        self._holders: dict[tuple[str, ...], type] = {}

    def __len__(self) -> int:
        return len(self._strings) + len(self._messages)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the caches that only mean something in this process: the holder classes
        (made at run time, so not importable) and the chain links (keyed by `id`)."""
        return {"_strings": self._strings, "_messages": self._messages}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._chains, self._holders = {}, {}

    def string(self, text: str) -> str:
        return self._strings.setdefault(text, text) if len(text) >= _LONG else text

    def _message(self, message: Any) -> tuple[Any, Any]:
        """(a hashable key, the one stored copy) of a message dict."""
        if isinstance(message, dict):
            try:  # hashable values (a chat message's strings): no sorting, a third of the cost
                key = frozenset(message.items())
            except TypeError:
                key = tuple(sorted((k, v if isinstance(v, (str, int, float, bool, type(None))) else repr(v))
                                   for k, v in message.items()))
        else:
            key = repr(message)
        stored = self._messages.get(key)
        if stored is None:
            if isinstance(message, dict):
                message = {k: self.string(v) if isinstance(v, str) else v for k, v in message.items()}
            stored = self._messages[key] = message
        return key, stored

    def chain(self, messages: Iterable[Any]) -> MessageChain | list:
        node: MessageChain | None = None
        for message in messages:
            key, stored = self._message(message)
            link = (id(node), key)
            nxt = self._chains.get(link)
            if nxt is None or nxt.prev is not node:
                nxt = self._chains[link] = MessageChain(node, stored)
            node = nxt
        return node if node is not None else []

    def intern_info(self, info: dict[str, Any]) -> dict[str, Any]:
        """A copy of an event's metadata with its large payloads interned, as a key-sharing dict:
        the metadata of every generation has the same keys, which are then stored once (PEP 412
        split tables: about 330 bytes for 23 entries instead of 870). Items are stored into the
        holder's `__dict__` in order (which keeps its table split, like attribute stores, and costs
        about half of `setattr`); `dict.update` would make it a combined table."""
        record = self._holder(tuple(info))().__dict__
        strings = self._strings
        for key, value in info.items():
            kind = type(value)
            if kind is str:
                if len(value) >= _LONG:
                    value = strings.setdefault(value, value)
            elif kind is dict:
                if len(value) <= 8:  # e.g. usage: {input_tokens, output_tokens}
                    value = self._shared_keys(value)
            elif key == "prompt" and isinstance(value, list) and value and isinstance(value[0], dict):
                value = self.chain(value)
            record[key] = value
        return record

    def _holder(self, keys: tuple[str, ...]) -> type:
        holder = self._holders.get(keys)
        if holder is None:
            holder = self._holders[keys] = type("EventInfo", (), {"__slots__": ("__dict__",)})
        return holder

    def _shared_keys(self, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if type(key) is not str:
                return value
        record = self._holder(tuple(value))().__dict__
        for key, item in value.items():
            record[key] = item
        return record


class GlobalTrace:
    """The run's events as one append-only tree (see the module docstring)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.parent = array("q")
        self.step = array("i")
        self.particle = array("q")
        self.run = array("q")
        """run[i]: the first node of the run of consecutive nodes ending at i in which each node's
        parent is the node before it (one segment's events): paths are read a run at a time."""
        self.payloads = PayloadStore()

    def __len__(self) -> int:
        return len(self.events)

    def extend(self, leaf: int, events: list[Any], step: int = 0, particle: int = -1) -> int:
        """Append `events` after node `leaf` (ROOT for a new execution); return the new leaf."""
        if not events:
            return leaf
        start = len(self.events)
        n = len(events)
        self.events.extend(events)
        self.parent.append(leaf)
        if n > 1:
            self.parent.extend(range(start, start + n - 1))
        self.step.extend([step] * n)
        self.particle.extend([particle] * n)
        self.run.extend([start] * n)
        return start + n - 1

    def extend_many(self, leaves: list[int], event_lists: list[list[Any]], step: int, particles: list[int]) -> list[int]:
        """`extend` for many executions at once (one step's segments): their new leaves, in order."""
        events = self.events
        first = start = len(events)
        parents: list[int] = []
        owners: list[int] = []
        runs: list[int] = []
        out = []
        for leaf, new, particle in zip(leaves, event_lists, particles):
            n = len(new)
            if not n:
                out.append(leaf)
                continue
            events.extend(new)
            parents.append(leaf)
            if n > 1:
                parents.extend(range(start, start + n - 1))
                owners.extend([particle] * n)
                runs.extend([start] * n)
            else:
                owners.append(particle)
                runs.append(start)
            start += n
            out.append(start - 1)
        self.parent.extend(parents)
        self.particle.extend(owners)
        self.run.extend(runs)
        self.step.extend([step] * (start - first))
        return out

    def _runs(self, leaf: int) -> list[tuple[int, int]]:
        """The runs (first, last) of the path from the root to `leaf`, leaf's run first."""
        out = []
        parent, run = self.parent, self.run
        while leaf != ROOT:
            first = run[leaf]
            out.append((first, leaf))
            leaf = parent[first]
        return out

    def nodes(self, leaf: int) -> list[int]:
        """The node indices from the root to `leaf`."""
        return [i for first, last in reversed(self._runs(leaf)) for i in range(first, last + 1)]

    def path(self, leaf: int) -> list[Any]:
        """The events of the execution ending at `leaf`, in program order (copied a run, i.e. a
        segment, at a time)."""
        events = self.events
        runs = self._runs(leaf)
        if len(runs) == 1:
            first, last = runs[0]
            return events[first:last + 1]
        return list(chain.from_iterable(events[first:last + 1] for first, last in reversed(runs)))

    def trace(self, leaf: int) -> Trace:
        """The trace of the particle at `leaf`, materialised when first read."""
        return TreeTrace(self, leaf)

    def lineage(self, leaf: int) -> list[int]:
        """The ids of the particles that recorded the events on the path to `leaf`, root first,
        without repeats: the particle's ancestry across resamplings."""
        out: list[int] = []
        for node in self.nodes(leaf):
            pid = self.particle[node]
            if not out or out[-1] != pid:
                out.append(pid)
        return out

    def events_at(self, leaves: Iterable[int], step: int) -> dict[int, list[Any]]:
        """{leaf: the events its ancestry recorded at `step`}."""
        return {leaf: [self.events[n] for n in self.nodes(leaf) if self.step[n] == step] for leaf in leaves}

    def sharing(self, node: int, leaves: Iterable[int]) -> list[int]:
        """The leaves whose past contains `node` (e.g. which particles share this message)."""
        return [leaf for leaf in leaves if node in self._ancestor_set(leaf, node)]

    def _ancestor_set(self, leaf: int, floor: int) -> set[int]:
        out = set()
        parent = self.parent
        while leaf != ROOT and leaf >= floor:
            out.add(leaf)
            leaf = parent[leaf]
        return out

    def since(self, mark: int) -> dict[str, Any]:
        """The nodes appended from index `mark` on, as columns (an append-only log entry)."""
        return {"start": mark, "events": self.events[mark:], "parent": self.parent[mark:].tolist(),
                "step": self.step[mark:].tolist(), "particle": self.particle[mark:].tolist()}

    def apply(self, entry: dict[str, Any]) -> None:
        """Append a log entry written by `since` (rebuilding the tree when resuming)."""
        if entry["start"] != len(self.events):
            raise ValueError(f"global trace log entry starts at node {entry['start']}, the tree has "
                             f"{len(self.events)} nodes")
        start = len(self.events)
        self.events.extend(entry["events"])
        self.parent.extend(entry["parent"])
        self.step.extend(entry["step"])
        self.particle.extend(entry["particle"])
        run, parent = self.run, self.parent
        for i in range(start, len(parent)):
            run.append(run[i - 1] if i > start and parent[i] == i - 1 else i)


class TreeTrace(LazyTrace):
    """A particle's `Trace` read from the global trace: its events are gathered along the parent
    pointers the first time they are read (a population's traces cost nothing until looked at)."""

    __slots__ = ("_tree", "_leaf")

    def __init__(self, tree: GlobalTrace, leaf: int) -> None:
        super().__init__()
        self._tree = tree
        self._leaf = leaf

    def _materialise(self) -> list[Any]:
        return self._tree.path(self._leaf)

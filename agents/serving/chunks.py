"""`stream=true`: a run's events as chat-completion chunks (the data of server-sent events).

    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], ...}      first
    {"choices": [{"index": 0, "delta": {"content": <committed delta or null>}}],
     "swarm": {"event": "step", "step": k, "ess": .., "log_evidence": .., "alive": .., "resampled": ..,
               "deaths": {..}, "tokens": .., "text": {"particle_id", "offset", "delta"} | null}}   per step
    {"choices": [{"index": i, "delta": {"content": <rest of answer i>}, "finish_reason": "stop"}]}    per answer
                                                    (choices 1.. with "role": "assistant" too, as OpenAI opens each)
    ... the last of them with "swarm": {"event": "end", <RunInfo>}
    {"choices": [], "usage": {...}}       when stream_options.include_usage
    [DONE]

Content: with `stream_text="committed"` each step's content delta is the part of the text that
every live particle now shares (`CommittedText`): it is final, so the client never has to take it
back; the answers' remaining text follows at the end. With "final" content comes only at the end.
`swarm.text` previews the heaviest particle's text (it may be retracted: `offset`), never content.
A failure after the stream began is sent as an OpenAI error object (`{"error": {...}}`), which the
openai client raises as `APIError`; then the stream ends without [DONE].
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from agents.serving.errors import ServeError
from agents.serving.protocol import ChatCompletion, ChatCompletionChunk, ChunkChoice, Delta, finite
from agents.serving.service import ChatService, PreparedRun, stream_run
from policies.streaming import CommittedText, StepEnd, TextDelta

DONE = "[DONE]"


class ChunkWriter:
    """Builds the chunks of one streamed response."""

    def __init__(self, run: PreparedRun, committed: bool) -> None:
        self.run = run
        self.committed = committed
        self.streamed = ""
        self._content = ""
        self._preview: dict[str, Any] | None = None

    def chunk(self, choices: list[ChunkChoice], **extra: Any) -> str:
        return ChatCompletionChunk(id=self.run.id, created=self.run.created, model=self.run.request.model,
                                   choices=choices, **extra).model_dump_json()

    def opening(self) -> list[str]:
        return [self.chunk([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))])]

    def on_event(self, event: Any) -> list[str]:
        """The chunk for a step (at its StepEnd); nothing for the other events."""
        if isinstance(event, CommittedText) and self.committed:
            self._content += event.delta
        elif isinstance(event, TextDelta):
            self._preview = {"particle_id": event.particle_id, "offset": event.offset, "delta": event.delta}
        elif isinstance(event, StepEnd):
            progress = {"event": "step", "step": event.step, "ess": event.ess, "log_evidence": finite(event.log_evidence),
                        "alive": event.alive, "num_particles": event.num_particles, "resampled": event.resampled,
                        "deaths": event.deaths, "tokens": event.tokens, "llm_calls": event.llm_calls,
                        "text": self._preview}
            content, self._content, self._preview = self._content or None, "", None
            self.streamed += content or ""
            return [self.chunk([ChunkChoice(index=0, delta=Delta(content=content))], swarm=progress)]
        return []

    def failure(self, error: ServeError) -> list[str]:
        return [error.response().model_dump_json()]

    def closing(self, response: ChatCompletion) -> list[str]:
        """The rest of each answer, then the usage chunk when asked for, then [DONE]."""
        out = []
        last = len(response.choices) - 1
        for i, choice in enumerate(response.choices):
            content = choice.message.content
            if i == 0 and self.streamed:
                if not content.startswith(self.streamed):
                    raise ServeError(500, "the program's answer does not start with the text its particles "
                                          "committed; serve it with --stream-text final", type="server_error",
                                     code="stream_mismatch")
                content = content[len(self.streamed):]
            extra = {"swarm": {"event": "end", **response.swarm.model_dump()}} if i == last else {}
            role = "assistant" if i > 0 else None  # choice 0 was opened by the first chunk, the others here
            delta = Delta(role=role, content=content)
            out.append(self.chunk([ChunkChoice(index=i, delta=delta, finish_reason="stop")], **extra))
        options = self.run.request.stream_options
        if options is not None and options.include_usage:
            out.append(self.chunk([], usage=response.usage))
        return [*out, DONE]


def stream_chunks(service: ChatService, run: PreparedRun) -> AsyncIterator[str]:
    """The SSE data strings of a streamed response (errors included, see the module docstring)."""
    return stream_run(service, run, ChunkWriter(run, service.config.stream_text == "committed"))

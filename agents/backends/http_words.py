"""unit="word" over HTTP: a short look-ahead, extended only for long words.

The chunk is what `LlamaCpp` draws: tokens from q until, once the chunk holds a non-space
character, a whitespace-led token is drawn; that token ends the chunk and is *not* kept (the next
chunk redraws its position), so the chunk's proposal probability is Π q(t_i) · q(boundary set) and
`stop_log_prob` is the log boundary mass (estimated over HTTP from the top-k log-probabilities,
see `http_wire.cut_word_tokens`; without log-probabilities the cut is found in the text).

A server cannot stop at "the first whitespace-led token after content" (a stop string " " would
fire on the word's own leading space), so the chunk is drawn by look-ahead: request
`WORD_LOOKAHEAD_TOKENS` tokens; if no boundary came, keep them all and request more from the end of
the chunk (doubling the look-ahead, `in_word` carried) until a boundary, a stop, an end of sequence
or `max_tokens`. Every request draws the next positions from q given everything before them, so
the chunk has exactly the distribution of one long request cut at its boundary. Its own seed per
request (derived from the site's seed) keeps the requests' random streams apart. A stop string that
spans two requests (no server sees it whole) is found in the joined text, and the chunk is cut
there as `LlamaCpp` cuts it (`_cut_at_stop`).

The surplus (the boundary token and what follows) is discarded, not carried into the next step:
the next chunk must redraw that position from q (carrying it over would draw the next word's first
token from q restricted to the boundary set, another proposal, and siblings after resampling share
the prefix but only one of them could have it). So the waste per word is the boundary token plus
the look-ahead beyond it: 3 tokens for a 1-token word here against 8 before, and
`Completion.usage.output_tokens` (generated) against `len(tokens)` (kept) shows it in the trace.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from agents.backends import http_continuation
from agents.backends.base import Usage
from agents.backends.http_reply import OpenAICompletion
from agents.backends.llama_chunks import find_stop, trim_pieces

if TYPE_CHECKING:
    from agents.backends.base import GenerationRequest
    from agents.backends.openai_compat import OpenAICompatible

WORD_LOOKAHEAD_TOKENS = 3
"""Tokens asked for by a word chunk's first request: a word of up to 2 tokens and its boundary."""
WORD_TOP_LOGPROBS = 5
"""At least this many top logprobs when logprobs are requested, for the boundary mass."""


def continuation_seed(seed: int | None, k: int) -> int | None:
    """The seed of a chunk's k-th request: the site's own for k = 0, then a hash of (seed, k)."""
    if seed is None or k == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}/{k}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


async def generate_word(backend: "OpenAICompatible", request: "GenerationRequest", raw: bool) -> OpenAICompletion:
    """One word chunk (see the module docstring); `raw`: sent to /completions."""
    s = request.settings
    budget, lookahead, k = s.max_tokens, WORD_LOOKAHEAD_TOKENS, 0
    parts: list[OpenAICompletion] = []
    generated = prompt_tokens = 0
    latency = 0.0
    while True:
        text = "".join(p.text for p in parts)
        sub, sub_raw = request, raw
        if k > 0:
            sub = request.replaced(assistant_prefix=request.assistant_prefix + text,
                                   seed=continuation_seed(request.seed, k))
            if not raw and backend.mode == "chat":  # the first request had no reply to continue yet
                sub, sub_raw = await http_continuation.route(backend, sub)
        part = (await backend.generate(sub, raw=sub_raw, max_tokens=min(lookahead, budget),
                                        in_word=bool(text.strip())))[0]
        parts.append(part)
        generated += part.usage.output_tokens
        prompt_tokens += part.usage.input_tokens
        latency += part.latency_s
        budget -= part.usage.output_tokens or max(1, len(part.tokens))
        k, lookahead = k + 1, lookahead * 2
        cut = find_stop(text + part.text, [x for x in s.stop if x], len(text)) if k > 1 else None
        if cut is not None or part.finish_reason != "length" or budget <= 0 or not part.text:
            break
    chunk = _merge(parts, Usage(input_tokens=prompt_tokens, output_tokens=generated), latency)
    return chunk if cut is None else _cut_at_stop(chunk, cut, [x for x in s.stop if x])


def _cut_at_stop(chunk: OpenAICompletion, cut: int, stops: list[str]) -> OpenAICompletion:
    """The chunk ended by a stop string that spans two of its requests (each server saw only its
    own part, so none stopped), as `LlamaCpp` ends it: the text cut before the stop string, the
    tokens up to the one that completed it (their pieces trimmed to the text, their log-probs kept),
    finish reason "stop", a deterministic stopping event."""
    keep, seen = len(chunk.tokens), ""
    for i, piece in enumerate(chunk.tokens):
        before, seen = len(seen), seen + piece
        if find_stop(seen, stops, before) is not None:
            keep = i + 1
            break
    base = chunk.base_token_logprobs
    return chunk.model_copy(update={
        "text": chunk.text[:cut], "tokens": trim_pieces(chunk.tokens[:keep], cut),
        "token_logprobs": chunk.token_logprobs[:keep], "base_token_logprobs": None if base is None else base[:keep],
        "finish_reason": "stop", "stop_log_prob": 0.0, "base_stop_log_prob": None if base is None else 0.0})


def _merge(parts: list[OpenAICompletion], usage: Usage, latency: float) -> OpenAICompletion:
    """The chunk from its requests: texts, tokens and log-probabilities concatenated, the stopping
    event and finish reason of the last request, the worst log q quality."""
    last = parts[-1]
    if len(parts) == 1:
        return last.model_copy(update={"usage": usage, "latency_s": latency})
    base = None if any(p.base_token_logprobs is None for p in parts) else \
        [v for p in parts for v in p.base_token_logprobs or []]
    order = ["exact", "estimated", "absent"]
    quality = max((p.log_q_quality for p in parts), key=order.index)
    return OpenAICompletion(
        text="".join(p.text for p in parts), tokens=[t for p in parts for t in p.tokens],
        token_logprobs=[v for p in parts for v in p.token_logprobs], base_token_logprobs=base,
        stop_log_prob=last.stop_log_prob, base_stop_log_prob=last.base_stop_log_prob,
        finish_reason=last.finish_reason, usage=usage, latency_s=latency, model=last.model,
        backend=last.backend, log_q_quality=quality)

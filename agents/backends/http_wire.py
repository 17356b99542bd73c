"""The OpenAI wire format as plain dicts: token log-probabilities out of a choice, and the chunk rules
(line, word) applied to them. No pydantic model is built per response (`json.loads` gives dicts).

A token is `(text, log-prob, {alternative: log-prob})`. Conventions shared with `LlamaCpp`
(`"".join(tokens) == text`; a token reported beyond the returned text keeps its log-probability with
its text piece trimmed) are explained in `agents.backends.openai_compat`.
"""

from __future__ import annotations

import math
from typing import Any

from agents.backends.base import BackendError

Tok = tuple[str, float, dict[str, float]]


def chat_tokens(choice: dict[str, Any]) -> list[Tok] | None:
    """The tokens of a /chat/completions choice (None: the server sent no logprobs)."""
    content = (choice.get("logprobs") or {}).get("content")
    if content is None:
        return None
    out = []
    for i, t in enumerate(content):
        if t.get("logprob") is None:
            raise BackendError(f"server reported a null logprob for token {i} ({t.get('token')!r})")
        out.append((t["token"], float(t["logprob"]),
                    {a["token"]: float(a["logprob"]) for a in (t.get("top_logprobs") or [])}))
    return out


def completion_tokens(choice: dict[str, Any]) -> list[Tok] | None:
    """The tokens of a /completions choice (None: the server sent no logprobs)."""
    lp = choice.get("logprobs")
    if not lp or lp.get("tokens") is None or lp.get("token_logprobs") is None:
        return None
    tokens, values = lp["tokens"], lp["token_logprobs"]
    tops = lp.get("top_logprobs") or [None] * len(tokens)
    out = []
    for i, (tok, val, top) in enumerate(zip(tokens, values, tops)):
        if val is None:
            raise BackendError(f"server reported a null logprob for token {i} ({tok!r})")
        out.append((tok, float(val), {k: float(v) for k, v in (top or {}).items()}))
    return out


def align(toks: list[Tok], text: str, line: bool) -> tuple[list[str], str, bool]:
    """Token text pieces that join to the (possibly extended) text, and whether a line ended.

    Tokens reported beyond `text` (a stop string the server trimmed) get trimmed pieces; for
    unit="line", a reported newline token is put back into the chunk (text up to the end of the
    token holding the newline). Tokens that hold only part of a multi-byte character, which servers
    report as "", are given the characters they spell (`spell_out`)."""
    pieces = [t for t, _, _ in toks]
    joined = "".join(pieces)
    if not joined.startswith(text):
        pieces = spell_out(pieces, text)
        joined = "".join(pieces)
    if len(joined) <= len(text) or not joined.startswith(text):
        return pieces, text, False
    newline = line and "\n" in joined[len(text):]
    if newline:
        nl, end = joined.index("\n", len(text)), 0
        for piece in pieces:
            end += len(piece)
            if end > nl:
                break
        text = joined[:end]
    out, used = [], 0
    for piece in pieces:
        out.append(piece[:max(0, len(text) - used)])
        used += len(out[-1])
    return out, text, newline


def spell_out(pieces: list[str], text: str) -> list[str]:
    """`pieces` with the characters of `text` that they miss filled in: a server reports "" for each
    token that holds only some bytes of a multi-byte character (llama.cpp decodes each token alone,
    dropping the partial bytes), so an emoji spread over three tokens comes as "", "", "". The
    characters between two pieces that do spell the text go to the last "" before them (the token
    that completed them; which of the run's tokens holds which byte is not reported). Pieces beyond
    the text (a stop string the server trimmed) are left for `align` to trim. Returns `pieces`
    unchanged when they do not spell the text even so."""
    out, pos, last_empty = list(pieces), 0, None
    for i, piece in enumerate(pieces):
        if not piece:
            last_empty = i
            continue
        if text.startswith(piece, pos):
            j = pos
        elif last_empty is not None and (j := text.find(piece, pos)) > pos:
            out[last_empty] = text[pos:j]
        else:
            break
        pos, last_empty = j + len(piece), None
    if last_empty is not None and pos < len(text):
        out[last_empty] = text[pos:]
    return out if "".join(out).startswith(text) else pieces


def cut_word_tokens(toks: list[Tok], pieces: list[str], in_word: bool = False) -> tuple[int | None, float]:
    """Index of the first whitespace-led token after some content (None: no cut), and the log of the
    whitespace-led mass there, estimated as its share of the reported top-k mass (the drawn token
    included): log Σ_{top-k, whitespace-led} p − log Σ_{top-k} p, i.e. the unseen tail is assumed to
    split in the same proportion. (Σ over the whitespace-led top-k alone, a lower bound, was off by
    0.67 nats on SmolLM2 with top-20, where the mass is spread over many word-initial tokens.)
    `in_word`: the chunk already holds content (a continuation request of the same chunk)."""
    seen_content = in_word
    for i, ((tok, lp, top), piece) in enumerate(zip(toks, pieces)):
        if seen_content and tok[:1].isspace():
            top = {**top, tok: lp}
            boundary = [v for t, v in top.items() if t[:1].isspace()]
            return i, min(0.0, logsumexp(boundary) - logsumexp(list(top.values())))
        seen_content = seen_content or bool(piece.strip())
    return None, 0.0


def cut_word_text(text: str, in_word: bool = False) -> int | None:
    """Without token pieces (no logprobs requested): the index of the first whitespace character
    after some content, None if there is none. The same cut as `cut_word_tokens` whenever every
    token that holds whitespace starts with it (BPE vocabularies with leading-space tokens); a
    token such as ".\\n" is cut inside instead of after."""
    seen_content = in_word
    for i, ch in enumerate(text):
        if ch.isspace():
            if seen_content:
                return i
        else:
            seen_content = True
    return None


def logsumexp(values: list[float]) -> float:
    m = max(values)
    if m == -math.inf:
        return m
    return m + math.log(math.fsum(math.exp(v - m) for v in values))


def error_text(body: bytes) -> str:
    """The message of an OpenAI-style error body ({"error": {"message": ...}}), else the body."""
    import json

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace")[:500] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(data.get("detail"), (str, list)):
            return str(data["detail"])
        return str(err)
    return str(data)

"""`LlamaCpp`: an in-process llama.cpp backend (through llama-cpp-python) with honest log-probabilities.

We do not use llama.cpp's sampler. We evaluate tokens with `llama_decode`, read the raw logits ℓ of
each sequence's last position, and sample ourselves, so that every number we report is the
probability of what we actually did.

Per position, with logits ℓ ∈ R^V:

    base:      log p(v) = ℓ_v − logsumexp(ℓ)                             (temperature 1, no truncation)
    tempered:  log r(v) = ℓ_v/T − logsumexp(ℓ/T)                         (T > 0)
    nucleus:   N = the smallest set of highest-r tokens (ties by token id) with Σ_{v∈N} r(v) ≥ top_p
    proposal:  log q(v) = log r(v) − log Σ_{u∈N} r(u)   for v ∈ N,  −inf otherwise
    greedy:    T = 0  →  q = point mass on argmax ℓ (first index on ties), so log q = 0.

A token is drawn by inverse CDF over q (token-id order) with u ~ U[0,1) from a numpy Generator seeded
with `request.seed`, so the same request and seed give the same completion bit for bit. The
log-softmaxes are float32, over the batch's logits at once; the draw accumulates the CDF in float64
(`agents.backends.llama_sampling`; a request's `TokenDrawer` is the one place a token is chosen).
`token_logprobs[i] = log q_i(token_i)` and `base_token_logprobs[i] = log p_i(token_i)`; an
end-of-generation token that ends the completion is kept as a last token with text "" so that both
sums include it.

Chunking (`settings.unit`), so SMC can resample between chunks; `Completion.log_prob` is the
probability of the chunk under the chunking proposal:

- "token": one token. log q(chunk) = log q(t₁). (A token holding only the first bytes of a UTF-8
  character is followed by the tokens that finish it, at most 3; the same for `max_tokens`, so no
  chunk ends inside a character: `agents.backends.llama_chunks`.)
- "line": tokens up to and including the first token whose text contains "\\n" (deterministic given
  the tokens, so `stop_log_prob` = 0).
- "word": let B be the tokens whose text begins with whitespace and E the end-of-generation tokens.
  Tokens are drawn from q; once the chunk holds a non-space character, the next drawn token that lies
  in B ∪ E ends the chunk and is *not* kept (the next chunk redraws that position). The chunk
  t₁..t_k has proposal probability Π_i q_i(t_i) · q_{k+1}(B ∪ E), hence
  `stop_log_prob = log Σ_{v∈B∪E} q_{k+1}(v)` and `base_stop_log_prob` = the same mass under p.
  Finish reason "unit" (or "eos" when the drawn boundary token was in E).
- "text": until an end-of-generation token, `max_tokens`, or a `settings.stop` string (the text is
  cut before the stop string; `tokens` are the text pieces of the drawn tokens, trimmed so that
  "".join(tokens) == text, while `token_logprobs` keep every drawn token, so log_prob is that of the
  drawn token sequence).

Batching: every request in flight on one `LlamaCpp` (all particles, all agents sharing it, from any
thread or event loop) is decoded by one thread, one `llama_decode` per step, one llama.cpp sequence
per request; requests join and leave between steps, and sampling is vectorised over the batch (the
shape of llama.cpp's `examples/parallel`; see `agents.backends.llama_engine`). A batch is listed by
sequence id, so llama.cpp evaluates a step over consecutive sequences in one pass over the weights
(`agents.backends.llama_context`). `complete` only
tokenizes and waits: callers never see batching.

KV sharing: each sequence slot keeps its tokens' keys and values after its request ends, with the
logits after its last token. A new request is matched against the slots by longest common token
prefix; the match is reused (a busy slot is first copied with `llama_memory_seq_cp`), and only the
rest is evaluated, so a prompt shared by many requests is evaluated once, a particle's next word
costs only its new tokens (none at all when it continues exactly where it stopped), and a resampled
offspring starts from a copy of its parent's sequence. The cache is bounded: `n_seq_max` slots of
`n_ctx` tokens, least recently used sequences evicted first; `stats()` and each completion's
`reused_tokens` / `prefilled_tokens` / `evictions` say what it did (`agents.backends.llama_kv`).

Reproducibility, measured (llama-cpp-python 0.3.36, AVX2 x86-64 build, SmolLM2-135M Q4_1): with one
KV stream per sequence (`kv_unified=false`) and flash attention, the logits of a sequence are the
same bit for bit whatever else is in the batch (1 to 31 other sequences, any position in the batch),
however its prompt was split into batches (1, 4 or all tokens at a time), whether it was copied from
another sequence, evaluated afresh or moved into a larger context, whatever the cache held before,
and with 1 or 2 threads. So a completion is a function of (prompt tokens, settings, seed) alone: the
same request with the same seed gives the same completion bit for bit, batched or alone, and the
same seed, program and N give the same result. What does not hold: without flash attention, a
position evaluated as a 1-token chunk of its sequence differs from the same position evaluated
inside a longer chunk (up to 0.65 in a logit: the old backend's 2-token re-evaluation worked around
exactly this), and with one KV buffer shared by all sequences (`kv_unified=true`) a sequence whose
new cells land before its older ones (after another sequence is removed) differs by up to 0.66; so
neither is used. Other builds (AVX-512, aarch64) and llama.cpp versions round differently: the
invariance is probed on the machine by `tests/test_llama_batching.py` (where it fails, batched and
alone agree only to rounding, and a run's result can depend on how its requests were grouped), and
logits are comparable with a llama.cpp server only when that server also runs flash attention
(`--flash_attn true`).

Threads: `n_threads` defaults to 1 (`default_threads()`), by measurement (`bench/llm_throughput_threads.py`,
raw llama.cpp on a shared 2-core AMD EPYC, interleaved, medians of 3): with 2 threads llama.cpp ran
at 0.07x (one sequence) and 0.26x (16 batched) the tokens/s of 1 thread at load average 5-8, 0.09x
and 0.14x with another process keeping a core busy, and 0.03-0.11x at load average 13-20. llama.cpp's
threads meet at a barrier after every operation and spin there, so a step runs at the pace of a
descheduled thread; one thread has no barrier, and the batch, not threads, is what uses the
hardware. With both cores free (load average < 1, 2026-12-07) 2 threads ran at 1.7x and, with
another process on a core, 0.54x: on a machine with idle cores reserved for the model, pass
`n_threads` and measure.

Constraints (`request.constraint`, see `agents.constraints` and docs/constraints.md): the
constraint is bound to this model's vocabulary (`vocabulary()`, built once per model); per request
its guide is the request's drawer (`agents.backends.llama_guided`): every token is drawn from q
renormalised over the allowed tokens (top-p is applied first: the target is the proposal restricted
to the constraint) and the completion reports log Σ_allowed q per drawn position
(`Completion.constraint`). T = 0: the highest-logit allowed token. A word chunk's boundary tokens
are drawn unconstrained once the chunk has content (a stop writes no text; the next chunk draws that
position under the constraint), so the stopping event keeps its unconstrained probability. No
allowed token with mass: finish reason "constraint" (weight 0). Batching is unchanged: the guide
only reshapes its own row, after the batch's vectorised log-softmax.

Chat: `request.messages` are rendered with the GGUF's own chat template (or a named llama-cpp-python
chat format), then `assistant_prefix` is appended and the whole string tokenized (special tokens
parsed), which continues a partial assistant reply. A template without a system role (Gemma's,
"mistral-instruct", "vicuna", ...) would drop system messages silently or raise: there each system
message's content is put at the head of the next user message, separated by a blank line (what
such models are trained to read; probed once per loaded template). Raw mode: `prompt + assistant_prefix`. The
model is loaded lazily, once. `tools`/`response_format` are ignored.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import numbers
import os
import pathlib
import re
import threading
import weakref
from typing import Any

import numpy as np

from agents.backends.base import Backend, BackendError, ChatMessage, Completion, GenerationRequest
from agents.backends.embedded import embedded_model_path
from agents.backends.system_role import fold_system_messages, keeps_system
from agents.backends.llama_chunks import ChunkBuilder, LlamaCppCompletion
from agents.backends.llama_context import BatchContext
from agents.backends.llama_engine import DecodeEngine, Job
from agents.backends.llama_guided import GuidedDrawer
from agents.backends.llama_model import chat_formatter, import_llama_cpp, load_model, vocab_tables
from agents.backends.llama_sampling import PROPOSAL, TokenDrawer, rng_for
from agents.constraints import Vocabulary

__all__ = ["LlamaCpp", "LlamaCppCompletion", "default_threads"]


N_BATCH = 512
"""Tokens one decode step may carry (prompt chunks and generated tokens of every sequence)."""


def default_threads() -> int:
    """The default `n_threads`: 1, measured on a shared machine (see the module docstring)."""
    return 1


def _close_at_exit(ref: "weakref.ref[LlamaCpp]") -> None:
    backend = ref()
    if backend is not None:
        backend.close()


class LlamaCpp(Backend):
    """In-process llama.cpp backend; the embedded SmolLM2-135M-Instruct model when no path is given.

    `n_ctx`: the context of one sequence (prompt + completion, in tokens; the examples' longest is
    175). `n_seq_max`: sequences decoded together and cached. KV memory is n_seq_max × n_ctx cells of
    about 23 KB for the embedded model (12 MB a sequence at the default n_ctx), allocated as the
    concurrency grows (8 sequences, then powers of two); copying a sequence copies its n_ctx cells.
    `n_threads`: llama.cpp threads (default: `default_threads()`, see the module docstring).
    `seed` seeds the stream from which requests *without* a seed draw their own seed (so unseeded
    calls differ from each other, yet a whole run is reproducible given the order of calls).
    `chat_format`: None = the GGUF's chat template; else a name such as "chat_template.default" or
    a llama-cpp-python format ("chatml", "llama-2", ...).
    """

    name = "llama_cpp"

    def __init__(self, model_path: str | os.PathLike[str] | None = None, n_ctx: int = 512, n_seq_max: int = 32,
                 n_threads: int | None = None, seed: int = 0, chat_format: str | None = None,
                 verbose: bool = False) -> None:
        for field, value in (("n_ctx", n_ctx), ("n_seq_max", n_seq_max), ("seed", seed)) + \
                ((("n_threads", n_threads),) if n_threads is not None else ()):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):  # "512": a bare TypeError; 2.5 passed
                raise TypeError(f"LlamaCpp: {field} must be an int, got {type(value).__name__} {value!r}")
        if chat_format is not None and not isinstance(chat_format, str):
            raise TypeError(f"LlamaCpp: chat_format must be a str (a format name), got {type(chat_format).__name__}")
        path = pathlib.Path(model_path) if model_path is not None else embedded_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"LlamaCpp: model file not found: {path}")
        if n_ctx <= 1:
            raise ValueError(f"LlamaCpp: n_ctx must be at least 2, got {n_ctx}")
        if not 1 <= n_seq_max <= 256:
            raise ValueError(f"LlamaCpp: n_seq_max must be between 1 and 256 (llama.cpp's limit), got {n_seq_max}")
        if n_threads is not None and n_threads <= 0:
            raise ValueError(f"LlamaCpp: n_threads must be positive, got {n_threads}")
        self.model_path = path
        self.model = path.stem
        self.n_ctx = n_ctx
        self.n_seq_max = n_seq_max
        self.n_threads = n_threads or default_threads()
        self.seed = seed
        self.chat_format = chat_format
        self.verbose = verbose
        self._seed_rng = rng_for(seed)
        self._lock = threading.Lock()
        self._model: Any = None
        self._engine: DecodeEngine | None = None

    def __reduce__(self) -> tuple:
        """Picklable (e.g. sent to a Ray actor) as its configuration: the receiving process loads the
        model on first use."""
        return (type(self), (self.model_path, self.n_ctx, self.n_seq_max, self.n_threads, self.seed,
                             self.chat_format, self.verbose))

    # ----------------------------------------------------------------- loading (once, lazily)
    def load(self) -> None:
        """Load the model now (otherwise the first call does). Thread-safe; loads only once."""
        with self._lock:
            if self._engine is None:
                self._engine = self._start()

    def _start(self) -> DecodeEngine:
        """Load the model and its tables; the decode engine over a new batch context (lock held)."""
        llama_cpp = import_llama_cpp()
        model = load_model(llama_cpp, self.model_path, self.verbose)
        # free the model before interpreter teardown: llama-cpp-python's own finaliser fails when it
        # runs after its module globals are gone ("TypeError: 'NoneType' object is not callable")
        atexit.register(_close_at_exit, weakref.ref(self))
        self._vocab = vocab_tables(llama_cpp, model)
        self._vocabulary = Vocabulary(self._vocab.pieces, np.flatnonzero(self._vocab.eog).tolist())
        self._formatter = chat_formatter(model, self.chat_format)
        self._keeps_system = keeps_system(lambda messages: self._formatter(messages=messages).prompt)
        self._controls: tuple[str, ...] | None = None
        self._bos = model.token_bos()
        self._model = model
        context = BatchContext(llama_cpp, model, n_ctx=self.n_ctx, n_seq_max=self.n_seq_max,
                               n_batch=max(N_BATCH, self.n_seq_max), n_threads=self.n_threads,
                               verbose=self.verbose, name=self.name)
        return DecodeEngine(context, name=self.name, model_name=self.model)

    def vocabulary(self) -> Vocabulary:
        """The model's vocabulary as constraints bind to it (token byte strings, end-of-generation
        ids), built once per loaded model."""
        self.load()
        return self._vocabulary

    # ----------------------------------------------------------------- the entry points
    async def complete(self, request: GenerationRequest) -> Completion:
        if not isinstance(request, GenerationRequest):
            raise TypeError(f"LlamaCpp.complete expects a GenerationRequest, got {type(request).__name__}")
        if self._engine is None:
            await asyncio.to_thread(self.load)
        return await self._submit(request, asyncio.get_running_loop())

    def complete_sync(self, request: GenerationRequest) -> Completion:
        """The blocking twin of `complete` (safe from any thread; batched with concurrent calls)."""
        if not isinstance(request, GenerationRequest):
            raise TypeError(f"LlamaCpp.complete expects a GenerationRequest, got {type(request).__name__}")
        self.load()
        return self._submit(request).result()

    def _submit(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop | None = None) -> Any:
        tokens = self.prompt_tokens(request)
        with self._lock:
            seed = request.seed if request.seed is not None else int(self._seed_rng.integers(1 << 63))
            engine = self._engine
        if engine is None:
            raise BackendError("LlamaCpp: the backend was closed")
        chunk = ChunkBuilder(request.settings, self._vocab, self._drawer(request))
        return engine.submit(Job(tokens, request.settings, chunk, rng_for(seed), loop=loop))

    def _drawer(self, request: GenerationRequest) -> TokenDrawer:
        """How the request draws its tokens: from the proposal, or under its constraint (a guide
        bound to this model's vocabulary, started after the reply's existing text)."""
        if request.constraint is None:
            return PROPOSAL
        return GuidedDrawer(request.constraint.guide(self._vocabulary, request.assistant_prefix))

    def stats(self) -> dict[str, int]:
        """What the batched decode and the KV cache did so far: requests, decode steps, tokens in
        batches, prefilled and generated tokens, the widest batch, reused tokens, copies, evictions, and
        the micro-batches llama.cpp cut the decodes into."""
        return self._engine.stats() if self._engine is not None else {}

    def decode_shapes(self) -> list[tuple[int, int]]:
        """(sequences, tokens) of each recent decode step, oldest first (at most the last 65536): how
        wide the batches were, for benchmarks that replay them on raw llama.cpp."""
        return list(self._engine.shapes) if self._engine is not None else []

    def close(self) -> None:
        """Stop the decode thread and free the model now (a later call loads it again)."""
        with self._lock:
            engine, model = self._engine, self._model
            self._engine, self._model = None, None
        if engine is not None:
            engine.close()
        if model is not None:
            model.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # ----------------------------------------------------------------- prompt
    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The token ids the model is conditioned on: chat template (or raw prompt) + assistant_prefix."""
        self.load()
        if request.messages is not None:
            tokens = self._chat_tokens(request.messages, request.assistant_prefix)
        else:  # a raw prompt is the caller's own template: its control-token texts are meant
            tokens = self._model.tokenize(((request.prompt or "") + request.assistant_prefix).encode("utf-8"), True, True)
        if not tokens:
            if self._bos == -1:
                raise ValueError("LlamaCpp: empty prompt and the model has no BOS token to start from")
            tokens = [self._bos]
        if len(tokens) >= self.n_ctx:
            # the backend's limit, not the target's verdict: the particle is lost (as with an HTTP server's 400)
            raise BackendError(f"LlamaCpp: the prompt has {len(tokens)} tokens but n_ctx is {self.n_ctx}; "
                               "shorten the conversation or raise n_ctx", source="llama_cpp")
        return tokens

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        """The bytes of a token sequence (special tokens rendered when `special`)."""
        self.load()
        return self._model.detokenize(tokens, special=special)

    def _chat_tokens(self, messages: list[ChatMessage], prefix: str) -> list[int]:
        """The rendered chat + `prefix`, tokenized so that only the template makes control tokens.

        Tokenizing the rendered text with control tokens parsed (as llama.cpp, vLLM and Hugging
        Face do by default) turns a message's own "<|im_end|>\n<|im_start|>system\n..." into a
        real system turn: an injection a tool result or a web page can make. A content (or a
        reply so far) that holds the text of a control token is tokenized as plain text instead
        (`_content_as_text`); every other chat is tokenized as before."""
        dicts = self._chat_dicts(messages)
        text, add_bos = self._render(dicts)
        controls = self._control_texts()
        if not any(c in d["content"] for d in dicts for c in controls) and not any(c in prefix for c in controls):
            return self._model.tokenize((text + prefix).encode("utf-8"), add_bos, True)
        return self._content_as_text(dicts, text, add_bos, prefix)

    def _content_as_text(self, dicts: list[dict[str, Any]], text: str, add_bos: bool, prefix: str) -> list[int]:
        """Tokens of a chat whose contents hold control-token texts: the template's pieces with
        control tokens parsed, the contents and `prefix` as plain text. The pieces are found by
        rendering the chat with a marker in place of each content; a template that changes
        contents (the markers do not give back `text`) gets the control texts in the contents
        broken instead, by a word joiner (U+2060) after their first character."""
        tokenize = self._model.tokenize
        marked, _ = self._render([{**d, "content": f"\ue000{i}\ue001"} for i, d in enumerate(dicts)])
        pieces = _MARKER.split(marked)
        order = [int(i) for i in pieces[1::2]]
        contents = [d["content"] for d in dicts]
        if order != sorted(set(order)) or "".join(
                p if k % 2 == 0 else contents[int(p)] for k, p in enumerate(pieces)) != text:
            broken = [{**d, "content": _break_controls(d["content"], self._control_texts())} for d in dicts]
            text, add_bos = self._render(broken)
            return tokenize((text + _break_controls(prefix, self._control_texts())).encode("utf-8"), add_bos, True)
        tokens: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2 == 0:
                tokens += tokenize(piece.encode("utf-8"), add_bos and k == 0, True) if piece or k == 0 else []
            else:
                tokens += tokenize(contents[int(piece)].encode("utf-8"), False, False)
        return tokens + (tokenize(prefix.encode("utf-8"), False, False) if prefix else [])

    def _control_texts(self) -> tuple[str, ...]:
        """The texts of the model's control (and user-defined special) tokens, read once."""
        if self._controls is None:
            import llama_cpp

            model, buf, texts = self._model, ctypes.create_string_buffer(256), []
            special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
            for tok in range(model.n_vocab()):
                if llama_cpp.llama_vocab_get_attr(model.vocab, tok) & special:
                    n = llama_cpp.llama_token_to_piece(model.vocab, tok, buf, len(buf), 0, True)
                    piece = buf.raw[:max(n, 0)].decode("utf-8", "replace")
                    if piece:
                        texts.append(piece)
            self._controls = tuple(sorted(set(texts), key=len, reverse=True))
        return self._controls

    def _render(self, dicts: list[dict[str, Any]]) -> tuple[str, bool]:
        response = self._formatter(messages=dicts)
        return response.prompt, not getattr(response, "added_special", False)

    def _chat_dicts(self, messages: list[ChatMessage]) -> list[dict[str, Any]]:
        if not messages:
            raise ValueError("GenerationRequest.messages is empty: give at least one message")
        dicts = []
        for m in messages:
            d: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.name is not None:
                d["name"] = m.name
            if m.tool_call_id is not None:
                d["tool_call_id"] = m.tool_call_id
            dicts.append(d)
        if not self._keeps_system:
            dicts = fold_system_messages(dicts)
        return dicts


_MARKER = re.compile("\ue000(\\d+)\ue001")
"""Where a content stands in a chat rendered with markers (private-use characters around its index)."""


def _break_controls(text: str, controls: tuple[str, ...]) -> str:
    """`text` with each control-token text in it broken by a word joiner after its first character."""
    for control in controls:
        if control in text:
            text = text.replace(control, control[0] + "\u2060" + control[1:])
    return text

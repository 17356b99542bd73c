"""`LlamaCpp`: an in-process llama.cpp backend (through llama-cpp-python) with honest log-probabilities.

We do not use llama.cpp's sampler. We evaluate tokens with `Llama.eval` (which keeps the KV cache and
`input_ids`), read the raw logits ℓ of the last position, and sample ourselves, so that every number
we report is the probability of what we actually did.

Per position, with logits ℓ ∈ R^V:

    base:      log p(v) = ℓ_v − logsumexp(ℓ)                             (temperature 1, no truncation)
    tempered:  log r(v) = ℓ_v/T − logsumexp(ℓ/T)                         (T > 0)
    nucleus:   N = the smallest set of highest-r tokens (ties by token id) with Σ_{v∈N} r(v) ≥ top_p
    proposal:  log q(v) = log r(v) − log Σ_{u∈N} r(u)   for v ∈ N,  −inf otherwise
    greedy:    T = 0  →  q = point mass on argmax ℓ (first index on ties), so log q = 0.

A token is drawn by inverse CDF over q (token-id order) with u ~ U[0,1) from a numpy Generator seeded
with `request.seed`, so the same request and seed give the same completion bit for bit.
`token_logprobs[i] = log q_i(token_i)` and `base_token_logprobs[i] = log p_i(token_i)`; an
end-of-generation token that ends the completion is kept as a last token with text "" so that both
sums include it.

Chunking (`settings.unit`), so SMC can resample between chunks; `Completion.log_prob` is the
probability of the chunk under the chunking proposal:

- "token": one token. log q(chunk) = log q(t₁).
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

Chat: `request.messages` are rendered with the GGUF's own chat template (or a named llama-cpp-python
chat format), then `assistant_prefix` is appended and the whole string tokenized (special tokens
parsed), which continues a partial assistant reply. Raw mode: `prompt + assistant_prefix`.

KV cache: the new prompt's longest common prefix with the already evaluated tokens is reused, so
chunked generation where each call extends the previous text only evaluates the new tokens.
Concurrency: one `Llama` is not thread-safe; calls are serialised (a `threading.Lock` around the
blocking work, which runs in `asyncio.to_thread`, plus one `asyncio.Lock` per event loop so waiting
calls do not occupy threads). The model is loaded lazily, once. `tools`/`response_format` are ignored.

Constraints (`request.constraint`, see `agents.constraints`): the constraint is bound to this
model's vocabulary once; per generation its guide draws every token from q renormalised over the
allowed tokens (top-p is applied first: the target is the proposal restricted to the constraint) and
the completion reports log Σ_allowed q per drawn position. T = 0: the highest-logit allowed token.
A word chunk's boundary tokens are drawn unconstrained once the chunk has content (a stop writes no
text; the next chunk draws that position under the constraint), so the stopping event keeps its
unconstrained probability. No allowed token with mass: finish reason "constraint" (weight 0).
"""

from __future__ import annotations

import asyncio
import atexit
import codecs
import ctypes
import math
import os
import pathlib
import threading
import time
import weakref
from typing import Any

import numpy as np

from agents.backends.base import Backend, BackendError, ChatMessage, Completion, GenerationRequest, Usage
from agents.backends.embedded import embedded_model_path

_WHITESPACE_BYTES = frozenset(b" \t\n\r\x0b\x0c")
_INSTALL_HINT = "pip install 'llama-cpp-python[server]' (or pip install 'plp-swarm[llama]')"


class LlamaCppCompletion(Completion):
    """A `Completion` that also carries the base-model mass of the chunk's stopping event."""

    base_stop_log_prob: float | None = None
    """log p(B ∪ E) at the stopping position (unit="word"), under the base model; None otherwise."""
    token_ids: list[int] = []
    """The drawn token ids, aligned with `tokens` (for exact replay and independent checks)."""

    @property
    def base_log_prob(self) -> float | None:
        """log p(chunk) under the base model at temperature 1, including the stopping event."""
        if self.base_token_logprobs is None:
            return None
        return math.fsum([*self.base_token_logprobs, self.base_stop_log_prob or 0.0])


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """log softmax in float64: x − max − log Σ exp(x − max)."""
    shifted = x - x.max()
    return shifted - math.log(float(np.exp(shifted).sum()))


def _log_mass(logp: np.ndarray, mask: np.ndarray) -> float:
    """log Σ_{v: mask[v]} exp(logp[v]) (−inf for an empty or zero-mass set)."""
    sel = logp[mask]
    sel = sel[np.isfinite(sel)]
    if sel.size == 0:
        return -math.inf
    top = float(sel.max())
    return top + math.log(float(np.exp(sel - top).sum()))


class _Proposal:
    """The proposal q at one position (see the module docstring) plus the base log p."""

    def __init__(self, logits: np.ndarray, temperature: float, top_p: float) -> None:
        self.base = _log_softmax(logits)
        if temperature == 0.0:
            self.greedy: int | None = int(np.argmax(logits))
            self.logq = np.full_like(self.base, -math.inf)
            self.logq[self.greedy] = 0.0
            return
        self.greedy = None
        logr = _log_softmax(logits / temperature)
        if top_p < 1.0:
            order = np.argsort(-logr, kind="stable")
            cum = np.cumsum(np.exp(logr[order]))
            k = min(int(np.searchsorted(cum, top_p, side="left")) + 1, order.size)
            kept = order[:k]
            logq = np.full_like(logr, -math.inf)
            logq[kept] = logr[kept] - math.log(float(cum[k - 1]))
            logr = logq
        self.logq = logr

    def sample(self, rng: np.random.Generator) -> int:
        """Inverse-CDF draw over token ids; greedy needs no randomness (rng is not advanced)."""
        if self.greedy is not None:
            return self.greedy
        cdf = np.cumsum(np.exp(self.logq))
        idx = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        return min(idx, cdf.size - 1)


def _rng_for(seed: int) -> np.random.Generator:
    """A numpy Generator for any Python int seed (negative seeds map into [0, 2**64))."""
    return np.random.default_rng(seed if seed >= 0 else seed % (1 << 64))


def _trim_pieces(pieces: list[str], n_chars: int) -> list[str]:
    """Cut a list of text pieces so that their concatenation has exactly n_chars characters."""
    out, used = [], 0
    for piece in pieces:
        keep = piece[: max(0, n_chars - used)]
        out.append(keep)
        used += len(keep)
    return out


def _close_at_exit(ref: "weakref.ref[LlamaCpp]") -> None:
    backend = ref()
    if backend is not None:
        backend.close()


class LlamaCpp(Backend):
    """In-process llama.cpp backend; the embedded SmolLM2-135M-Instruct model when no path is given.

    `seed` seeds the stream from which requests *without* a seed draw their own seed (so unseeded
    calls differ from each other, yet a whole run is reproducible given the order of calls).
    `n_threads` defaults to all cores. `chat_format`: None = the GGUF's chat template; else a name
    such as "chat_template.default" or a llama-cpp-python format ("chatml", "llama-2", ...).
    """

    name = "llama_cpp"

    def __init__(self, model_path: str | os.PathLike[str] | None = None, n_ctx: int = 2048,
                 n_threads: int | None = None, seed: int = 0, chat_format: str | None = None,
                 verbose: bool = False) -> None:
        path = pathlib.Path(model_path) if model_path is not None else embedded_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"LlamaCpp: model file not found: {path}")
        if n_ctx <= 0:
            raise ValueError(f"LlamaCpp: n_ctx must be positive, got {n_ctx}")
        self.model_path = path
        self.model = path.stem
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.seed = seed
        self.chat_format = chat_format
        self.verbose = verbose
        self._seed_rng = _rng_for(seed)
        self._lock = threading.Lock()
        self._async_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._llm: Any = None
        self._vocabulary: Any = None

    # ----------------------------------------------------------------- loading (once, lazily)
    def load(self) -> None:
        """Load the model now (otherwise the first call does). Thread-safe; loads only once."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._llm is not None:
            return
        try:
            import llama_cpp
        except ImportError as exc:
            raise BackendError(f"LlamaCpp needs llama-cpp-python: {_INSTALL_HINT}") from exc
        try:
            llm = llama_cpp.Llama(model_path=str(self.model_path), n_ctx=self.n_ctx,
                                  n_threads=self.n_threads, n_threads_batch=self.n_threads, n_batch=512,
                                  seed=self.seed & 0xFFFFFFFF, logits_all=False, verbose=self.verbose)
        except Exception as exc:  # llama-cpp-python raises ValueError/RuntimeError on bad files
            raise BackendError(f"LlamaCpp could not load {self.model_path}: {exc}") from exc
        # free the model before interpreter teardown: llama-cpp-python's own finaliser fails when it
        # runs after its module globals are gone ("TypeError: 'NoneType' object is not callable")
        atexit.register(_close_at_exit, weakref.ref(self))
        self._pieces, self._eog, self._ws_start = self._vocab_tables(llama_cpp, llm)
        self._formatter = self._chat_formatter(llm)
        self._llm = llm

    @staticmethod
    def _vocab_tables(llama_cpp: Any, llm: Any) -> tuple[list[bytes], np.ndarray, np.ndarray]:
        """Per token id: its text bytes, whether it ends generation (E), whether it starts with
        whitespace (B)."""
        vocab = llm._model.vocab
        buf = ctypes.create_string_buffer(256)
        pieces = []
        for tok in range(llm.n_vocab()):
            n = llama_cpp.llama_token_to_piece(vocab, tok, buf, len(buf), 0, False)
            pieces.append(buf.raw[: max(n, 0)])
        eog = np.array([bool(llama_cpp.llama_vocab_is_eog(vocab, t)) for t in range(len(pieces))])
        ws = np.array([p[:1] != b"" and p[0] in _WHITESPACE_BYTES for p in pieces])
        return pieces, eog, ws

    def _chat_formatter(self, llm: Any) -> Any:
        """The chat formatter: a GGUF template ("chat_template.default" = `tokenizer.chat_template`,
        "chat_template.X" = `tokenizer.chat_template.X`) or a llama-cpp-python registered format."""
        from llama_cpp import llama_chat_format as fmt

        name = self.chat_format or "chat_template.default"
        if name.startswith("chat_template."):
            suffix = name[len("chat_template."):]
            key = "tokenizer.chat_template" + ("" if suffix == "default" else "." + suffix)
            template = llm.metadata.get(key)
            if template is not None:
                eos, bos, text = llm.token_eos(), llm.token_bos(), llm._model.token_get_text
                return fmt.Jinja2ChatFormatter(template=template,
                                               eos_token=text(eos) if eos != -1 else "",
                                               bos_token=text(bos) if bos != -1 else "")
            if self.chat_format is None:
                return fmt.format_chatml  # the GGUF has no template: ChatML is the common default
        return self._registered_formatter(fmt, name, llm)

    @staticmethod
    def _registered_formatter(fmt: Any, name: str, llm: Any) -> Any:
        """The ChatFormatter behind a llama-cpp-python registered chat format (closure cell)."""
        handlers = fmt.LlamaChatCompletionHandlerRegistry()._chat_handlers
        handler = handlers.get(name)
        code, closure = getattr(handler, "__code__", None), getattr(handler, "__closure__", None)
        cells = dict(zip(code.co_freevars, closure)) if code is not None and closure else {}
        if "chat_formatter" not in cells:
            ggufs = sorted(k[len("tokenizer."):] if "." in k[len("tokenizer."):] else "chat_template.default"
                           for k in llm.metadata if k.startswith("tokenizer.chat_template"))
            raise ValueError(f"LlamaCpp: unknown chat_format {name!r}; the model's templates are "
                             f"{ggufs or 'none'}, llama-cpp-python's formats are {sorted(handlers)}")
        return cells["chat_formatter"].cell_contents

    # ----------------------------------------------------------------- the async entry point
    async def complete(self, request: GenerationRequest) -> Completion:
        if not isinstance(request, GenerationRequest):
            raise TypeError(f"LlamaCpp.complete expects a GenerationRequest, got {type(request).__name__}")
        loop = asyncio.get_running_loop()
        lock = self._async_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self.complete_sync, request)

    def complete_sync(self, request: GenerationRequest) -> Completion:
        """The blocking implementation of `complete` (thread-safe, serialised)."""
        with self._lock:
            self._load_locked()
            seed = request.seed if request.seed is not None else int(self._seed_rng.integers(1 << 63))
            try:
                return self._generate(request, _rng_for(seed))
            except (BackendError, ValueError):
                raise
            except RuntimeError as exc:
                raise BackendError(f"llama.cpp failed: {exc}") from exc

    def close(self) -> None:
        """Free the model now (a later call loads it again)."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings, not the loaded model or locks: a backend shipped to a Ray actor
        (`Agent(backend=LlamaCpp(...), hosting=RayHosting(...))`) loads its own model there."""
        keep = ("model_path", "model", "n_ctx", "n_threads", "seed", "chat_format", "verbose", "_seed_rng")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._async_locks = weakref.WeakKeyDictionary()
        self._llm = None

    # ----------------------------------------------------------------- prompt and KV cache
    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The token ids the model is conditioned on: chat template (or raw prompt) + assistant_prefix."""
        llm = self._llm
        if request.messages is not None:
            text, add_bos = self._render_chat(request.messages)
        else:
            text, add_bos = request.prompt or "", True
        tokens = llm.tokenize((text + request.assistant_prefix).encode("utf-8"), add_bos=add_bos, special=True)
        if not tokens:
            if llm.token_bos() == -1:
                raise ValueError("LlamaCpp: empty prompt and the model has no BOS token to start from")
            tokens = [llm.token_bos()]
        if len(tokens) >= self.n_ctx:
            raise ValueError(f"LlamaCpp: the prompt has {len(tokens)} tokens but n_ctx is {self.n_ctx}; "
                             "shorten the conversation or raise n_ctx")
        return tokens

    def _render_chat(self, messages: list[ChatMessage]) -> tuple[str, bool]:
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
        response = self._formatter(messages=dicts)
        return response.prompt, not getattr(response, "added_special", False)

    def _prefill(self, tokens: list[int]) -> np.ndarray:
        """Evaluate `tokens`, reusing the longest common prefix already in the KV cache. Returns the
        logits (float64) at the last position."""
        llm = self._llm
        cached = llm.input_ids[: llm.n_tokens]
        n = min(len(cached), len(tokens))
        diff = np.nonzero(cached[:n] != np.asarray(tokens[:n], dtype=cached.dtype))[0]
        return self._eval_from(tokens, int(diff[0]) if diff.size else n)

    def _eval_from(self, tokens: list[int], start: int) -> np.ndarray:
        """Evaluate tokens[start:] on top of the KV cache holding tokens[:start], in batches of at
        least two tokens (rewinding one position when needed).

        Why: on CPU llama.cpp computes a 1-token batch through different kernels than a larger batch,
        and the results differ (by up to ~0.8 in a logit for this quantised model); batches of ≥ 2
        tokens give bit-identical results however the sequence is split. So every position is only
        ever computed in a ≥2-token batch: logits depend on the token sequence alone, not on the
        cache history, and the same request with the same seed is reproducible bit for bit."""
        llm = self._llm
        start = max(0, min(start, len(tokens) - 2))
        llm.n_tokens = start
        rest, i = tokens[start:], 0
        while i < len(rest):
            size = min(llm.n_batch, len(rest) - i)
            size -= 1 if len(rest) - i - size == 1 and size > 2 else 0
            llm.eval(rest[i:i + size])
            i += size
        return self._last_logits()

    def _last_logits(self) -> np.ndarray:
        llm = self._llm
        ptr = llm._ctx.get_logits_ith(-1)
        return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float64)

    # ----------------------------------------------------------------- the sampling loop
    def _generate(self, request: GenerationRequest, rng: np.random.Generator) -> LlamaCppCompletion:
        s = request.settings
        tokens = self.prompt_tokens(request)
        start = time.perf_counter()
        logits = self._prefill(tokens)
        seq = list(tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        boundary = self._ws_start | self._eog
        stops = [x for x in s.stop if x]
        pieces: list[str] = []
        ids: list[int] = []
        lq: list[float] = []
        lp: list[float] = []
        text, finish, stop_lq, stop_lp, in_word = "", "length", 0.0, None, False
        guide = self._guide(request)
        for i in range(s.max_tokens):
            q = _Proposal(logits, s.temperature, s.top_p)
            if guide is None:
                tok, tok_lq = q.sample(rng), None
            else:
                d = guide.draw(q.logq, rng, greedy_scores=logits if q.greedy is not None else None,
                               free=boundary if s.unit == "word" and in_word else None)
                if d.dead:
                    finish = "constraint"
                    break
                tok, tok_lq = d.token, d.log_q
            if s.unit == "word" and in_word and boundary[tok]:
                stop_lq, stop_lp = ((_log_mass(q.logq, boundary), _log_mass(q.base, boundary)) if guide is None
                                    else guide.stop_log_probs(d, q.logq, q.base, boundary))
                finish = "eos" if self._eog[tok] else "unit"
                break
            if guide is not None:
                guide.advance(tok)
            piece = decoder.decode(self._pieces[tok])
            pieces.append(piece)
            ids.append(tok)
            lq.append(float(q.logq[tok]) if tok_lq is None else tok_lq)
            lp.append(float(q.base[tok]))
            if self._eog[tok]:
                finish = "eos"
                break
            before, text = len(text), text + piece
            cut = self._find_stop(text, stops, before)
            if cut is not None:
                text, pieces, finish = text[:cut], _trim_pieces(pieces, cut), "stop"
                break
            if s.unit == "token" or (s.unit == "line" and "\n" in piece):
                finish = "unit"
                break
            in_word = in_word or bool(piece.strip())
            if i + 1 == s.max_tokens or self._llm.n_tokens >= self.n_ctx:
                break
            seq.append(tok)
            logits = self._eval_from(seq, len(seq) - 1)
        tail = decoder.decode(b"", final=True)
        if tail and finish != "stop" and pieces:
            pieces[-1] += tail
            text += tail
        return LlamaCppCompletion(
            text=text, tokens=pieces, token_ids=ids, token_logprobs=lq, base_token_logprobs=lp,
            stop_log_prob=stop_lq, base_stop_log_prob=stop_lp, finish_reason=finish,
            usage=Usage(input_tokens=len(tokens), output_tokens=len(pieces)),
            latency_s=time.perf_counter() - start, model=self.model, backend=self.name,
            constraint=guide.report() if guide is not None else None)

    def _guide(self, request: GenerationRequest) -> Any:
        """The request's constraint bound to this model's vocabulary (cached), started after the
        reply's existing text; None without a constraint."""
        if request.constraint is None:
            return None
        if self._vocabulary is None:
            from agents.constraints import Vocabulary

            self._vocabulary = Vocabulary(self._pieces, np.nonzero(self._eog)[0].tolist())
        return request.constraint.guide(self._vocabulary, request.assistant_prefix)

    @staticmethod
    def _find_stop(text: str, stops: list[str], before: int) -> int | None:
        """Index of the earliest stop string in `text` that ends in the newly added part, if any."""
        hits = [j for x in stops if (j := text.find(x, max(0, before - len(x) + 1))) != -1]
        return min(hits) if hits else None

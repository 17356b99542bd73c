"""Regular expressions, JSON schemas and grammars, through llguidance (the engine llama.cpp and
vLLM use): its `LLMatcher` computes the exact token mask of a vocabulary after any byte prefix.

Why llguidance (bench/constraint_masks.py measures it against outlines-core on SmolLM2's 49,152
tokens): it compiles lazily (no up-front automaton over the vocabulary: a JSON schema is ready in
under a millisecond where outlines-core builds an index first), it covers regex, JSON schema and
Lark/GBNF grammars with one API, and it needs no torch (xgrammar imports torch unconditionally).

Definition on text (vocabulary-free, used by `prefix`/`complete` and the contract test): a matcher
over a byte-level vocabulary (256 one-byte tokens + EOS) consumes the text byte by byte; Φ(x) = 1
iff every byte is accepted, Φ_end(x) = 1 iff the matcher then accepts. Lifted to a model's
vocabulary, the mask after the reply's tokens is llguidance's; end-of-generation ids are allowed
exactly when the matcher accepts; control tokens (no text) are marked special and never allowed.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from agents.constraints.base import BoundConstraint, Constraint, ConstraintError, TokenState, decode
from agents.constraints.vocabulary import Vocabulary

_TOKENIZERS: dict[str, Any] = {}


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConstraintError("regex/json_schema/grammar constraints need llguidance: pip install llguidance") from exc
    return llguidance


class _Pieces:
    """The tokenizer object llguidance's TokenizerWrapper wants: token bytes, EOS, and a tokenize
    function (llguidance's own greedy tokenizer, used only to feed a reply prefix to a matcher)."""

    def __init__(self, tokens: list[bytes], eos: int, special: list[int]) -> None:
        self.tokens, self.eos_token_id, self.bos_token_id, self.special_token_ids = tokens, eos, None, special
        self.lltok: Any = None

    def __call__(self, text: str | bytes) -> list[int]:
        return self.lltok.greedy_tokenize(decode(text) if isinstance(text, bytes) else text)


def lltokenizer(vocab: Vocabulary) -> Any:
    """The llguidance tokenizer of `vocab` (built once per vocabulary: ~0.25 s for 49k tokens)."""
    tok = _TOKENIZERS.get(vocab.fingerprint)
    if tok is None:
        llg = _llguidance()
        special = [i for i in range(len(vocab)) if vocab.special_mask[i] or vocab.eos_mask[i]]
        tokens = [b"\xff<|special_%d|>" % i if i in set(special) else p for i, p in enumerate(vocab.pieces)]
        wrapper = _Pieces(tokens, vocab.eos_ids[0], special)
        tok = llg.LLTokenizer(llg.TokenizerWrapper(wrapper), eos_token=list(vocab.eos_ids))
        wrapper.lltok = tok
        _TOKENIZERS[vocab.fingerprint] = tok
    return tok


BYTE_VOCAB = Vocabulary([bytes([b]) for b in range(256)] + [b""], eos_ids=[256])
"""The byte-level vocabulary on which grammar constraints are *defined* (prefix/complete on text)."""


class GrammarConstraint(Constraint):
    exact = True
    boolean = True
    defined_by_description = True

    def __init__(self, kind: str, source: str, grammar: str) -> None:
        self.kind, self.source, self.grammar = kind, source, grammar
        llg = _llguidance()
        error = llg.LLMatcher.validate_grammar(grammar, lltokenizer(BYTE_VOCAB))
        if error and not error.startswith("WARNING"):
            raise ConstraintError(f"{kind}: invalid {kind.replace('_', ' ')}: {error}")

    def describe(self) -> str:
        return f"{self.kind}({self.source})"

    def _matcher_on(self, text: str) -> Any:
        m = _llguidance().LLMatcher(lltokenizer(BYTE_VOCAB), self.grammar, log_level=0)
        m.consume_tokens(list(text.encode("utf-8")))
        return m

    def prefix(self, text: str) -> float:
        return 0.0 if self._matcher_on(text).is_error() else 1.0

    def complete(self, text: str) -> float:
        m = self._matcher_on(text)
        return 1.0 if not m.is_error() and m.is_accepting() else 0.0

    def _bind(self, vocab: Vocabulary) -> "BoundGrammar":
        return BoundGrammar(self, vocab)


class BoundGrammar(BoundConstraint):
    def __init__(self, constraint: GrammarConstraint, vocab: Vocabulary) -> None:
        llg = _llguidance()
        self.vocab = vocab
        self.tokenizer = lltokenizer(vocab)
        self.pristine = llg.LLMatcher(self.tokenizer, constraint.grammar, log_level=0)
        if self.pristine.is_error():
            raise ConstraintError(f"{constraint.describe()}: {self.pristine.get_error()}")

    def start(self, prefix: bytes) -> "GrammarState":
        matcher = self.pristine.deep_copy()
        if prefix:
            matcher.consume_tokens(self.tokenizer.greedy_tokenize(decode(prefix)))
        return GrammarState(self, matcher)


class GrammarState(TokenState):
    exact = True
    boolean = True

    def __init__(self, bound: BoundGrammar, matcher: Any) -> None:
        self.bound = bound
        self.matcher = matcher
        words = (len(bound.vocab) + 31) // 32
        self._bitmask = np.zeros(words, dtype=np.int32)
        self._row: np.ndarray | None = None

    def log_phi_row(self) -> np.ndarray:
        if self._row is None:
            n = len(self.bound.vocab)
            if self.matcher.is_error():
                self._row = np.full(n, -math.inf)
            else:
                self.matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
                bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")[:n].astype(bool)
                self._row = np.where(bits, 0.0, -math.inf)
        return self._row

    def advance(self, token: int) -> None:
        self._row = None
        self.matcher.consume_token(token)  # a rejected token leaves the matcher in its error state


def regex(pattern: str) -> GrammarConstraint:
    """The whole reply matches `pattern` (Rust regex syntax, anchored at both ends)."""
    if not isinstance(pattern, str):
        raise ConstraintError(f"regex: the pattern must be a string, got {type(pattern).__name__}")
    return GrammarConstraint("regex", json.dumps(pattern), _llguidance().LLMatcher.grammar_from_regex(pattern))


def json_schema(model_or_schema: Any) -> GrammarConstraint:
    """The reply is a JSON value valid for a JSON schema: a pydantic model class, a dict or a JSON string."""
    schema = model_or_schema
    if isinstance(schema, type) and hasattr(schema, "model_json_schema"):
        schema = schema.model_json_schema()
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise ConstraintError(f"json_schema: the schema string is not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise ConstraintError(f"json_schema: give a pydantic model class, a dict or a JSON string, got {model_or_schema!r}")
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    try:
        grammar = _llguidance().LLMatcher.grammar_from_json_schema(canonical)
    except ValueError as exc:
        raise ConstraintError(f"json_schema: {exc}") from None
    return GrammarConstraint("json_schema", canonical, grammar)


def grammar(text: str) -> GrammarConstraint:
    """The reply is a sentence of a context-free grammar, in Lark syntax (llguidance's dialect, start
    rule `start`) or llama.cpp's GBNF (start rule `root`)."""
    if not isinstance(text, str) or not text.strip():
        raise ConstraintError("grammar: give the grammar's text (Lark or GBNF)")
    try:
        lark = _llguidance().grammar_from("grammar", text)
    except ValueError as exc:
        raise ConstraintError(f"grammar: {exc}") from None
    return GrammarConstraint("grammar", json.dumps(text), lark)

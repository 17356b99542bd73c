"""Loading a GGUF model for the batched backend: the model, its vocabulary tables, its chat template.

The model is llama-cpp-python's `LlamaModel` (the thin owner of a `llama_model *`, with tokenize,
detokenize and metadata); the decode context is the engine's own (`agents.backends.llama_engine`),
because the high-level `Llama` class has one sequence and no batching.
"""

from __future__ import annotations

import ctypes
import pathlib
from typing import Any

import numpy as np

from agents.backends.base import BackendError
from agents.backends.llama_chunks import VocabTables
from swarm.errors import SwarmError

_WHITESPACE_BYTES = frozenset(b" \t\n\r\x0b\x0c")
INSTALL_HINT = "pip install 'llama-cpp-python[server]' (or pip install 'plp-swarm[llama]')"


class UnknownChatFormat(SwarmError, ValueError):
    """`LlamaCpp(chat_format=...)` names no template of the model and no llama-cpp-python format. A
    SwarmError, so the run stops at the first generation: as a ValueError it killed only the
    particles that generated, and a program whose other branch did not returned its marginal."""


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendError(f"LlamaCpp needs llama-cpp-python: {INSTALL_HINT}") from exc
    return llama_cpp


def load_model(llama_cpp: Any, path: pathlib.Path, verbose: bool) -> Any:
    """The `LlamaModel` for a GGUF file (BackendError naming the file when llama.cpp refuses it)."""
    from llama_cpp import _internals
    from llama_cpp._logger import set_verbose

    set_verbose(verbose)
    try:
        return _internals.LlamaModel(path_model=str(path), params=llama_cpp.llama_model_default_params(),
                                     verbose=verbose)
    except Exception as exc:  # llama-cpp-python raises ValueError/RuntimeError on bad files
        raise BackendError(f"LlamaCpp could not load {path}: {exc}") from exc


def vocab_tables(llama_cpp: Any, model: Any) -> VocabTables:
    """Per token id: its text bytes, whether it ends generation (E), whether it starts with whitespace (B)."""
    buf = ctypes.create_string_buffer(256)
    pieces = []
    for tok in range(model.n_vocab()):
        n = llama_cpp.llama_token_to_piece(model.vocab, tok, buf, len(buf), 0, False)
        pieces.append(buf.raw[: max(n, 0)])
    eog = np.array([bool(llama_cpp.llama_vocab_is_eog(model.vocab, t)) for t in range(len(pieces))])
    ws = np.array([p[:1] != b"" and p[0] in _WHITESPACE_BYTES for p in pieces])
    return VocabTables(pieces, eog, ws)


def chat_formatter(model: Any, chat_format: str | None) -> Any:
    """The chat formatter: a GGUF template ("chat_template.default" = `tokenizer.chat_template`,
    "chat_template.X" = `tokenizer.chat_template.X`) or a llama-cpp-python registered format."""
    from llama_cpp import llama_chat_format as fmt

    name = chat_format or "chat_template.default"
    metadata = model.metadata()
    if name.startswith("chat_template."):
        suffix = name[len("chat_template."):]
        key = "tokenizer.chat_template" + ("" if suffix == "default" else "." + suffix)
        template = metadata.get(key)
        if template is not None:
            eos, bos, text = model.token_eos(), model.token_bos(), model.token_get_text
            return fmt.Jinja2ChatFormatter(template=template, eos_token=text(eos) if eos != -1 else "",
                                           bos_token=text(bos) if bos != -1 else "")
        if chat_format is None:
            return fmt.format_chatml  # the GGUF has no template: ChatML is the common default
    return _registered_formatter(fmt, name, metadata)


def _registered_formatter(fmt: Any, name: str, metadata: dict[str, str]) -> Any:
    """The ChatFormatter behind a llama-cpp-python registered chat format (closure cell)."""
    handlers = fmt.LlamaChatCompletionHandlerRegistry()._chat_handlers
    handler = handlers.get(name)
    code, closure = getattr(handler, "__code__", None), getattr(handler, "__closure__", None)
    cells = dict(zip(code.co_freevars, closure)) if code is not None and closure else {}
    if "chat_formatter" not in cells:
        ggufs = sorted(k[len("tokenizer."):] if "." in k[len("tokenizer."):] else "chat_template.default"
                       for k in metadata if k.startswith("tokenizer.chat_template"))
        raise UnknownChatFormat(f"LlamaCpp: unknown chat_format {name!r}; the model's templates are "
                         f"{ggufs or 'none'}, llama-cpp-python's formats are {sorted(handlers)}")
    return cells["chat_formatter"].cell_contents

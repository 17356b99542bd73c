"""The error hierarchy. Every error the framework raises on purpose derives from `SwarmError`."""

from __future__ import annotations


class SwarmError(Exception):
    """Base class of every error raised by plp-swarm on purpose. Registered secrets (API keys) are
    masked in its message: messages quote the values at fault (e.g. a non-numeric potential)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))

    def __reduce__(self) -> tuple:
        """Pickles with its message and fields whatever its `__init__` takes (Ray ships errors between
        processes; the default would call `__init__(message)`, which e.g. `NoSurvivingParticles`
        does not take)."""
        return (_restored, (type(self), self.args, self.__dict__))


def _restored(cls: type, args: tuple, state: dict) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class InvalidPotentialError(SwarmError, ValueError):
    """A `factor` got a log-potential that is NaN, +inf, non-numeric or not a scalar.

    −inf is allowed (it kills the particle, like a failed `guarantee`); NaN and +inf are
    programming errors: they would corrupt every normalised weight of the population.
    """


class InvalidDistributionError(SwarmError, ValueError):
    """A distribution was built with invalid parameters (negative or non-normalised probabilities,
    an empty support, mismatched lengths)."""


class DuplicateSiteError(SwarmError, ValueError):
    """Two sites of one trace share an address. Replay and enumeration address sites by name, so
    every `sample`/`factor`/`guarantee` in one execution needs a distinct name."""


class NondeterminismError(SwarmError):
    """A program re-executed under replay did something other than what its recorded trace says.

    Replay (how resampled offspring get their own copy of a particle) requires the program to be
    deterministic given its sampled values: every stochastic or external effect must go through
    `sample`, `interact` or an agent.
    """


class AsyncInPlainProgramError(SwarmError, TypeError):
    """A plain `def` program sampled an asynchronous distribution (an LLM generation)."""


class ProgramArgumentsError(SwarmError, TypeError):
    """A program was given arguments its signature does not take (raised before the run starts)."""


class UnawaitedSampleError(SwarmError, TypeError):
    """An async program's `sample` of an LLM generation (or another asynchronous distribution) was
    never awaited: the generation never ran, and its value would have been a coroutine object."""


class PrimitiveUsageError(SwarmError, TypeError):
    """A primitive was called with arguments of the wrong kind: a site name that is not a non-empty
    string, a `sample` of something that is not a swarm `Distribution`, non-string `interact` parties,
    a `plate` whose size is not a non-negative integer or whose replica is not a function.
    A programming error, not an outcome of the model, so it aborts the run: as an ordinary exception
    it would kill only the particles that reach it and silently bias the population that is left."""


class BlockingRunError(SwarmError, RuntimeError):
    """A blocking `policy.run(...)` (or a plain `for` over `policy.stream(...)`) was called where an
    event loop is running, in async code (an `async def` program or tool included): it would stop
    every other task of that loop. `await policy.run_async(...)` is the way there. A SwarmError, so
    inside a program it aborts the run rather than killing the particles that reach it."""


class ProgramKindError(SwarmError, TypeError):
    """The program is of a kind the policy cannot run: a generator function (a program with explicit
    steps, which `policies.VectorizedSMC` runs), an async generator, or a plain `def` that returns an
    awaitable. Caught when the program first returns, before any value becomes a particle's."""


class NotVectorizable(SwarmError, TypeError):
    """A vectorised run (`policies.VectorizedSMC`) met what it cannot execute for all particles at
    once: an LLM generation, a message between agents, a distribution without a batched draw, a
    branch on a particle's value, a return value without one row per particle."""


class EnumerationError(SwarmError):
    """`Enumerate` met a site whose distribution has no finite support (an LLM generation, say)."""


class RejectionError(SwarmError):
    """`Rejection` met a potential outside {0, 1} (a soft factor), or ran out of attempts."""


class NoSurvivingParticles(SwarmError):
    """Every particle of the population has weight zero.

    `causes` maps each factor/guarantee address (or error type) that killed particles to how many
    it killed, so the message says what to relax; `examples` (`Diagnostics.death_examples`) gives
    the first "<Error>: <message>" of a cause that is the program's own exception, shown with it.
    """

    def __init__(self, causes: dict[str, int], *, policy: str = "", detail: str = "",
                 examples: dict[str, str] | None = None) -> None:
        self.causes = dict(causes)
        self.examples = dict(examples or {})

        def example(site: str) -> str:
            text = self.examples.get(site)
            return "" if not text else f" (first: {text if len(text) <= 300 else text[:297] + '...'})"

        parts = ", ".join(f"{site!r} killed {n}{example(site)}"
                          for site, n in sorted(causes.items(), key=lambda kv: -kv[1]))
        where = f"{policy}: " if policy else ""
        msg = f"{where}no surviving particles; {parts or 'no particle was weighted'}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class EmptyPosteriorError(SwarmError, ValueError):
    """A result without a particle of positive weight has no posterior to read an estimate from
    (`Result.expectation`, `Result.map`): a search that completed no trace, a population every
    particle of which died."""


class ParticleLost(SwarmError):
    """Raised inside a particle by infrastructure that failed for good (an LLM backend after its
    retries, a crashed or hung tool server): the particle is *lost*, not killed.

    A killed particle is evidence (the target gives it weight zero, and it counts in Ẑ). A lost
    particle is missing data: the coordinator drops it from normalisation and from Ẑ, counts it in
    `Result.diagnostics.lost`, and stops the run with `BackendUnavailable` when more than the
    policy's `max_lost_fraction` of a step's live particles are lost. Every other `SwarmError`
    raised inside a program aborts the run; any other exception kills only its particle.
    """

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.source = source
        """What failed: a backend identity, a tool server name (may be empty)."""


class BackendUnavailable(SwarmError):
    """Too many particles of one step were lost to infrastructure failures: the run stops rather
    than report a posterior and an evidence estimate built from the survivors of an outage."""

    def __init__(self, message: str, *, site: str = "", source: str = "", last_error: str = "") -> None:
        super().__init__(message)
        self.site = site
        self.source = source
        self.last_error = last_error


class BudgetExhausted(SwarmError):
    """Raised only where a policy cannot return a population at all within its budget."""


# -- redaction hook --------------------------------------------------------------------------------
_redactors: list = []


def add_redactor(redactor) -> None:
    """Register `redactor(text) -> text`, applied by `redact_text`. The layer that holds credentials
    (`agents.secrets`) registers itself here, so the core, which imports no other layer, still
    scrubs them from every exception message it records and writers scrub every line they write."""
    if redactor not in _redactors:
        _redactors.append(redactor)


def redact_text(text: str) -> str:
    """`text` with every registered secret masked (unchanged when no redactor is registered)."""
    for redactor in _redactors:
        text = redactor(text)
    return text


def shown(value: object, width: int = 60) -> str:
    """`value` as an error message quotes it: its repr, cut to `width` characters with "..."."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."

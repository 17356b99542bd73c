"""plp-swarm core: traces, the five primitives, distributions, handlers, the population.

    from swarm import sample, factor, guarantee, plate, interact, Categorical, Bernoulli
"""

from swarm.continuous import Normal
from swarm.distributions import Bernoulli, Categorical, Delta, Distribution, Draw, Uniform
from swarm.errors import (
    AsyncInPlainProgramError,
    BackendUnavailable,
    BlockingRunError,
    BudgetExhausted,
    DuplicateSiteError,
    EmptyPosteriorError,
    EnumerationError,
    InvalidDistributionError,
    InvalidPotentialError,
    NondeterminismError,
    NotVectorizable,
    NoSurvivingParticles,
    ParticleLost,
    PrimitiveUsageError,
    ProgramArgumentsError,
    ProgramKindError,
    RejectionError,
    SwarmError,
    UnawaitedSampleError,
)
from swarm.human import AwaitingHuman, CannotPauseError, InvalidAnswerError, Question, ask_human
from swarm.listeners import RunListener, add_listener, remove_listener
from swarm.primitives import auto_name, factor, guarantee, interact, plate, sample
from swarm.result import Particle, Result
from swarm.vector_draws import CategoricalRows
from swarm.trace import (
    ErrorEvent,
    FactorEvent,
    GuaranteeEvent,
    InteractEvent,
    SampleEvent,
    Trace,
)

__version__ = "0.1.0"

__all__ = [
    "sample", "factor", "guarantee", "plate", "interact", "auto_name",
    "Distribution", "Draw", "Categorical", "Bernoulli", "Delta", "Uniform", "CategoricalRows", "Normal",
    "Trace", "SampleEvent", "FactorEvent", "GuaranteeEvent", "InteractEvent", "ErrorEvent",
    "Particle", "Result", "RunListener", "add_listener", "remove_listener",
    "SwarmError", "AsyncInPlainProgramError", "UnawaitedSampleError", "ProgramArgumentsError", "ProgramKindError",
    "PrimitiveUsageError", "InvalidPotentialError", "InvalidDistributionError", "DuplicateSiteError",
    "NondeterminismError", "NotVectorizable", "EnumerationError", "RejectionError", "NoSurvivingParticles", "BudgetExhausted",
    "ParticleLost", "BackendUnavailable", "BlockingRunError", "EmptyPosteriorError",
    "ask_human", "Question", "AwaitingHuman", "InvalidAnswerError", "CannotPauseError",
]

"""Rejection sampling: exact samples from p when every potential is 0 or 1."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from policies.base import Policy, RunContext
from policies.independent import ConsumedDraws, particle_of, run_independent, unconsumed
from swarm.errors import RejectionError
from swarm.execution import Segment
from swarm.result import Result
from swarm.trace import Trace
from swarm.weights import first_soft_event


def _check_hard(trace: Trace) -> None:
    """Rejection is exact only for Φ ∈ {0, 1}: every target factor must be 0 or −∞ and no site may
    carry an importance correction."""
    soft = first_soft_event(trace.events)
    if soft is None:
        return
    if soft.type == "factor":
        raise RejectionError(f"Rejection needs potentials in {{0, 1}}, but factor {soft.address!r} has log-potential "
                             f"{soft.log_potential!r}; use Importance or SMC for soft factors")
    raise RejectionError(f"Rejection cannot use site {soft.address!r}: it was drawn from a proposal other "
                         "than its distribution (its weight is not 0 or 1)")


def _log_z_hat(k: int, n: int, *, stopped_at_k: bool) -> float:
    """log Ẑ from k acceptances in n draws (inverse binomial sampling when the run stopped at its
    k-th acceptance, docs/theory.md):

        Ẑ = (k − 1)/(n − 1)   stopped at the k-th acceptance, k ≥ 2  (unbiased; Haldane 1945),
        Ẑ = 1[n = 1]          stopped at the first acceptance (k = 1): the only unbiased estimator,
        Ẑ = k/n               stopped after n draws (max_attempts, a budget).

    With k = 1 it used 1/n, whose expectation E[1/n] = −Z log Z/(1 − Z) is 2.5 Z at Z = 0.1.
    """
    if stopped_at_k and k == 1:
        z_hat = 1.0 if n == 1 else 0.0
    elif stopped_at_k:
        z_hat = (k - 1) / (n - 1)
    else:
        z_hat = k / n
    return math.log(z_hat) if z_hat > 0 else -math.inf


class Rejection(Policy):
    """Draw from π until `num_particles` traces satisfy every constraint (at most `max_attempts` draws).

    Accepted traces are exact samples of p(τ) ∝ π(τ)·1[constraints]. The acceptance probability is
    Z, estimated without bias by (k−1)/(n−1) when stopped at the k-th acceptance after n draws
    (inverse binomial sampling, k ≥ 2; for num_particles=1 by 1[n = 1], the only unbiased
    estimator, so log Ẑ is 0 or −∞) and by k/n when `max_attempts` stopped it first.
    Draws run in batches of `batch_size` but are consumed in order, so the stopping rule is exactly
    the sequential one.
    """

    num_particles: int = Field(1000, gt=0)
    max_attempts: int = Field(1_000_000, gt=0)
    batch_size: int = Field(4096, gt=0)
    """The largest batch of draws run at once; batches start small and grow with the observed
    acceptance rate, so a run needing few samples makes few draws."""

    @model_validator(mode="after")
    def _attempts_cover_samples(self) -> "Rejection":
        if self.max_attempts < self.num_particles:
            raise ValueError(f"max_attempts ({self.max_attempts}) must be ≥ num_particles ({self.num_particles})")
        return self

    def _next_batch(self, accepted: int, attempts: int) -> int:
        """Enough draws to finish at the acceptance rate seen so far (+50%), within the limits."""
        missing = self.num_particles - accepted
        rate = (accepted + 1) / (attempts + 2)  # Laplace's rule: never 0
        wanted = max(missing, int(1.5 * missing / rate) + 1)
        return max(1, min(wanted, self.batch_size, self.max_attempts - attempts))

    @staticmethod
    def _accepts(seg: Segment) -> bool:
        """Whether a draw satisfies every constraint (a finished trace of weight 1; a soft one raises)."""
        if seg.status != "finished":
            return False
        _check_hard(seg.trace)
        return seg.log_weight() == 0.0

    async def _run(self, ctx: RunContext, args: tuple, kwargs: dict) -> Result:
        ctx.emit_start(self.num_particles)
        runner = ctx.runner(args, kwargs)
        accepted: list[tuple[int, Segment]] = []
        consumed = ConsumedDraws(ctx)
        attempts = streams = 0  # a lost draw is missing, not an attempt: it takes a stream only
        while len(accepted) < self.num_particles and attempts < self.max_attempts:
            size = self._next_batch(len(accepted), attempts)
            batch = await run_independent(ctx, runner, size, first_stream=streams)
            for stream, seg in enumerate(batch, start=streams):
                ok = self._accepts(seg)
                consumed.add(stream, seg, ok)
                if seg.status == "lost":
                    continue
                attempts += 1
                if ok:
                    accepted.append((stream, seg))
                    if len(accepted) == self.num_particles:
                        unconsumed(ctx, batch[stream - streams + 1:])
                        break
            streams += len(batch)
            if ctx.out_of_budget() or len(batch) < size:
                break
        k = len(accepted)
        if k == 0:
            consumed.report(ctx, -math.inf)
            raise ctx.no_survivors(f"0 of {attempts} draws accepted")
        log_z = _log_z_hat(k, attempts, stopped_at_k=k == self.num_particles)
        consumed.report(ctx, log_z)
        particles = [particle_of(ctx, stream, seg, 0.0) for stream, seg in accepted]
        return ctx.result(particles, log_z, extra={"attempts": attempts, "accepted": k, "acceptance_rate": k / attempts})

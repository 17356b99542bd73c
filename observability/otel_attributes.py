"""Span attributes of a run's records: the sanitiser every span goes through, the GenAI /
OpenInference attributes of LLM generations and tool calls, event times and tool-call pairing.

Pure functions of (immutable) records, so `observability.otel` can call them on its background
thread. The sanitiser hands the SDK only the types it accepts (str, bool, int, finite float and
homogeneous sequences of them), so the SDK's own validation never has to reject or coerce a value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping   # not typing.Mapping: its isinstance check is ~10x slower
from typing import Any

from swarm.errors import redact_text

KIND = "openinference.span.kind"
LOG_QUANTITIES = frozenset({"plp.log_weight", "plp.log_evidence", "plp.log_increment", "plp.log_potential"})
_isfinite = math.isfinite


def attributes(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Make `raw` exportable: drop None, turn non-finite floats into `plp.nonfinite`/`plp.dead`
    (see observability.otel), stringify other values that OTel attributes cannot carry, and mask
    registered secrets (API keys) in every string."""
    out: dict[str, Any] = {}
    nonfinite: list[str] | None = None
    for key, value in raw.items():
        cls = type(value)
        if cls is float:  # the common cases first, by exact type (subclasses take the slow path)
            if _isfinite(value):
                out[key] = value
                continue
        elif cls is str:
            out[key] = redact_text(value)
            continue
        elif cls is int or cls is bool:
            out[key] = value
            continue
        if value is None:
            continue
        if isinstance(value, float) and not _isfinite(value):
            nonfinite = nonfinite or []
            nonfinite.append(f"{key}={value}")
            if value == -math.inf and key in LOG_QUANTITIES:
                out["plp.dead"] = True
        elif isinstance(value, str):
            out[key] = redact_text(value)
        elif isinstance(value, (bool, int, float)):
            out[key] = value
        elif isinstance(value, (list, tuple)) and _homogeneous(value):
            out[key] = [redact_text(v) if isinstance(v, str) else v for v in value]
        else:
            out[key] = redact_text(text(value))
    if nonfinite:
        out["plp.nonfinite"] = nonfinite
    return out


def _homogeneous(values: Any) -> bool:
    """True when a sequence can be an OTel array attribute: one scalar type, finite floats."""
    types = {type(v) for v in values}
    return len(types) <= 1 and types <= {str, bool, int, float} and all(
        math.isfinite(v) for v in values if isinstance(v, float))


def text(value: Any) -> str:
    """Content as text: strings as they are, anything else as JSON (repr as a last resort)."""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return json.dumps(value, default=str)


def _get(obj: Any, *keys: str) -> Any:
    """The first of `keys` present in a mapping or as an attribute of an object."""
    for key in keys:
        value = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)
        if value is not None:
            return value
    return None


def llm_attributes(event: Any, capture_content: bool) -> dict[str, Any]:
    """OpenTelemetry GenAI and OpenInference attributes of one LLM generation (a SampleEvent)."""
    info, usage = event.info, event.info.get("usage") or {}
    n_in, n_out = _get(usage, "input_tokens", "prompt_tokens"), _get(usage, "output_tokens", "completion_tokens")
    reason = info.get("finish_reason")
    attrs: dict[str, Any] = {
        KIND: "LLM", "gen_ai.operation.name": "chat",
        "gen_ai.system": info.get("backend"), "gen_ai.provider.name": info.get("backend"),
        "gen_ai.request.model": info.get("model"), "gen_ai.response.model": info.get("model"),
        "gen_ai.usage.input_tokens": n_in, "gen_ai.usage.output_tokens": n_out,
        "gen_ai.request.temperature": info.get("temperature"),
        "gen_ai.request.max_tokens": info.get("max_tokens"), "gen_ai.request.top_p": info.get("top_p"),
        "gen_ai.response.finish_reasons": [reason] if reason else None,
        "llm.model_name": info.get("model"), "llm.system": info.get("backend"),
        "llm.token_count.prompt": n_in, "llm.token_count.completion": n_out,
        "llm.token_count.total": n_in + n_out if n_in is not None and n_out is not None else None,
        "plp.site": event.address, "plp.log_prob": event.log_prob,
        "plp.target_log_prob": event.target_log_prob, "plp.latency_s": info.get("latency_s"),
    }
    if capture_content:
        attrs.update(_prompt_attributes(info.get("prompt")))
        if info.get("completion") is not None:
            attrs["output.value"] = text(info["completion"])
            attrs["llm.output_messages.0.message.role"] = "assistant"
            attrs["llm.output_messages.0.message.content"] = text(info["completion"])
    return attrs


def _prompt_attributes(prompt: Any) -> dict[str, Any]:
    """`input.value`, plus OpenInference `llm.input_messages.*` when the prompt is a message list."""
    if prompt is None:
        return {}
    attrs: dict[str, Any] = {"input.value": text(prompt)}
    if isinstance(prompt, (list, tuple)):
        attrs["input.mime_type"] = "application/json"
        for i, message in enumerate(prompt):
            attrs[f"llm.input_messages.{i}.message.role"] = _get(message, "role")
            attrs[f"llm.input_messages.{i}.message.content"] = _get(message, "content")
    return attrs


def tool_attributes(call: Any, result: Any | None, capture_content: bool) -> dict[str, Any]:
    """OpenInference TOOL and GenAI execute_tool attributes of a tool_call (and its tool_result)."""
    first = call if call is not None else result
    name = call.receiver if call is not None else result.sender
    attrs: dict[str, Any] = {
        KIND: "TOOL", "gen_ai.operation.name": "execute_tool", "tool.name": name,
        "gen_ai.tool.name": name, "gen_ai.tool.call.id": first.info.get("tool_call_id"),
        "plp.site": first.address, "plp.tool.paired": call is not None and result is not None,
    }
    if capture_content:
        attrs["input.value"] = text(call.content) if call is not None else None
        attrs["output.value"] = text(result.content) if result is not None else None
    return attrs


def event_times(info: Mapping[str, Any], cursor: int) -> tuple[int, int]:
    """(start, end) in ns of an event from its `info`, or a zero-length interval at `cursor`."""
    start = info.get("started_at_ns")
    start = int(start) if start is not None else cursor
    if info.get("ended_at_ns") is not None:
        return start, int(info["ended_at_ns"])
    if info.get("latency_s") is not None:
        return start, start + int(float(info["latency_s"]) * 1e9)
    return start, start


def pair_tools(events: list[Any]) -> dict[int, Any]:
    """{index of a tool_call: its tool_result event}, matched by `tool_call_id`, else by order:
    the first unmatched result sent by the tool the call was addressed to."""
    pairs: dict[int, Any] = {}
    used: set[int] = set()
    for i, call in enumerate(events):
        if getattr(call, "kind", None) != "tool_call":
            continue
        cid = call.info.get("tool_call_id")
        for j in range(i + 1, len(events)):
            res = events[j]
            if j in used or getattr(res, "kind", None) != "tool_result":
                continue
            if (cid is not None and res.info.get("tool_call_id") == cid) or (
                    cid is None and res.sender == call.receiver):
                pairs[i] = res
                used.add(j)
                break
    return pairs


# -- OpenInference input / output of the spans a reader scans first --------------------------------
_TOP_ANSWERS = 5


def _finite(x: float | None) -> float | str | None:
    """A float for JSON: finite as is, non-finite as its string ("-inf"), None as None."""
    return x if x is None or math.isfinite(x) else str(x)


def run_input(record: Any, capture_content: bool) -> dict[str, Any]:
    """`input.value` (JSON) of a run span: what was run and how. The program's arguments are
    content (they may be prompts): only with `capture_content`, when the record carries them."""
    doc: dict[str, Any] = {"program": record.program}
    arguments = getattr(record, "arguments", None)   # not in RunStarted yet (requested of the core)
    if capture_content and arguments is not None:
        doc["arguments"] = arguments
    doc.update({"policy": record.policy, "num_particles": record.num_particles, "runtime": record.runtime})
    return {"input.value": json.dumps(doc, default=str), "input.mime_type": "application/json"}


def run_output(record: Any, deaths: Mapping[str, int], capture_content: bool) -> dict[str, Any]:
    """`output.value` (JSON) of a run span: log Ẑ, ESS, population size, deaths by cause, and with
    `capture_content` the answer marginal's top values with their probabilities."""
    doc: dict[str, Any] = {}
    if capture_content:   # first: the list view shows the beginning
        top = answer_marginal(record.values, record.log_weights) or \
            sorted(record.marginal.items(), key=lambda kv: -kv[1])
        if top:
            doc["answers"] = [[value, round(p, 6)] for value, p in top[:_TOP_ANSWERS]]
    doc.update({"log_evidence": _finite(record.log_evidence), "ess": _finite(record.ess),
                "num_particles": record.num_particles})
    if deaths:
        doc["deaths"] = dict(sorted(deaths.items(), key=lambda kv: -kv[1]))
    if record.error:
        doc["error"] = record.error
    return {"output.value": json.dumps(doc, default=str), "output.mime_type": "application/json"}


def answer_marginal(values: list[Any], log_weights: list[float]) -> list[tuple[Any, float]]:
    """Σᵢ w̄ᵢ 1(vᵢ = v) over the final population, most probable first ([] when there is no weight).
    Values keep their type (a string is not its repr); unhashable ones are grouped by their JSON."""
    if not values or len(values) != len(log_weights) or not any(w > -math.inf for w in log_weights):
        return []
    from swarm.population import normalized_weights

    mass: dict[Any, float] = {}
    shown: dict[Any, Any] = {}
    for value, w in zip(values, normalized_weights(log_weights).tolist()):
        if w > 0:
            key = value if isinstance(value, (str, int, float, bool, type(None))) else text(value)
            mass[key] = mass.get(key, 0.0) + w
            shown.setdefault(key, value)
    return sorted(((shown[k], m) for k, m in mass.items()), key=lambda kv: -kv[1])


def particle_output(status: str, site: str | None, killed_by: str | None, value: Any,
                    capture_content: bool) -> str:
    """`output.value` of a particle-step span: its value (content) when it finished, else where it
    stopped or what killed (or lost) it."""
    if status == "finished":
        return text(value) if capture_content else "finished"
    if status == "dead":
        return f"killed by {killed_by}" if killed_by else "dead"
    if status == "running":
        return f"at {site}" if site else "running"
    return f"{status} at {killed_by or site}" if (killed_by or site) else status


def step_output(ess: float, size: int, log_evidence: float, resampled: bool, died: int) -> str:
    """`output.value` of a step span, one line: ESS, log Ẑ so far, deaths, resampling."""
    parts = [f"ESS {ess:.4g}/{size}", f"log Z {log_evidence:.6g}"]
    if died:
        parts.append(f"{died} died")
    parts.append("resampled" if resampled else "not resampled")
    return " | ".join(parts)

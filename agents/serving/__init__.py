"""Serving a program under a policy as an OpenAI-compatible endpoint (`swarm serve`), the mirror of
`agents.backends.openai_compat`: the same protocol, spoken from the other side.

    service = ChatService(program, policies.SMC(num_particles=16), ServeConfig(model_name="mine"))
    app = build_app(service)                       # an ASGI app (Starlette); run it with uvicorn

See docs/serving.md for the protocol's extensions (program arguments, budgets, run metadata).
"""

from agents.serving.service import ChatService, PreparedRun, ServeConfig

__all__ = ["ChatService", "PreparedRun", "ServeConfig", "build_app"]


def __getattr__(name: str):
    if name == "build_app":  # Starlette and sse-starlette load only when an app is built
        from agents.serving.app import build_app

        return build_app
    raise AttributeError(name)

"""A faithful local stand-in for Mixpeek's Gen B API (7 Nov 2024), for tests and demos."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sync_service.emulator.app import create_app
    from sync_service.emulator.config import EmulatorConfig
    from sync_service.emulator.server import EmulatorServer, serve

__all__ = ["EmulatorConfig", "EmulatorServer", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # The app and server pull in FastAPI and uvicorn, the config pydantic: load them only when
    # asked for, so the CLI (which registers the emulator command) starts quickly.
    if name == "EmulatorConfig":
        from sync_service.emulator.config import EmulatorConfig

        return EmulatorConfig
    if name == "create_app":
        from sync_service.emulator.app import create_app

        return create_app
    if name in ("EmulatorServer", "serve"):
        from sync_service.emulator import server

        return getattr(server, name)
    raise AttributeError(name)

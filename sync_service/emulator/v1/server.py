"""The v1 emulator on a background thread (tests, demos), with helpers for its controls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from sync_service.emulator.server import ThreadedApp
from sync_service.emulator.v1.app import HEALTH, create_app
from sync_service.emulator.v1.config import V1Config
from sync_service.emulator.v1.controls import CONTROL_PREFIX
from sync_service.emulator.v1.store import V1State


class V1EmulatorServer(ThreadedApp):
    """``with V1EmulatorServer(V1Config(processing_time=0.2)) as emu: ...`` (port 0: free)."""

    health_path = HEALTH

    def __init__(
        self,
        config: V1Config | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        startup_timeout: float = 10.0,
    ) -> None:
        app = create_app(config, clock=clock)
        super().__init__(app, host=host, port=port, startup_timeout=startup_timeout)
        self.state: V1State = app.state.emulator

    def _started(self) -> None:
        self.state.stats.reset()

    def update_config(self, **changes: Any) -> dict[str, Any]:
        """Change knobs of the running server (``PATCH /_emulator/config``)."""
        return self.control("/config", changes, "PATCH")

    def call(
        self,
        path: str,
        body: dict[str, Any],
        *,
        api_key: str | None = None,
        namespace: str = "default",
    ) -> dict[str, Any]:
        """``POST`` ``body`` to the public v1 API as a client would (the demo's set-up)."""
        headers = {"X-Namespace": namespace}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        response = httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=60.0)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def control(
        self, path: str, body: dict[str, Any] | None = None, method: str = "POST"
    ) -> dict[str, Any]:
        # Over HTTP, so the state only ever changes on the server's event loop.
        url = f"{self.url}{CONTROL_PREFIX}{path}"
        response = httpx.request(method, url, json=body, timeout=60.0)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

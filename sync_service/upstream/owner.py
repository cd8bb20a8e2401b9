"""What every adapter does with the client it wraps: it owns it, and closing one closes both."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self


class _Closable(Protocol):
    async def aclose(self) -> None: ...


class ClientOwner:
    """Base of the adapters: ``async with`` and :meth:`aclose` close the wrapped client."""

    client: _Closable

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"

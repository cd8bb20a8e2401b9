"""What every adapter does with the client it wraps: it owns it, and closing one closes both;
and how either reads an embedding answer (both APIs answer ``{"embedding": …}``)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from sync_service.upstream.errors import MixpeekBadResponse, MixpeekNotFound, MixpeekUnsupported

if TYPE_CHECKING:
    from sync_service.upstream.port import Embedding


class _Closable(Protocol):
    async def aclose(self) -> None: ...


class ClosedOnExit:
    """``async with`` closes it: :meth:`aclose` runs on the way out."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        raise NotImplementedError


class ClientOwner(ClosedOnExit):
    """Base of the adapters: ``async with`` and :meth:`aclose` close the wrapped client."""

    client: _Closable

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"


async def read_embedding(
    answer: Awaitable[Mapping[str, Any]], *, api: str, route: str
) -> Embedding:
    """The vector an embedding call answers: dense floats, multi-dense (a list of equally long
    vectors, one per token) or sparse ``{"indices", "values"}``.
    A 404 means the API has no such route (:class:`MixpeekUnsupported`, naming ``api`` and
    ``route``); an answer without a vector is a bad response."""
    try:
        body = await answer
    except MixpeekNotFound:
        raise MixpeekUnsupported(
            f"this {api} has no embedding route ({route} answered 404), so it cannot turn a "
            "text into a vector"
        ) from None
    vector = body.get("embedding")
    if isinstance(vector, list) and vector and all(_is_number(x) for x in vector):
        return [float(x) for x in vector]
    if isinstance(vector, list) and vector and all(_is_vector(row) for row in vector):
        if len({len(row) for row in vector}) == 1:
            return [[float(x) for x in row] for row in vector]
        raise MixpeekBadResponse(
            "the embedding answer is a multi-dense vector of rows of different lengths",
            retryable=False,
        )
    if isinstance(vector, dict) and isinstance(vector.get("indices"), list):
        return {"indices": vector["indices"], "values": vector.get("values") or []}
    raise MixpeekBadResponse("the embedding answer holds no vector", retryable=False)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_vector(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_number(x) for x in value)

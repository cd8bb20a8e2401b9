"""What every request to Mixpeek carries, whichever client sends it. No HTTP library is
imported here: ``run``'s early version probe sends these before the client's modules load."""

from __future__ import annotations

from pydantic import SecretStr

from sync_service import __version__


def base_headers(api_key: str | SecretStr | None) -> tuple[dict[str, str], str]:
    """The headers every API version sends, and the key itself (for redaction)."""
    raw = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    # Stripped: a trailing newline from a secrets file makes h11 echo the header in errors.
    secret = (raw or "").strip()
    headers = {"Accept": "application/json", "User-Agent": f"sync-service/{__version__}"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return headers, secret


def v1_headers(
    api_key: str | SecretStr | None, namespace: str | None
) -> tuple[dict[str, str], str]:
    """The v1 client's: the base headers and the namespace, in ``X-Namespace`` (V1Client)."""
    headers, secret = base_headers(api_key)
    if namespace:
        headers["X-Namespace"] = namespace.strip()
    return headers, secret

"""``sync-service emulator``: the typer command (registered by the CLI module)."""

from __future__ import annotations

import json

import typer


def emulator(
    api: str = typer.Option(
        "2024", help="Which Mixpeek API to emulate: 2024 (Gen B, Nov 2024) or v1 (2025-2026)."
    ),
    knob: list[str] = typer.Option(
        [],
        "--set",
        help="Any knob as KEY=VALUE, the value read as JSON when it parses (repeatable), "
        "e.g. --set vector_placement=vectors --set 'vector_dimensions={\"x\": 8}'.",
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (keep it loopback)."),
    port: int = typer.Option(8800, min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    api_key: str | None = typer.Option(
        None, envvar="EMULATOR_API_KEY", help="Bearer token to require (default: any token)."
    ),
    latency: float = typer.Option(
        0.0, help="Seconds each API answer takes, its own work included."
    ),
    processing_time: float = typer.Option(3.0, help="Seconds from task creation to DONE."),
    fail_rate: float = typer.Option(0.0, help="Share of tasks that end FAILED (0-1)."),
    error_rate: float = typer.Option(0.0, help="Share of API requests answered 5xx (0-1)."),
    rate_limit: int | None = typer.Option(None, help="API requests per minute (default: none)."),
    rate_burst: int | None = typer.Option(
        None, help="Burst size of the rate limit (default: rate_limit // 60, at least 1)."
    ),
    vector_size: int = typer.Option(1408, help="Length of the multimodal-v1 vectors."),
    extra_vector: list[str] = typer.Option(
        [], help="Another named vector, NAME=LENGTH (repeatable), e.g. clip-v1=512."
    ),
    vector_kind: str = typer.Option(
        "meaningful", help="meaningful (vectors embed the feature's text) or random."
    ),
    seed: int = typer.Option(0, help="Seed for ids, failures, poison and fault choices."),
    interval_sec: int = typer.Option(10, help="Video segment length when a request has none."),
    poison_rate: float = typer.Option(0.0, help="Share of features with NaN/inf/short vectors."),
    stuck_rate: float = typer.Option(0.0, help="Share of tasks stuck in PROCESSING (0-1)."),
    vectors_param: str = typer.Option(
        "both", help="Flag that returns vectors: both, include_vectors or return_vectors."
    ),
    storm_rate: float = typer.Option(
        0.0, help="Share of API requests answered 429 whatever the rate limit (0-1)."
    ),
    retry_after: int | None = typer.Option(
        None, help="Seconds every 429 announces (default: the bucket's wait; 1 for a storm)."
    ),
    retry_after_header: str | None = typer.Option(
        None,
        help="When a 429 carries the Retry-After header: sometimes, always, never "
        "(default: sometimes for 2024, always for v1, whose docs promise it).",
    ),
    garbage_rate: float = typer.Option(
        0.0, help="Share of API requests answered 200 with an HTML proxy page (0-1)."
    ),
    truncate_rate: float = typer.Option(
        0.0, help="Share of API requests whose body stops short of its Content-Length (0-1)."
    ),
    reset_rate: float = typer.Option(
        0.0, help="Share of API requests whose connection is reset mid-body (0-1)."
    ),
    slow_drip_rate: float = typer.Option(
        0.0, help="Share of API requests whose body trickles in 16-byte chunks (0-1)."
    ),
    slow_drip_delay: float = typer.Option(0.5, help="Seconds between two slow-drip chunks."),
    hang_rate: float = typer.Option(
        0.0, help="Share of API requests held --hang-seconds before the answer (0-1)."
    ),
    hang_seconds: float = typer.Option(30.0, help="Seconds a hanging request is held."),
    ignore_filters: bool = typer.Option(
        False, "--ignore-filters", help="POST /assets ignores filters (sort still applies)."
    ),
    list_fail_page: int | None = typer.Option(
        None, help="POST /assets answers 500 for this page number, every time."
    ),
) -> None:
    """Serve the Mixpeek emulator (the 2024 API, or v1 with --api v1) until interrupted."""
    # Imported here: the CLI registers this command, and its --help need not load pydantic.
    from pydantic import ValidationError

    from sync_service.emulator.config import EmulatorConfig

    if api not in ("2024", "v1"):
        raise typer.BadParameter(f"--api {api!r}: expected 2024 or v1")
    model: type[EmulatorConfig] = EmulatorConfig
    if api == "v1":
        from sync_service.emulator.v1.config import V1Config

        model = V1Config
    try:
        config = model.model_validate(
            {
                "api_key": api_key,
                "latency": latency,
                "processing_time": processing_time,
                "fail_rate": fail_rate,
                "error_rate": error_rate,
                "rate_limit": rate_limit,
                "rate_burst": rate_burst,
                "vector_size": vector_size,
                "extra_vectors": _named_sizes(extra_vector),
                "vector_kind": vector_kind,
                "seed": seed,
                "interval_sec": interval_sec,
                "poison_rate": poison_rate,
                "stuck_rate": stuck_rate,
                "vectors_param": vectors_param,
                "storm_rate": storm_rate,
                "retry_after": retry_after,
                "garbage_rate": garbage_rate,
                "truncate_rate": truncate_rate,
                "reset_rate": reset_rate,
                "slow_drip_rate": slow_drip_rate,
                "slow_drip_delay": slow_drip_delay,
                "hang_rate": hang_rate,
                "hang_seconds": hang_seconds,
                "ignore_filters": ignore_filters,
                "list_fail_page": list_fail_page,
                # Each API has its own default (v1's docs say every 429 carries the header).
                **({"retry_after_header": retry_after_header} if retry_after_header else {}),
                **_knobs(knob),
            }
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in err['loc']).replace('_', '-')}: {err['msg']}"
            if err["loc"]
            else err["msg"]
            for err in exc.errors()
        )
        raise typer.BadParameter(problems) from None

    def announce(url: str) -> None:
        # The one stdout line a parent process waits for; everything else goes to stderr.
        print(f"Mixpeek emulator listening on {url}", flush=True)

    # Imported here: the server pulls in uvicorn and FastAPI, which other commands don't need.
    from sync_service.emulator.server import serve

    try:
        if api == "v1":
            from sync_service.emulator.server import serve_app
            from sync_service.emulator.v1.app import create_app

            assert isinstance(config, V1Config)
            serve_app(create_app(config), host, port, on_ready=announce)
            return
        serve(config, host, port, on_ready=announce)
    except OSError as exc:  # binding: an address not of this machine, a port in use
        shown = repr(host) if len(host) <= 80 else f"{host[:80]!r}…"  # may be 100 kB
        message = f"error: --host {shown} --port {port}: cannot listen ({exc.strerror})"
        typer.echo(message, err=True)
        raise typer.Exit(1) from None


def _knobs(specs: list[str]) -> dict[str, object]:
    knobs: dict[str, object] = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"--set {spec!r}: expected KEY=VALUE")
        try:
            knobs[name.strip()] = json.loads(raw)
        except ValueError:
            knobs[name.strip()] = raw  # a bare word, e.g. vector_placement=vectors
    return knobs


def _named_sizes(specs: list[str]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for spec in specs:
        name, _, size = spec.partition("=")
        if not name.strip() or not size.strip().isdigit():
            raise typer.BadParameter(f"--extra-vector {spec!r}: expected NAME=LENGTH")
        sizes[name.strip()] = int(size)
    return sizes

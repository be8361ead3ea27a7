"""``python -m mlshift.serving``: the model server's entry point (containers, local variants).

Exit codes: 0 after a clean shutdown, 2 for a bad argument, artifact or signature, 3 when the
artifact does not match its digest, 1 when the address cannot be bound or a library is
missing. Startup errors are one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from mlshift.errors import ConfigError, IntegrityError, MlshiftError
from mlshift.specs.model import Signature

if TYPE_CHECKING:
    from mlshift.serving._batching import Batching

_PROG = "python -m mlshift.serving"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Serve one model over HTTP (SageMaker, Vertex AI and Azure ML contracts).",
    )
    parser.add_argument("--artifact", required=True, type=Path, help="model file or directory")
    parser.add_argument(
        "--framework", help="sklearn, onnx, xgboost, lightgbm, mlflow or predictor (default: detected)"
    )
    parser.add_argument("--digest", help="sha256:<hex> the artifact must match")
    parser.add_argument(
        "--signature-json",
        help='the model signature as JSON ({"inputs": [{"name": ..., "dtype": ...}]}), '
        "or a JSON list of column names",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to bind; 0 picks a free one (default: $AIP_HTTP_PORT, else 8080)",
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port here once ready")
    parser.add_argument("--variant", help="variant name, echoed in X-Mlshift-Variant")
    parser.add_argument("--model-ref", help="name:version, echoed in X-Mlshift-Model")
    parser.add_argument(
        "--capture-dir",
        help="record sampled requests under this folder, as its capture.json says (docs/monitoring.md)",
    )
    parser.add_argument("--endpoint", help="the endpoint's name, written into captured records")
    parser.add_argument(
        "--skops-trust",
        default="",
        help="comma-separated type names a .skops file may hold beyond the trusted set",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes sharing the port (default 1)"
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="batch concurrent requests into model calls of up to this many rows "
        "(default: $MLSHIFT_MAX_BATCH_SIZE, else off)",
    )
    parser.add_argument(
        "--max-latency-ms",
        type=float,
        default=None,
        help="the longest a request waits for others to join its batch "
        "(default: $MLSHIFT_MAX_LATENCY_MS, else 5)",
    )
    return parser


def batching_options(max_batch_size: int | None, max_latency_ms: float | None) -> Batching | None:
    """The batching settings given on a command line; None leaves them to the environment.

    Raises:
        ConfigError: for a value out of range, or a latency without a batch size.
    """
    from mlshift.serving._batching import DEFAULT_MAX_LATENCY_MS, Batching

    if max_batch_size is None:
        if max_latency_ms is not None:
            raise ConfigError(
                "--max-latency-ms needs --max-batch-size",
                field="max_latency_ms",
                hint="add --max-batch-size N (N > 1) to turn batching on",
            )
        return None
    return Batching(
        max_batch_size=max_batch_size,
        max_latency_ms=DEFAULT_MAX_LATENCY_MS if max_latency_ms is None else max_latency_ms,
    )


def _signature(text: str | None) -> Signature | None:
    if text is None:
        return None
    try:
        stripped = text.lstrip()
        if stripped.startswith("["):
            return Signature.model_validate({"inputs": [{"name": n} for n in _json_list(text)]})
        return Signature.model_validate_json(text)
    except (ValidationError, ValueError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"--signature-json is not a valid signature: {first}") from None


def _json_list(text: str) -> list[str]:
    import json

    names = json.loads(text)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("expected a JSON list of column names")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.capture_dir:
        import os

        from mlshift.serving._capture import CAPTURE_DIR_ENV, ENDPOINT_ENV

        # Through the environment: every worker process builds its app from it.
        os.environ[CAPTURE_DIR_ENV] = args.capture_dir
        os.environ[ENDPOINT_ENV] = args.endpoint or ""
    try:
        from mlshift._artifacts import parse_skops_trust
        from mlshift.serving._server import DEFAULT_PORT, WorkerFailed, serve

        serve(
            args.artifact,
            framework=args.framework,
            host=args.host,
            port=DEFAULT_PORT if args.port is None else args.port,
            digest=args.digest,
            signature=_signature(args.signature_json),
            variant=args.variant,
            model_ref=args.model_ref,
            port_file=args.port_file,
            skops_trust=parse_skops_trust(args.skops_trust),
            workers=args.workers,
            batching=batching_options(args.max_batch_size, args.max_latency_ms),
        )
    except WorkerFailed as exc:
        return _fail(str(exc), "the lines above say why", 1)
    except IntegrityError as exc:
        return _fail(exc.message, exc.hint, 3)
    except MlshiftError as exc:
        return _fail(exc.message, exc.hint, 2)
    except ImportError as exc:
        return _fail(str(exc), None, 1)
    except OSError as exc:
        where = f"{args.host}:{args.port if args.port is not None else 'default port'}"
        return _fail(f"cannot listen on {where}: {exc.strerror or exc}", None, 1)
    return 0


def _fail(message: str, hint: str | None, code: int) -> int:
    line = f"{_PROG}: error: {message}" + (f" (hint: {hint})" if hint else "")
    print(line.replace("\n", " "), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

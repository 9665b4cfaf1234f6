"""Command line: `sensitive-topics serve` starts the API on the configured model."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from service.artifact import ModelArtifact, ModelDirError
from service.observability import configure_logging

log = logging.getLogger("service")


SERVE_FLAGS = {  # flag -> the setting it overrides (through its ST_ variable)
    "host": "address to listen on",
    "port": "port to listen on",
    "model_dir": "model directory to serve",
    "workers": "server processes, each with its own model",
    "log_level": "log level (debug, info, warning, error)",
}


def _problem(err: dict[str, object]) -> str:
    """A settings error naming its variable (`ST_PORT: Input should be a valid integer`)."""
    loc = [str(p) for p in err.get("loc", ()) or ()]  # type: ignore[attr-defined]
    where = f"ST_{loc[0].upper()}: " if loc else ""
    return where + str(err.get("msg", ""))


def serve(args: argparse.Namespace) -> int:
    """Check settings and the model directory, then run uvicorn; a broken one stops start-up."""
    import os

    import uvicorn

    from service.settings import SettingsError, get_settings

    for name in SERVE_FLAGS:  # a flag overrides its ST_ variable, in this process and workers
        value = getattr(args, name, None)
        if value is not None:
            os.environ[f"ST_{name.upper()}"] = str(value)
    configure_logging("info")
    try:
        settings = get_settings()
    except (ValidationError, SettingsError) as exc:
        errs = exc.errors() if isinstance(exc, ValidationError) else [{"msg": str(exc)}]
        problems = "; ".join(_problem(dict(e)) for e in errs)
        log.error("cannot start: invalid settings", extra={"fields": {"reason": problems}})
        return 2
    configure_logging(settings.log_level)
    from service.app import create_app, load_classifier
    from service.protocol import HeaderTimeoutProtocol

    # The model is loaded (and answers once) here, before any server starts, in every worker
    # mode: a truncated or garbage model.onnx stops the start-up with exit 2, like a bad
    # config.json. One worker serves this very model; several each load their own.
    try:
        classifier = load_classifier(settings)
    except ModelDirError as exc:
        log.error("cannot start: model directory", extra={"fields": {"reason": str(exc)}})
        return 2
    except Exception as exc:  # onnxruntime's errors for a broken graph have no common base
        log.error(
            "cannot start: model directory",
            extra={"fields": {"reason": f"cannot load the model ({type(exc).__name__})"}},
        )
        return 2

    # One process serves directly; several are started by uvicorn's supervisor, each building
    # the app (and loading the model) itself, and replaced if one dies.
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal to the handler
    # that was there before it: a no-op one lets the drained process exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    if settings.workers > 1:
        del classifier
    app: object = (
        create_app(settings, classifier)
        if settings.workers == 1
        else "service.app:create_served_app"
    )
    uvicorn.run(
        app,  # type: ignore[arg-type]
        factory=settings.workers > 1,
        workers=settings.workers,
        # a float is what uvicorn waits with (asyncio.wait_for); its hint says int
        timeout_graceful_shutdown=settings.shutdown_timeout_s,  # type: ignore[arg-type]
        loop=settings.event_loop,
        http=HeaderTimeoutProtocol,  # headers slower than ST_HEADER_TIMEOUT_S: 408, closed
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep our JSON logs
        access_log=False,  # the service writes its own access log, without bodies
    )
    return 0


def score(args: argparse.Namespace) -> int:
    """Score a dataset file or folder; rows read = rows written + rows in errors."""
    try:
        from service.batch import ProgressLine, score_dataset
    except ImportError as exc:  # the service's install goes without the batch extra
        if not (exc.name or "").startswith("pyarrow"):
            raise
        sys.stderr.write(
            "cannot score: the score command needs pyarrow: "
            "pip install 'sensitive-topics[batch]' (or make score)\n"
        )
        return 2
    from service.classifier import Classifier
    from service.settings import Settings

    model_dir = Path(args.model_dir) if args.model_dir else Settings(auth_required=False).model_dir

    progress = ProgressLine(sys.stderr)

    source, output = Path(args.input), Path(args.output)
    try:
        artifact = ModelArtifact.load(model_dir)
        if args.engine == "ray":  # each actor loads the model itself
            from service.ray_job import score_with_ray

            rows = score_with_ray(
                model_dir,
                source,
                output,
                args.text_column,
                args.messages_column,
                args.actors,
                args.chunk_rows,
                args.ray_address,
                args.cpus_per_actor,
            )
        else:
            totals = score_dataset(
                Classifier(artifact),
                source,
                output,
                args.text_column,
                args.messages_column,
                args.chunk_rows,
                args.resume,
                progress,
            )
    except (ModelDirError, ValueError, OSError) as exc:
        sys.stderr.write(f"\ncannot score: {exc}\n")
        return 2
    if args.engine == "ray":
        sys.stderr.write(
            f"rows written {rows:,} to {args.output}/ (Parquet; rows that could "
            "not be scored carry their reason in `error`)\n"
        )
        return 0
    sys.stderr.write(
        f"\nrows read {totals.read:,} = rows written {totals.written:,}"
        f" + rows in errors {totals.errors:,} ({args.output}.errors.jsonl)\n"
    )
    return 1 if totals.errors and not args.allow_errors else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sensitive-topics` console script."""
    from service import __version__
    from service.settings import Settings

    parser = argparse.ArgumentParser(prog="sensitive-topics")
    parser.add_argument("--version", action="version", version=f"sensitive-topics {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    variables = "\n".join(
        f"  ST_{name.upper():<24} {field.description or ''}"
        for name, field in Settings.model_fields.items()
    )
    sv = sub.add_parser(
        "serve",
        help="serve the REST API",
        description="Serve the REST API. Every setting is an ST_ environment variable; the "
        "flags below override theirs.",
        epilog="environment variables:\n" + variables,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, what in SERVE_FLAGS.items():
        sv.add_argument(
            f"--{name.replace('_', '-')}", dest=name, help=f"{what} (ST_{name.upper()})"
        )
    sv.set_defaults(func=serve)
    sc = sub.add_parser("score", help="score a dataset (JSONL, JSON, CSV, Parquet, folder)")
    sc.add_argument("input", help="a file, a folder of files, or a saved `datasets` dataset")
    sc.add_argument("--output", required=True, help="output file; its extension sets the format")
    col = sc.add_mutually_exclusive_group(required=True)
    col.add_argument("--text-column", help="column with one text per row")
    col.add_argument("--messages-column", help="column with a transcript [{role, content}]")
    sc.add_argument("--model-dir", help="model directory (default: ST_MODEL_DIR or shipped)")
    sc.add_argument("--chunk-rows", type=int, default=2048, help="rows per chunk")
    sc.add_argument("--resume", action="store_true", help="continue an interrupted run")
    sc.add_argument("--allow-errors", action="store_true", help="exit 0 despite error rows")
    sc.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this machine; ray: Ray Data over an actor pool",
    )
    sc.add_argument("--actors", type=int, default=2, help="ray: actors, one model each")
    sc.add_argument(
        "--cpus-per-actor",
        type=float,
        default=1.0,
        help="ray: CPUs reserved per actor (below 1 on a small machine, so that reading and "
        "writing tasks still get a CPU)",
    )
    sc.add_argument("--ray-address", help="ray: cluster address (default: local or RAY_ADDRESS)")
    sc.set_defaults(func=score)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

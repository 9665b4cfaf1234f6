"""Command line: `sensitive-topics serve` starts the API on the configured model."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from service.artifact import ModelArtifact, ModelDirError
from service.observability import configure_logging

log = logging.getLogger("service")


def serve(_: argparse.Namespace) -> int:
    """Check settings and the model directory, then run uvicorn; a broken one stops start-up."""
    import uvicorn

    from service.settings import get_settings

    configure_logging("info")
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(str(e.get("msg", "")) for e in exc.errors())
        log.error("cannot start: invalid settings", extra={"fields": {"reason": problems}})
        return 2
    configure_logging(settings.log_level)
    try:
        ModelArtifact.load(settings.model_dir)
    except ModelDirError as exc:
        log.error("cannot start: model directory", extra={"fields": {"reason": str(exc)}})
        return 2
    from service.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep our JSON logs
        access_log=False,  # the service writes its own access log, without bodies
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sensitive-topics` console script."""
    parser = argparse.ArgumentParser(prog="sensitive-topics")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the REST API").set_defaults(func=serve)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

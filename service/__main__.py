"""Command line: `sensitive-topics serve` starts the API on the configured model."""

from __future__ import annotations

import argparse
import logging
import sys

from service.artifact import ModelArtifact, ModelDirError
from service.settings import get_settings


def serve(_: argparse.Namespace) -> int:
    """Check the model directory, then run uvicorn; a broken model stops start-up."""
    import uvicorn

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    try:
        ModelArtifact.load(settings.model_dir)
    except ModelDirError as exc:
        logging.getLogger("service").error("cannot start: %s", exc)
        return 2
    from service.app import create_app

    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level
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

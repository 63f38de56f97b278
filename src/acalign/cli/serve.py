"""``acalign serve``: start the web page to explore alignments and search an index."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from pathlib import Path

from acalign.errors import AcalignError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="web page: ground phrases in clips, search an index, compare with ground truth",
        description="Serve a web page (and a JSON API, documented at /docs) to ground typed "
        "phrases in an indexed, corpus or uploaded clip, play it with a cursor over the "
        "spectrogram and activations, and search an index by text. Listens on localhost "
        "unless --host says otherwise.",
    )
    parser.add_argument("model", type=Path, help="exported model directory")
    parser.add_argument("--index", type=Path, help="index directory built by `acalign index`")
    parser.add_argument(
        "--data", type=Path, help="corpus directory ({split}.json, audio/{split}/) for captions and ground truth"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest upload accepted, in MB (default: %(default)s)"
    )
    parser.add_argument("--keep-uploads", type=Path, metavar="DIR", help="keep a copy of every upload in DIR")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Reject impossible settings with one-line messages before anything is loaded."""
    if not 0 <= args.port <= 65535:
        raise AcalignError(f"--port must be in [0, 65535], got {args.port}")
    if args.max_upload_mb <= 0:
        raise AcalignError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if not args.model.is_dir():
        raise AcalignError(f"{args.model}: model directory not found")
    if args.index is not None and not args.index.is_dir():
        raise AcalignError(f"{args.index}: index directory not found")
    if args.data is not None and not args.data.is_dir():
        raise AcalignError(f"{args.data}: data directory not found")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Load the model (and index), build the app and serve it until interrupted."""
    check_args(args)
    import uvicorn

    from acalign.serve import ServeSettings, backend, create_app

    settings = ServeSettings(
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
        keep_uploads=args.keep_uploads,
        model_name=args.model.resolve().name,
    )
    model = backend.load_model(args.model)
    index = backend.load_index(args.index, model) if args.index is not None else None
    app = create_app(model, index, data_dir=args.data, settings=settings)
    if not _is_loopback(args.host):
        log.warning("listening on %s: anyone who can reach this address can use the page and upload files", args.host)
    log.info("serving on http://%s:%d/ (API docs at /docs); Ctrl-C stops", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0

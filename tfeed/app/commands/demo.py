"""``tfeed demo``: serve generated images on 127.0.0.1, feed them to Keras, train (see :mod:`tfeed.app.demo`)."""

from __future__ import annotations

import argparse

from tfeed.app.commands.common import EXIT_OK, non_negative_float, positive_int

NAME = "demo"
HELP = "serve generated images locally, measure the feed, train a small CNN (no network needed)"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    parser.add_argument("--images", type=positive_int, default=2000, help="generated images (default 2000)")
    parser.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default 10)")
    parser.add_argument("--latency", type=non_negative_float, default=0.05,
                        help="seconds of server latency per request (default 0.05)")
    return parser


def run(args: argparse.Namespace) -> int:
    from tfeed.app import demo

    demo.run(num_images=args.images, epochs=args.epochs, latency=args.latency)
    return EXIT_OK

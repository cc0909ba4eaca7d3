"""``tfeed show URLS -o grid.png``: a labelled grid of the first batch (the seed's viewer).

With ``--augment PRESET`` each image appears beside its augmented version
(the preset runs in the pipeline exactly as in training).  The PNG path is
printed on stdout (``-o -`` writes the PNG itself there); failed URLs are
listed on stderr and, with ``--failures PNG``, drawn as a gallery.
"""

from __future__ import annotations

import argparse
import io
import random
import sys

from tfeed.app.commands import common
from tfeed.app.commands.common import EXIT_FAILURES, EXIT_OK, log

NAME = "show"
HELP = "draw a labelled grid of one batch (optionally beside its augmented version) into a PNG"
EPILOG = """\
examples:
  tfeed show urls.csv -o grid.png                   16 images titled with their class names
  tfeed show urls.txt -n 8 --augment imagenet_train -o aug.png
  head -100 urls.txt | tfeed show - --shuffle -o - > grid.png

exit status: 0 the grid was drawn and no URL failed, 1 some URLs failed (or none could be drawn), 2 usage error
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP[0].upper() + HELP[1:] + ".", epilog=EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_source_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="PNG",
                        help="image file to write (format from its extension), or - for PNG on stdout")
    parser.add_argument("-n", "--images", type=common.positive_int, default=16, metavar="N",
                        help="images in the grid (default 16)")
    parser.add_argument("--size", type=common.positive_int, default=160,
                        help="resize to SIZE x SIZE before drawing (default 160)")
    parser.add_argument("--shuffle", action="store_true", help="a random batch instead of the first URLs")
    parser.add_argument("--seed", type=int, default=None, help="seed of --shuffle and of the augmentation")
    parser.add_argument("--augment", metavar="PRESET",
                        help="also draw each image through this tfeed.augment preset (e.g. imagenet_train)")
    parser.add_argument("--failures", metavar="PNG", help="also draw the failed URLs with their reasons")
    parser.add_argument("--title", help="title above the grid")
    parser.add_argument("--dpi", type=common.positive_int, default=100, help="(default 100)")
    common.add_fetch_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from tfeed.app import viz
    from tfeed.api import image_dataset_from_urls

    common.check_output(args.output)
    common.check_output(args.failures)
    source = common.read_source(args)
    augment = common.augment_preset(args.augment, args.size) if args.augment else None
    labelled = common.has_labels(source)
    seed = args.seed if args.seed is not None else random.randrange(2**31)  # one order for both grids
    config = common.fetch_config(args, max_in_flight=args.max_in_flight or min(256, 4 * args.images))
    options = dict(labels="inferred" if labelled else None, label_mode="int" if labelled else None,
                   image_size=(args.size, args.size), batch_size=args.images, shuffle=args.shuffle, seed=seed,
                   deterministic=True, fetch_config=config, url_column=args.url_column,
                   label_column=args.label_column)
    dataset = image_dataset_from_urls(source, **options)
    images, labels = _first_batch(dataset, labelled)
    figure = None
    if images is not None and augment is not None:
        augmented, _ = _first_batch(image_dataset_from_urls(source, augment=augment, **options), labelled)
        if augmented is not None:
            count = min(len(images), len(augmented))
            figure = viz.compare_grid(images[:count], augmented[:count], None if labels is None else labels[:count],
                                      dataset.class_names, n=count, ncols=min(4, count))
    if images is not None and figure is None:
        figure = viz.show_batch((images, labels), dataset.class_names, n=args.images, title=args.title)
    if figure is not None:
        if args.title and augment is not None:
            figure.suptitle(args.title)
        _write(figure, args.output, args.dpi)
        log.info("drew %d images%s", len(images), f" beside their {args.augment} augmentation" if augment else "")
    else:
        log.error("no image could be downloaded and decoded")
    failed = common.report_failures(dataset.stats)
    if args.failures:
        viz.save_figure(viz.failure_gallery(dataset.stats), args.failures, dpi=args.dpi)
        log.info("wrote %s", args.failures)
    return EXIT_FAILURES if failed or figure is None else EXIT_OK


def _first_batch(dataset, labelled: bool):
    """``(images, labels or None)`` of the dataset's first batch, or ``(None, None)``."""
    for element in dataset.take(1):
        if labelled:
            return element[0].numpy(), element[1].numpy()
        return element.numpy(), None
    return None, None


def _write(figure, output: str, dpi: int) -> None:
    if output == "-":
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        sys.stdout.buffer.write(buffer.getvalue())
        sys.stdout.buffer.flush()
        return
    figure.savefig(output, dpi=dpi)
    print(output, flush=True)

"""Decoding today's web: full-decode and scaled-decode ceilings next to tfeed from URLs, in one run.

    python benchmarks/bench_decode.py [--images 320] [--imagenet-images 800] [--size 224] [--passes 2]
                                      [--rounds 3] [--corpora modern,imagenet] [--baseline-tree DIR]

Two corpora, generated once into ``benchmarks/results/`` (git-ignored):

* modern-web (:func:`tfeed.testing.web_images.modern_web_corpus`): of every
  10 images, 6 JPEGs of 1-12 MP (half with an EXIF orientation of 2-8), 2
  WebPs and 1 AVIF of 0.5-2 MP, 1 PNG with alpha;
* ImageNet-sized (:func:`tfeed.testing.web_like_corpus`): 300-500 px, 70%
  JPEG / 15% PNG / 15% WebP.

Rows, each in a fresh process (a process that ran other pipelines was seen
running a ceiling at 2/3 speed), batches of 32 float32 ``size x size``:

* ``full``: the bytes in memory, ``tf.io.decode_image`` + bilinear resize
  (AVIF, which tf.io cannot read, through OpenCV in a ``numpy_function``);
* ``scaled``: the same bytes, JPEGs decoded at the DCT scale chosen for each
  image beforehand (outside the clock: the largest 1/2, 1/4, 1/8 that still
  covers the size), then the same resize;
* ``tfeed``: ``image_dataset_from_urls`` over a loopback server (nginx when
  available), defaults: orientation, alpha, header checks, transcoding
  included;
* ``tfeed-baseline`` (``--baseline-tree``): the same from another source tree
  (e.g. ``git archive`` of the previous commit), for "no slower than today".

It also prints the quality of the scaled decode (mean PSNR against a full
decode + antialiased resize, next to today's full decode + bilinear resize)
and the header-and-orientation overhead on JPEGs without EXIF (tfeed's decode
function vs the scaled ceiling's, same bytes, one thread).
Writes ``benchmarks/results/decode.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
RATIOS = (1, 2, 4, 8)


def corpus_dir(kind: str, images: int) -> str:
    """The corpus ``kind`` written once under results/ (returns its directory)."""
    root = os.path.join(RESULTS, f"corpus-{kind}-{images}")
    if os.path.isdir(root) and len(os.listdir(root)) == images:
        return root
    from tfeed.testing import web_like_corpus, write_images
    from tfeed.testing.web_images import modern_web_corpus

    files = modern_web_corpus(images) if kind == "modern" else web_like_corpus(images)
    write_images(files, root)
    return root


def read_corpus(root: str) -> list:
    return [open(os.path.join(root, name), "rb").read() for name in sorted(os.listdir(root))]


def ratio_index(body: bytes, size: int) -> int:
    """The scaled ceiling's choice, made outside the clock: index into RATIOS."""
    if not body.startswith(b"\xff\xd8"):
        return 0
    from PIL import Image

    width, height = Image.open(io.BytesIO(body)).size
    fits = [-(-height // r) >= size and -(-width // r) >= size for r in RATIOS]
    return max(sum(fits) - 1, 0)


def opencv_rgb(body):
    import cv2

    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def ceiling(bodies, size: int, scaled: bool):
    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert
    def decode(body, index):
        def tf_formats():
            if not scaled:
                return tf.io.decode_image(body, channels=3, expand_animations=False)
            return tf.cond(tf.io.is_jpeg(body), lambda: tf.switch_case(index, [
                (lambda r=r: tf.io.decode_jpeg(body, channels=3, ratio=r)) for r in RATIOS]),
                lambda: tf.io.decode_image(body, channels=3, expand_animations=False))

        def avif():
            return tf.numpy_function(opencv_rgb, [body], tf.uint8)

        is_avif = tf.equal(tf.strings.substr(body, 4, 8), b"ftypavif")
        image = tf.cond(is_avif, avif, tf_formats)
        image.set_shape([None, None, 3])
        return tf.image.resize(image, (size, size))

    indices = [ratio_index(b, size) for b in bodies]
    return (tf.data.Dataset.from_tensor_slices((bodies, indices))
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .batch(32).prefetch(tf.data.AUTOTUNE))


def tfeed_from_urls(root: str, size: int):
    import tfeed
    from tfeed.testing import ImageServer, NginxServer

    try:
        server = NginxServer(root)
        server.__enter__()
    except Exception:  # noqa: BLE001 - no nginx here: tfeed's own server in its process
        server = ImageServer({n: open(os.path.join(root, n), "rb").read() for n in os.listdir(root)}, process=True)
        server.__enter__()
    urls = [server.url(name) for name in sorted(os.listdir(root))]
    dataset = tfeed.image_dataset_from_urls(urls, labels=None, image_size=(size, size), batch_size=32)
    return dataset, server


def images_per_s(dataset, passes: int, images: int) -> tuple:
    """``(images/s, CPU ms per image)`` over ``passes`` epochs of ``images``.

    One iterator over ``dataset.repeat()``: its creation (op loading, thread
    pools, the server's first connections) and a whole warm-up epoch run
    before the clock starts, alike for every row.  CPU is this process's (all
    threads; a server in its own process is not counted), which a shared
    machine's load disturbs less than time."""
    per_epoch = -(-images // 32)
    batches = iter(dataset.repeat())
    for _ in range(per_epoch):  # warm-up epoch (fills caches, reaches steady state)
        next(batches)
    count, start, cpu = 0, time.perf_counter(), sum(os.times()[:2])
    for _ in range(per_epoch * passes):
        count += int(next(batches).shape[0])
    return count / (time.perf_counter() - start), (sum(os.times()[:2]) - cpu) / count * 1000


def run_row(row: str, root: str, size: int, passes: int) -> tuple:
    if row in ("full", "scaled"):
        return images_per_s(ceiling(read_corpus(root), size, row == "scaled"), passes, len(os.listdir(root)))
    dataset, server = tfeed_from_urls(root, size)
    try:
        return images_per_s(dataset, passes, len(os.listdir(root)))
    finally:
        server.__exit__(None, None, None)


def row_in_fresh_process(row: str, root: str, size: int, passes: int, tree: str = None) -> tuple:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if tree:
        env["PYTHONPATH"] = tree
    command = [sys.executable, os.path.abspath(__file__), "--row", row, "--root", root, "--size", str(size),
               "--passes", str(passes)]
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    rate, cpu_ms = out.strip().splitlines()[-1].split()
    return float(rate), float(cpu_ms)


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def quality(bodies, size: int) -> dict:
    """Mean PSNR (dB) against full decode + antialiased resize, over the JPEGs."""
    import tensorflow as tf

    full_bilinear, scaled_bilinear = [], []
    for body in (b for b in bodies if b.startswith(b"\xff\xd8")):
        full = tf.io.decode_jpeg(body, channels=3)
        reference = tf.image.resize(full, (size, size), antialias=True)
        full_bilinear.append(psnr(tf.image.resize(full, (size, size)), reference))
        scaled = tf.io.decode_jpeg(body, channels=3, ratio=RATIOS[ratio_index(body, size)])
        scaled_bilinear.append(psnr(tf.image.resize(scaled, (size, size)), reference))
    return {"full_bilinear_db": float(np.mean(full_bilinear)), "scaled_bilinear_db": float(np.mean(scaled_bilinear))}


def header_overhead(bodies, size: int, repeats: int = 3) -> dict:
    """ms per JPEG without EXIF, one thread: tfeed's decode function (header
    op, orientation, ratio from the header) vs the scaled ceiling's decode."""
    import tensorflow as tf

    import tfeed

    jpegs = [b for b in bodies if b.startswith(b"\xff\xd8") and b"Exif" not in b[:64]]
    indices = [ratio_index(b, size) for b in jpegs]
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1

    def timed(fn) -> float:
        dataset = tf.data.Dataset.from_tensor_slices((jpegs, indices)).map(fn).with_options(options)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in dataset:
                pass
            best = min(best, (time.perf_counter() - start) / len(jpegs) * 1000)
        return best

    @tf.autograph.experimental.do_not_convert
    def bare(body, index):
        image = tf.switch_case(index, [(lambda r=r: tf.io.decode_jpeg(body, channels=3, ratio=r)) for r in RATIOS])
        return tf.image.resize(image, (size, size))

    @tf.autograph.experimental.do_not_convert
    def with_header(body, index):
        return tfeed.decode_resized(body, (size, size), jpeg_only=True)

    timed(bare)  # warm up
    bare_ms, tfeed_ms = timed(bare), timed(with_header)
    return {"jpegs": len(jpegs), "bare_ms": bare_ms, "tfeed_ms": tfeed_ms, "overhead": tfeed_ms / bare_ms - 1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320, help="modern-web images (1-12 MP)")
    parser.add_argument("--imagenet-images", type=int, default=800,
                        help="ImageNet-sized images (enough that an epoch's start-up is a small part)")
    parser.add_argument("--corpora", default="modern,imagenet")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each row's best is reported")
    parser.add_argument("--baseline-tree", help="a source tree to run the tfeed row from as well")
    parser.add_argument("--row"), parser.add_argument("--root")
    args = parser.parse_args()
    if args.row:
        print(*run_row(args.row, args.root, args.size, args.passes))
        return 0
    report = {}
    for kind in args.corpora.split(","):
        root = corpus_dir(kind, args.images if kind == "modern" else args.imagenet_images)
        names = ["full", "scaled", "tfeed"] + (["tfeed-baseline"] if args.baseline_tree else [])
        measured = {name: [] for name in names}
        for _ in range(args.rounds):  # rows alternate, so a change in the machine's load hits all of them
            for name in names:
                tree = args.baseline_tree if name == "tfeed-baseline" else None
                measured[name].append(row_in_fresh_process(name.split("-")[0], root, args.size, args.passes, tree))
        rows = {f"{name} images/s": max(rate for rate, _ in runs) for name, runs in measured.items()}
        rows.update({f"{name} cpu ms/image": min(cpu for _, cpu in runs) for name, runs in measured.items()})
        for ceiling_name in ("full", "scaled"):
            rows[f"tfeed/{ceiling_name}"] = rows["tfeed images/s"] / rows[f"{ceiling_name} images/s"]
        load = open("/proc/loadavg").read().split()[:3]
        report[kind] = dict(rows, runs=measured, loadavg=load)
        print(kind, f"rounds={args.rounds} passes={args.passes} loadavg={'/'.join(load)}",
              " ".join(f"{name}={value:.2f}" for name, value in rows.items()), flush=True)
    bodies = read_corpus(corpus_dir("modern", args.images))
    report["args"] = vars(args)
    report["quality"] = quality(bodies, args.size)
    report["header_overhead"] = header_overhead(bodies, args.size)
    print("quality", report["quality"], "\nheader_overhead", report["header_overhead"])
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "decode.json"), "w") as out:
        json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

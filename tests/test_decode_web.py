"""The web's awkward images through the whole pipeline, served over loopback.

EXIF orientations 1-8 upright on both fetch engines, from the cache and in a
recipe's fused JPEG crop, and AVIFs turned by their own boxes; AVIF, animated WebP, ICO and TIFF delivered; HEIC
counted unsupported_format; transparency composited; pixel bombs counted
too_large with the process's peak memory bounded.
"""

from __future__ import annotations

import resource

import numpy as np
import pytest
import tensorflow as tf

import tfeed
from tfeed import augment
from tfeed.augment import randomness
from tfeed.testing import ImageServer, encode
from tfeed.testing import web_images as web

pytest.importorskip("PIL.Image")

HEIGHT, WIDTH = 48, 80  # upright, landscape: a transposed decode has the wrong shape or content
SIZE = (24, 40)
ENGINES = ("python", "native")


def upright_picture() -> np.ndarray:
    """A landscape picture whose every turn or mirror looks different: four coloured quadrants and a gradient."""
    ramp = np.linspace(0, 255, WIDTH, dtype=np.float32)[None, :].repeat(HEIGHT, 0)
    image = np.dstack([ramp, ramp[::-1] * 0.5, np.full((HEIGHT, WIDTH), 40.0)]).astype(np.uint8)
    image[:HEIGHT // 2, :WIDTH // 4] = (250, 20, 20)
    image[HEIGHT // 2:, -WIDTH // 4:] = (20, 20, 250)
    return image


PICTURE = upright_picture()
EXPECTED = tf.image.resize(PICTURE, SIZE).numpy()


def alpha_picture() -> np.ndarray:
    """RGBA: red everywhere, fully transparent on the left half."""
    rgba = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255
    rgba[:, :WIDTH // 2, 3] = 0
    return rgba


@pytest.fixture(scope="module")
def bodies():
    # 4:4:4 and quality 100: a small random crop magnifies chroma subsampling, and the crop (drawn
    # from a key of the URL, hence of the server's port) otherwise decided whether the bound held
    files = {f"o{o}.jpg": web.exif_jpeg(PICTURE, o, quality=100, subsampling=0) for o in web.ORIENTATIONS}
    files.update({
        "photo.avif": web.avif(PICTURE, quality=90), "anim.webp": web.animated_webp([PICTURE, PICTURE[::-1]]),
        "favicon.ico": web.ico(PICTURE, sizes=[(WIDTH, HEIGHT)]), "photo.tiff": encode(PICTURE, "tiff"),
        "photo.heic": web.heic_like(), "page.html": b"<html><body>no image</body></html>",
        "alpha.png": web.with_alpha(alpha_picture(), "png"), "alpha.webp": web.with_alpha(alpha_picture(), "webp"),
        "alpha.avif": web.with_alpha(alpha_picture(), "avif"),
        "bomb.gif": web.gif_bomb(), "bomb.jpg": web.jpeg_bomb(),
    })
    return files


@pytest.fixture(scope="module")
def server(bodies):
    with ImageServer(bodies) as srv:
        yield srv


def run(server, names, engine, **kwargs):
    """``{name: image}`` delivered and the failure counts, labels being the names' indices."""
    rows = [(server.url(name), i) for i, name in enumerate(names)]
    kwargs.setdefault("image_size", SIZE)
    ds = tfeed.image_dataset_from_urls(rows, batch_size=None, shuffle=False, fetch_engine=engine, **kwargs)
    images = {names[int(label)]: image.numpy() for image, label in ds}
    return images, ds.stats.snapshot()["failures"]


def assert_upright(image, tolerance=6.0):
    """Close to the upright picture, and farther from each of its wrong turns."""
    error = np.abs(image - EXPECTED).mean()
    assert error < tolerance, error
    for wrong in (EXPECTED[::-1], EXPECTED[:, ::-1], EXPECTED[::-1, ::-1]):
        assert np.abs(image - wrong).mean() > 4 * error + 10


@pytest.mark.parametrize("engine", ENGINES)
def test_every_orientation_is_upright_on_both_engines_and_from_the_cache(server, engine, tmp_path):
    names = [f"o{o}.jpg" for o in web.ORIENTATIONS]
    for epoch in range(2):  # the second epoch reads the cache
        images, failures = run(server, names, engine, cache_dir=str(tmp_path / "cache"))
        assert failures == {} and sorted(images) == sorted(names), (epoch, failures)
        for name in names:
            assert_upright(images[name])


def test_orientation_can_be_turned_off(server):
    images, _ = run(server, ["o3.jpg", "o6.jpg"], "native", apply_exif_orientation=False)
    assert np.abs(images["o3.jpg"] - EXPECTED[::-1, ::-1]).mean() < 6  # as stored: rotated 180
    assert np.abs(images["o6.jpg"] - EXPECTED).mean() > 20  # stored portrait, stretched: not the picture


def test_fused_crop_is_drawn_in_the_upright_frame(server, bodies):
    """imagenet_train's JPEG crop of an EXIF-turned photo equals the same
    recipe on the upright picture as a PNG (decoded fully, then cropped)."""
    recipe = augment.imagenet_train(32)
    names = [f"o{o}.jpg" for o in web.ORIENTATIONS]
    images, failures = run(server, names, "native", augment=recipe, seed=5, image_size=None)
    assert failures == {}
    png = tf.constant(encode(PICTURE, "png"))
    for name in names:
        key = randomness.element_key(5, 0, tf.constant(server.url(name)))
        expected, _ = recipe.after_decode(recipe.decode(png, key), 0, key)
        assert np.abs(images[name] - expected.numpy()).mean() < 6, name


@pytest.mark.parametrize("engine", ENGINES)
def test_rare_formats_reach_a_decoder(server, engine):
    names = ["photo.avif", "anim.webp", "favicon.ico", "photo.tiff", "photo.heic", "page.html"]
    images, failures = run(server, names, engine)
    assert failures == {"unsupported_format": 1, "not_image": 1}
    assert sorted(images) == ["anim.webp", "favicon.ico", "photo.avif", "photo.tiff"]
    for name in ("anim.webp", "photo.tiff"):  # lossless: the first frame
        np.testing.assert_allclose(images[name], EXPECTED, atol=2)
    assert_upright(images["photo.avif"], tolerance=8)
    assert_upright(images["favicon.ico"], tolerance=8)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_avif_turned_by_its_irot_and_imir_boxes_comes_out_upright(engine):
    """AVIF carries its orientation in irot/imir boxes, not EXIF (OpenCV's decoder ignores them)."""
    files = {f"o{o}.avif": web.avif(PICTURE, quality=95, orientation=o) for o in web.ORIENTATIONS}
    with ImageServer(files) as avif_server:
        images, failures = run(avif_server, sorted(files), engine)
    assert failures == {} and sorted(images) == sorted(files)
    for name in files:
        assert_upright(images[name], tolerance=8)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_avif_no_decoder_reads_is_one_decode_error(engine):
    good = web.avif(PICTURE, quality=90)
    files = {"good.avif": good, "cut.avif": good[:len(good) // 2], "o1.jpg": web.exif_jpeg(PICTURE, 1)}
    with ImageServer(files) as avif_server:
        names = sorted(files)
        rows = [(avif_server.url(name), i) for i, name in enumerate(names)]
        ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=None, shuffle=False, fetch_engine=engine)
        delivered = sorted(names[int(label)] for _, label in ds)
        snapshot = ds.stats.snapshot()
        cut_url = avif_server.url("cut.avif")
    assert delivered == ["good.avif", "o1.jpg"]
    assert snapshot["failures"] == {"decode_error": 1}
    assert [(f.url, f.detail[:15]) for f in ds.stats.failed_urls(5)] == [(cut_url, "could not read ")]
    assert snapshot["fetched"] == 2, snapshot


@pytest.mark.parametrize("engine", ENGINES)
def test_transparency_is_composited(server, engine):
    names = ["alpha.png", "alpha.webp", "alpha.avif"]
    for background, left in (((255, 255, 255), (255, 255, 255)), ((0, 128, 0), (0, 128, 0)), (None, (255, 0, 0))):
        images, failures = run(server, names, engine, alpha_background=background)
        assert failures == {}
        for name in names:
            image = images[name]
            np.testing.assert_allclose(image[:, :SIZE[1] // 2 - 2].mean((0, 1)), left, atol=6, err_msg=name)
            np.testing.assert_allclose(image[:, SIZE[1] // 2 + 2:].mean((0, 1)), (255, 0, 0), atol=6, err_msg=name)


def test_palette_transparency_is_composited():
    body = tf.constant(web.palette_png_with_transparency(PICTURE, transparent_index=0))
    index = np.asarray(tfeed.decode_full(tf.constant(body), tfeed.DecodeOptions(alpha_background=None)))
    composited = tfeed.decode_full(body).numpy()
    changed = np.any(index != composited, axis=-1)
    assert changed.any() and (composited[changed] == 255).all()


@pytest.fixture(scope="module")
def png_bomb():
    return web.png_bomb(10000, 9500)  # 95 MP: 285 MB of pixels in ~280 KB


@pytest.mark.parametrize("engine", ENGINES)
def test_pixel_bombs_are_too_large_and_memory_stays_bounded(server, png_bomb, engine):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with ImageServer({"bomb.png": png_bomb}) as bomb_server:
        rows = [(bomb_server.url("bomb.png"), 0), (server.url("bomb.gif"), 1), (server.url("bomb.jpg"), 2),
                (server.url("o1.jpg"), 3)]
        ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=None, fetch_engine=engine)
        assert [int(label) for _, label in ds] == [3]
        failures = ds.stats.snapshot()["failures"]
        reasons = {f.url: f.detail for f in ds.stats.failed_urls(10)}
    assert failures == {"too_large": 3}
    assert any("10000x9500 pixels > max_pixels" in detail for detail in reasons.values()), reasons
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 150, grown_mb  # decoding the PNG alone would write 285 MB


def test_max_pixels_is_a_setting(server):
    rows = [(server.url("o1.jpg"), 0)]  # 48 x 80 = 3840 pixels
    for max_pixels, delivered in ((3839, 0), (3840, 1), (None, 1)):
        ds = tfeed.image_dataset_from_urls(rows, image_size=SIZE, batch_size=None,
                                           fetch_config=tfeed.FetchConfig(max_pixels=max_pixels))
        assert len(list(ds)) == delivered
        assert ds.stats.snapshot()["failures"] == ({} if delivered else {"too_large": 1})


def test_header_op_reads_what_pillow_reads(core_ops, bodies):
    """Format, size and orientation of every generated body, as Pillow sees them."""
    import io

    from PIL import Image

    from tfeed import contract

    names = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "AVIF": "avif", "ICO": "ico", "TIFF": "tiff", "GIF": "gif"}
    checked = 0
    for name, body in bodies.items():
        if name.startswith(("page", "photo.heic", "bomb")):
            continue
        code, height, width, orientation, _, animated = core_ops.tfeed_image_header(body).numpy().tolist()
        with Image.open(io.BytesIO(body)) as image:
            assert contract.HEADER_FORMATS[code] == names[image.format], name
            assert (width, height) == image.size, name
            assert orientation == image.getexif().get(0x0112, 1), name
            assert animated == int(getattr(image, "is_animated", False) and image.format == "WEBP"), name
        checked += 1
    assert checked == 15


def test_the_python_engines_header_reader_returns_what_the_op_returns(core_ops, bodies):
    """The ctypes entry point the Python engine's check calls is the op's parser, field for
    field, on every generated body, a truncated copy of each, and bytes that are no image."""
    read = tfeed.kernels.image_header_reader()
    samples = list(bodies.values()) + [body[:40] for body in bodies.values()] + [b"", b"\x89PNG", b"<html>"]
    for body in samples:
        assert read(body) == tuple(core_ops.tfeed_image_header(body).numpy().tolist())
        assert read(bytearray(body)) == read(body)


def test_transcoded_formats_shrink_only_while_they_cover_the_target():
    """An AVIF (OpenCV, into BMP) comes out at the smallest 1/2, 1/4, 1/8 that still covers the target."""
    from tfeed.fetching import sniff

    big = np.repeat(np.repeat(PICTURE, 10, 0), 10, 1)  # 480 x 800
    body = web.avif(big, quality=90)
    for cover, expected in ((None, (480, 800)), ((24, 40), (60, 100)), ((100, 100), (120, 200)),
                            ((241, 10), (480, 800)), ((240, 400), (240, 400))):
        out = sniff.transcode_to_png(body, cover)
        assert out[:2] == b"BM"
        assert tuple(tf.io.decode_bmp(out).shape[:2]) == expected, cover


def test_alpha_composite_on_the_taps_equals_compositing_at_full_size():
    rng = np.random.default_rng(3)
    background = (10, 200, 90)
    for (height, width), target, crop in (((37, 53), (24, 40), False), ((600, 451), (224, 224), False),
                                          ((600, 451), (100, 160), True), ((5, 3), (7, 2), False)):
        rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        got = tfeed.upright.composite_bilinear(tf.io.encode_png(rgba), tf.constant(target), background, crop)
        pixels, alpha = rgba[..., :3].astype(np.float32), rgba[..., 3:] / np.float32(255)
        full = pixels * alpha + np.float32(background) * (1 - alpha)
        if crop:
            full = tfeed.images.center_crop_to_aspect(full, target[1] / target[0])
        np.testing.assert_allclose(got.numpy(), tf.image.resize(full, target).numpy(), atol=1e-3)


def corrupt_jpegs():
    """``(extraneous, truncated)``: a JPEG with 3 stray bytes before its SOS marker (decodes,
    with libjpeg's "Corrupt JPEG data" warning) and one cut off mid-scan (fails)."""
    good = encode(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8), "jpeg")
    sos = good.index(b"\xff\xda")
    return good[:sos] + b"\x00\x01\x02" + good[sos:], good[:len(good) * 2 // 3]


def test_a_corrupt_jpeg_is_decoded_and_reported_once(capfd):
    """libjpeg's own message (TensorFlow's decoder prints it) appears once per
    body: the JPEG-only attempt's failure does not send the body to the
    general decode again.  Captured at the file-descriptor level."""
    extraneous, truncated = corrupt_jpegs()
    rows = {"extraneous.jpg": extraneous, "truncated.jpg": truncated, "good.png": encode(PICTURE, "png")}
    with ImageServer(rows) as srv:
        capfd.readouterr()
        ds = tfeed.image_dataset_from_urls([(srv.url(n), i) for i, n in enumerate(rows)], image_size=SIZE,
                                           batch_size=None, shuffle=False, fetch_engine="native")
        assert sorted(int(label) for _, label in ds) == [0, 2]
        assert ds.stats.snapshot()["failures"] == {"decode_error": 1}
    err = capfd.readouterr().err
    assert err.count("Premature end of JPEG data") == 1, err
    assert err.count("extraneous bytes before marker") <= 1, err
    assert "tfeed" not in err.lower(), err


def test_every_orientation_is_upright_without_the_core_kernels(bodies, core_ops):
    """Graph ops only (tfeed.exif reads the tag): resized and full decodes
    upright, and the tag read as the header op reads it, for other bodies too."""
    from tfeed import exif

    graph_only = tfeed.DecodeOptions(load_ops=False)
    assert graph_only.kernels() is None
    for orientation in web.ORIENTATIONS:
        body = tf.constant(bodies[f"o{orientation}.jpg"])
        assert int(tfeed.upright.read_header(body, graph_only)[3]) == orientation
        assert_upright(tfeed.decode_resized(body, SIZE, options=graph_only).numpy())
        full = tfeed.decode_full(body, graph_only).numpy()
        assert full.shape == (HEIGHT, WIDTH, 3)
        assert_upright(tf.image.resize(full, SIZE).numpy())
    little_endian = bodies["o6.jpg"].replace(b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0",
                                             b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0")
    assert little_endian != bodies["o6.jpg"]  # Pillow writes Motorola order; this one Intel's
    others = [little_endian, b"", b"\xff\xd8", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM", encode(PICTURE, "jpeg")]
    for body in others + [b for n, b in bodies.items() if not n.startswith("o")]:
        expected = int(core_ops.tfeed_image_header(body)[3]) if body else 1
        assert int(exif.jpeg_orientation(tf.constant(body))) == expected, body[:24]
    assert int(exif.jpeg_orientation(tf.constant(little_endian))) == 6

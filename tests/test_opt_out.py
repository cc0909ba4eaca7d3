"""Crawler manners: an image whose response says ``X-Robots-Tag: noai`` / ``noimageai`` is
counted ``opted_out`` by both engines (served by nginx, a server we did not write), and the
C++ header check reads the directives exactly as ``tfeed.contract.opts_out`` does."""

import numpy as np
import pytest

import tfeed
from tfeed import contract, errors, kernels
from tfeed.config import FetchConfig
from tfeed.testing import encode
from test_kernels_build import compile_program, needs_gxx, run
from test_origins import nginx_origin

ENGINES = ["python", pytest.param("native", marks=pytest.mark.skipif(
    not kernels.available(), reason="native fetch op unavailable"))]

HEADER_VALUES = ["noai", "NoImageAI", "noindex, noai", "otherbot: noai", "noindex", "nofollow,noarchive",
                 "noaix", "ai", "", "googlebot:noimageai;", "  noai  ", "unavailable_after: 25 Jun 2010"]


def _images():
    names = [f"free/{i}.png" for i in range(5)] + [f"optout/{i}.png" for i in range(3)]
    return {name: encode(np.full((16, 16, 3), 20 * i, np.uint8), "png") for i, name in enumerate(names)}


@pytest.mark.parametrize("respect", [True, False])
@pytest.mark.parametrize("engine", ENGINES)
def test_opted_out_images_are_counted_not_kept(engine, respect):
    images = _images()
    with nginx_origin()(images, robots_tag="otherbot: noindex, noai") as origin:
        names = sorted(images)
        ds = tfeed.image_dataset_from_urls([(origin.url(n), i) for i, n in enumerate(names)], image_size=(16, 16),
                                           batch_size=None, shuffle=False, fetch_engine=engine,
                                           fetch_config=FetchConfig(respect_opt_out=respect))
        labels = sorted(int(y) for _, y in ds)
    snapshot = ds.stats.snapshot()
    if respect:
        assert labels == [i for i, n in enumerate(names) if n.startswith("free/")]
        assert snapshot["failures"] == {errors.OPTED_OUT: 3}
        assert all(f.reason == errors.OPTED_OUT and "X-Robots-Tag" in f.detail for f in ds.stats.failed_urls())
    else:
        assert labels == list(range(len(names))) and snapshot["failed"] == 0


def test_opt_out_is_on_by_default():
    assert FetchConfig().respect_opt_out is True


def test_directives_are_tokens_of_the_header_value():
    assert [contract.opts_out(v) for v in HEADER_VALUES] == [
        True, True, True, True, False, False, False, False, False, True, True, False]


HEADER_DRIVER = r"""
    #include <iostream>
    #include <string>
    #include "classify.h"
    int main() {
      std::string line;
      while (std::getline(std::cin, line)) {
        line += "\r\n";
        std::printf("%d\n", tfeed::fetch::HeaderOptsOut(line.data(), line.size()) ? 1 : 0);
      }
    }
"""


@needs_gxx
def test_cpp_header_check_agrees_with_python(tmp_path):
    program = compile_program(tmp_path, "opt_out", HEADER_DRIVER, ["classify.cc"])
    lines = [f"{name}: {value}" for value in HEADER_VALUES for name in ("X-Robots-Tag", "x-robots-tag")]
    lines += ["X-Robots-Tags: noai", "Link: noai", "X-Robots-Tag noai", "HTTP/1.1 200 OK"]
    got = run(program, "".join(line + "\n" for line in lines))
    expected = [contract.opts_out(line.split(":", 1)[1]) if line.lower().startswith("x-robots-tag:") else False
                for line in lines]
    assert [g == "1" for g in got] == expected

"""The ``tfeed`` command: every subcommand as a real process against real servers, plus usage errors."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import cv2
import pytest

from tfeed.app import cli
from tfeed.testing import encode, synthetic_shapes, write_images
from tfeed.testing.images import SHAPE_CLASSES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IMAGES = 40
FAULTY = 4  # --fault status=404@0.1


def tfeed_env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TFEED_CACHE_DIR", None)
    return env


def start_tfeed(*args) -> subprocess.Popen:
    """``python -m tfeed ARGS`` as a real process with text pipes."""
    return subprocess.Popen([sys.executable, "-m", "tfeed", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=tfeed_env(), cwd=ROOT)


def _has_augment():
    try:
        from tfeed.augment import get_preset  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``tfeed serve-images DIR`` in its own process: labelled shapes, 10 % of URLs answering 404."""
    tmp = tmp_path_factory.mktemp("serve-images")
    images, labels = synthetic_shapes(NUM_IMAGES, size=48, seed=0)
    write_images({f"{SHAPE_CLASSES[label]}/{i:03d}.png": encode(image, "png")
                  for i, (image, label) in enumerate(zip(images, labels))}, tmp / "images")
    urls = tmp / "urls.txt"
    proc = subprocess.Popen([sys.executable, "-m", "tfeed", "serve-images", str(tmp / "images"), "--latency", "0.01",
                             "--urls", str(urls), "--fault", "status=404@0.1", "--seed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tfeed_env())
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        assert ready, "serve-images printed no base URL within 90 s"
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:"), (base_url, proc.stderr.read() if proc.poll() else "")
        yield {"base_url": base_url, "urls": urls, "proc": proc, "tmp": tmp}
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def test_help_and_usage_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("demo", "bench", "show", "serve-images"))
    for argv in (["show", "urls.txt"], ["bench"], ["serve-images", "--shapes", "3", "--fault", "bogus=1"],
                 ["bench", "x.txt", "--concurrency", "0,4"], []):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2, argv
    capsys.readouterr()
    assert cli.main(["bench", str(tmp_path / "missing.txt")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["serve-images", "--shapes", "3", "--fault", "status=404@0.6", "--fault", "html=1@0.6"]) == 2
    assert cli.main(["serve-images", "--shapes", "3", "--urls", str(tmp_path / "urls.xml")]) == 2


def test_serve_images_serves_and_lists_urls(served):
    lines = served["urls"].read_text().splitlines()
    assert len(lines) == NUM_IMAGES
    pairs = [line.split("\t") for line in lines]
    assert {label for _, label in pairs} == set(SHAPE_CLASSES)
    faulty = [url for url, _ in pairs if "status=404" in url]
    assert len(faulty) == FAULTY
    good = next(url for url, _ in pairs if "?" not in url)
    assert good.startswith(served["base_url"])
    with urllib.request.urlopen(good, timeout=10) as response:
        assert response.status == 200 and response.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(faulty[0], timeout=10)
    assert error.value.code == 404


def test_bench_stages_json_counts_failures(served, capsys):
    status = cli.main(["bench", str(served["urls"]), "-n", "24", "--size", "32", "--json", "--stages", "fetch,decode"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    expected = sum("status=404" in line for line in served["urls"].read_text().splitlines()[:24])
    assert [row["stage"] for row in report["stages"]] == ["fetch", "fetch+decode"]
    assert len({row["engine"] for row in report["stages"]}) == 1  # both stages on the engine training uses
    for row in report["stages"]:
        assert row["images"] == 24 - expected and row["failed"] == expected and row["images_per_s"] > 0
    assert status == (1 if expected else 0)
    if expected:
        assert "failed (http_404)" in captured.err


def test_bench_and_show_processes(served, tmp_path):
    """Both commands as real processes, side by side (each pays TensorFlow's import)."""
    lines = served["urls"].read_text().splitlines()
    good = "".join(line + "\n" for line in lines if "status=" not in line)
    faulty_first = tmp_path / "faulty_first.txt"  # the 404s precede the first batch in source order
    faulty_first.write_text("".join(line + "\n" for line in lines if "status=" in line) + good)
    chart, grid, failures = tmp_path / "chart.png", tmp_path / "grid.png", tmp_path / "failures.png"
    bench = start_tfeed("bench", "-", "-n", "30", "--size", "32", "--grid", "--concurrency", "4,16",
                        "--parallelism", "1,2", "--progress", "-o", str(chart))
    show = start_tfeed("show", str(faulty_first), "-n", "8", "--size", "48", "-o", str(grid),
                       "--failures", str(failures))
    try:
        bench_out, bench_err = bench.communicate(good, timeout=180)
        show_out, show_err = show.communicate("", timeout=180)
    finally:
        for proc in (bench, show):
            if proc.poll() is None:
                proc.kill()

    assert bench.returncode == 0, bench_err[-2000:]
    table = [line for line in bench_out.splitlines() if line.startswith("|")]
    assert table[0] == "| in flight \\ decode parallelism | 1 | 2 |"
    assert [row.split("|")[1].strip() for row in table[2:]] == ["4", "16"]
    assert "img/s" in bench_err  # tqdm progress on stderr
    assert cv2.imread(str(chart)) is not None

    # The first batch waits for the URLs before it in source order, so the 404s are counted: exit status 1.
    assert show.returncode == 1, show_err[-2000:]
    assert show_out.strip() == str(grid) and "failed (http_404)" in show_err
    image = cv2.imread(str(grid))
    assert image is not None and image.shape[0] > 150 and image.shape[1] > 150
    assert cv2.imread(str(failures)) is not None


@pytest.mark.skipif(not _has_augment(), reason="tfeed.augment is not there")
def test_show_augment_beside_originals(served, tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text("".join(line + "\n" for line in served["urls"].read_text().splitlines() if "?" not in line))
    grid = tmp_path / "augmented.png"
    status = cli.main(["show", str(good), "-n", "4", "--size", "48", "--augment", "imagenet_train", "-o", str(grid)])
    assert status == 0 and "beside their imagenet_train augmentation" in capsys.readouterr().err
    image = cv2.imread(str(grid))
    assert image is not None and image.shape[1] > 2 * image.shape[0]  # 4 pairs in one row


def test_show_reports_failures(served, tmp_path, capsys):
    failed_only = tmp_path / "failed.txt"
    failed_only.write_text("".join(line + "\n" for line in served["urls"].read_text().splitlines()
                                   if "status=404" in line))
    status = cli.main(["show", str(failed_only), "-o", str(tmp_path / "none.png"), "--failures",
                       str(tmp_path / "failures.png")])
    assert status == 1 and not (tmp_path / "none.png").exists()
    assert cv2.imread(str(tmp_path / "failures.png")) is not None
    assert "http_404" in capsys.readouterr().err


def test_demo(capsys):
    """In-process (the other commands cover real processes): trains for one epoch."""
    assert cli.main(["demo", "--images", "60", "--epochs", "1", "--latency", "0.01"]) == 0
    assert "validation accuracy" in capsys.readouterr().out


def test_console_script_entry_point():
    import importlib.metadata

    try:
        importlib.metadata.distribution("tfeed")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tfeed is not pip-installed here (make test installs it)")
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "tfeed"]
    assert entry.value == "tfeed.app.cli:main" and entry.load() is cli.main


def test_serve_images_stops_cleanly_on_sigterm(served):
    proc = served["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "stopped" in proc.stderr.read()



def test_deny_private_refuses_loopback_without_a_request(served, capsys):
    status = cli.main(["bench", str(served["urls"]), "-n", "8", "--size", "32", "--json", "--stages", "fetch",
                       "--deny-private"])
    captured = capsys.readouterr()
    row = json.loads(captured.out)["stages"][0]
    assert row["images"] == 0 and row["failed"] == 8 and status == 1
    assert "failed (blocked_address)" in captured.err


def test_file_root_reads_local_files_beneath_it_only(tmp_path, capsys):
    images, _ = synthetic_shapes(3, size=32, seed=0)
    write_images({f"{i}.png": encode(image, "png") for i, image in enumerate(images)}, tmp_path / "root")
    (tmp_path / "outside.png").write_bytes(encode(images[0], "png"))
    os.symlink(tmp_path / "outside.png", tmp_path / "root" / "link.png")
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"{url}\n" for url in [
        tmp_path / "root" / "0.png", f"file://{tmp_path}/root/1.png", f"file://{tmp_path}/root/%2e%2e/outside.png",
        tmp_path / "root" / "link.png", tmp_path / "outside.png"]))
    status = cli.main(["bench", str(urls), "-n", "5", "--size", "32", "--json", "--stages", "fetch",
                       "--file-root", str(tmp_path / "root")])
    captured = capsys.readouterr()
    row = json.loads(captured.out)["stages"][0]
    assert row["images"] == 2 and row["failed"] == 3 and status == 1
    assert "outside_file_root=3" in captured.err
    assert cli.main(["bench", str(urls), "--file-root", str(tmp_path / "missing")]) == 2
    assert cli.main(["bench", str(urls), "-n", "5", "--size", "32", "--json", "--stages", "fetch"]) == 1
    assert json.loads(capsys.readouterr().out)["stages"][0]["failed"] == 5  # without it: no local files

"""The examples run as users run them: real processes, servers on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
SERVICE_PORT = 5050


def env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")


def run_example(name, *args, timeout=180):
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True, text=True,
                            timeout=timeout, env=env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def test_keras_fit_example_skips_and_counts_broken_urls(tmp_path):
    result, summary = run_example("keras_fit.py", "--demo", "--demo-images", "150", "--epochs", "1",
                                  "--failures", str(tmp_path / "failures.png"))
    assert "classes: ['circle', 'square', 'triangle']" in result.stdout
    assert summary["delivered"] > 100 and 0 <= summary["val_accuracy"] <= 1
    # Four broken URLs; the validation split takes its share of them.
    assert 1 <= summary["failed"] <= 4 and set(summary["failures"]) <= {"http_404", "truncated", "not_image"}
    assert (tmp_path / "failures.png").stat().st_size > 1000


def test_pytorch_example():
    pytest.importorskip("torch")
    result, summary = run_example("pytorch_mnist.py", "--demo", "--demo-images", "400", "--epochs", "1")
    assert "validation accuracy" in result.stdout
    assert summary["classes"] == [str(i) for i in range(10)] and summary["images_seen"] > 250


# The driver runs inside the network namespace (when there is one): the sender and the receiver
# are two separate processes that meet only through the tf.data service on loopback.  Both start at
# once (the receiver waits for the sender); a sender that dies ends the receiver at once.
DRIVER = r"""
import json, os, subprocess, sys, time
ip, python, sender, receiver, port, logs = sys.argv[1:7]
if ip != "-":
    subprocess.run([ip, "link", "set", "lo", "up"], check=True)

def start(name, argv):
    out, err = open(os.path.join(logs, name + ".out"), "w"), open(os.path.join(logs, name + ".err"), "w")
    return subprocess.Popen([python, *argv], stdout=out, stderr=err)

send = start("sender", [sender, "--demo", "--demo-images", "320", "--port", port])
receive = start("receiver", [receiver, "grpc://localhost:" + port, "--batches", "12", "--timeout", "60"])
deadline = time.monotonic() + 200
while receive.poll() is None and send.poll() is None and time.monotonic() < deadline:
    time.sleep(0.2)
if receive.poll() is None:
    receive.kill()
receive.wait()
if send.poll() is None:
    send.terminate()
send.wait(timeout=60)
print(json.dumps({"receiver": receive.returncode, "sender": send.returncode}))
"""


def _private_network():
    """``unshare -rn`` (a user + network namespace with only loopback) if this machine allows it:
    tf.data service servers listen on every interface, and inside it every interface is loopback."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip") or "/usr/sbin/ip"
    if unshare and os.path.exists(ip):
        probe = subprocess.run([unshare, "-rn", ip, "link", "set", "lo", "up"], capture_output=True)
        if probe.returncode == 0:
            return [unshare, "-rn"], ip
    return [], "-"


def test_distributed_sender_and_receiver_move_images_between_processes(tmp_path):
    prefix, ip = _private_network()
    port = SERVICE_PORT if prefix else free_port()
    args = [*prefix, sys.executable, "-c", DRIVER, ip, sys.executable, os.path.join(EXAMPLES, "distributed_sender.py"),
            os.path.join(EXAMPLES, "distributed_receiver.py"), str(port), str(tmp_path)]
    driver = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env(), cwd=ROOT)
    assert driver.returncode == 0, driver.stderr[-3000:]
    status = json.loads(driver.stdout.strip().splitlines()[-1])
    send_out, send_err, receive_out, receive_err = (
        (tmp_path / name).read_text() for name in ("sender.out", "sender.err", "receiver.out", "receiver.err"))
    assert status["receiver"] == 0, f"receiver: {receive_err[-2000:]}\nsender: {send_err[-3000:]}"
    assert status["sender"] == 0, send_err[-3000:]
    received = json.loads(receive_out.strip().splitlines()[-1])
    assert received["batch_shape"] == [32, 28, 28, 3]  # 320 images: 10 full batches an epoch
    assert received["images"] == 12 * 32 and received["images_per_s"] > 0
    assert set(received["labels"]) <= {str(i) for i in range(10)} and len(received["labels"]) >= 5
    ready, stats = send_out.splitlines()[0], json.loads(send_out.splitlines()[-1])
    assert ready == f"ready grpc://localhost:{port}"
    assert stats["delivered"] >= 12 * 32 and stats["failed"] == 0

"""Serve a directory with a private nginx: the fast, realistic static server for benchmarks.

Everything nginx writes (config, pid, error log, temp dirs) lives in a temp dir that
stop() removes; nothing under /etc or /var is touched.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

from tfeed.testing.server import stop_process

START_TIMEOUT = 10.0
_TEMP_MODULES = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

# the start of every config tfeed.testing writes (format fields: user, tmp)
CONF_HEAD = """\
daemon off;
master_process on;
worker_processes 1;
{user}error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
"""

_CONF = CONF_HEAD + """\
http {{
    types {{
        image/jpeg jpg jpeg; image/png png; image/gif gif; image/bmp bmp;
        image/webp webp; image/tiff tif tiff; text/html html;
    }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 65;
{temp_paths}
    server {{
        listen {host}:{port}{ssl} backlog=1024;
{tls}        root "{root}";
        location / {{ try_files $uri =404; }}
    }}
}}
"""


class NginxUnavailable(RuntimeError):
    """No nginx binary was found."""


def find_nginx():
    """Path of the nginx binary (PATH, then /usr/sbin/nginx); raises NginxUnavailable."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not found:
        raise NginxUnavailable("nginx is not installed; on Debian/Ubuntu: apt-get install nginx-light")
    return found


def _free_port(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _tls_lines(tls):
    if not tls:
        return ""
    certificate, key = (os.path.abspath(path) for path in tls)
    return f'        ssl_certificate "{certificate}";\n        ssl_certificate_key "{key}";\n'


def temp_paths(binary, tmp):
    """``*_temp_path`` lines for every module this nginx build has (a missing one is a config error)."""
    flags = subprocess.run([binary, "-V"], capture_output=True, text=True).stderr
    lines = []
    for module in _TEMP_MODULES:
        if f"--without-http_{module}_module" not in flags:
            lines.append(f"    {module}_temp_path {tmp}/{module}_temp;")
    return "\n".join(lines)


class NginxServer:
    """nginx serving the files below ``root`` on ``host:port`` (a free port when None);
    over https with ``tls=(certificate chain PEM path, key PEM path)``.

    Use as a context manager or call start()/stop(). start() waits until the port
    accepts connections (at most 10 s) and raises RuntimeError with nginx's error log
    when it does not; NginxUnavailable when no nginx binary exists.
    """

    def __init__(self, root, *, host="127.0.0.1", port=None, tls=None):
        self.root = os.path.abspath(root)
        self.tls = tls  # (certificate chain PEM path, private key PEM path): serve https
        if not os.path.isdir(self.root):
            raise NotADirectoryError(f"NginxServer: {self.root} is not a directory")
        self.host = host
        self._requested_port = port
        self.port = port
        self._proc = None
        self._tmp = None

    @property
    def base_url(self):
        """``"http://HOST:PORT/"`` (``https`` with ``tls``); raises RuntimeError before start()."""
        if self._proc is None:
            raise RuntimeError("NginxServer is not started")
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/"

    def url(self, name):
        """Full URL of the file ``name`` (relative to root)."""
        return self.base_url + urllib.parse.quote(name.lstrip("/"))

    def start(self):
        """Start nginx (idempotent); returns self."""
        if self._proc is not None:
            return self
        binary = find_nginx()
        self._tmp = tempfile.mkdtemp(prefix="tfeed-nginx-")
        port = self._requested_port or _free_port(self.host)
        conf = os.path.join(self._tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_CONF.format(
                user="user root;\n" if os.geteuid() == 0 else "", tmp=self._tmp, host=self.host, port=port,
                root=self.root, temp_paths=temp_paths(binary, self._tmp), ssl=" ssl" if self.tls else "",
                tls=_tls_lines(self.tls)))
        self._proc = subprocess.Popen([binary, "-c", conf, "-p", self._tmp, "-e", os.path.join(self._tmp, "error.log")],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.port = port
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start on {self.host}:{self.port}:\n{self._error_log()}")

    def _error_log(self):
        try:
            with open(os.path.join(self._tmp, "error.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError as exc:
            return f"(no error log: {exc})"

    def stop(self):
        """Stop nginx and remove its temp dir (idempotent)."""
        proc, self._proc = self._proc, None
        stop_process(proc)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

"""nginx as a realistic origin: per-client connection and request-rate limits, TLS + HTTP/2.

See :mod:`tfeed.testing.origins` for the interface every origin shares.
"""

import collections
import importlib
import os
import subprocess

import tfeed.testing
from tfeed.testing.origins import Origin, _free_port, _tail, _wait_accepting
from tfeed.testing.server import stop_process

# the module that defines NginxServer, wherever it lives: its find_nginx() locates the binary
_nginx = importlib.import_module(tfeed.testing.NginxServer.__module__)
NginxUnavailable = tfeed.testing.NginxUnavailable

_CONF = _nginx.CONF_HEAD + """\
http {{
    types {{ image/jpeg jpg jpeg; image/png png; image/gif gif; image/webp webp; image/bmp bmp; }}
    default_type application/octet-stream;
    log_format status_conn '$status $connection';
    access_log {tmp}/access.log status_conn;
    sendfile on;
    keepalive_requests 100000;
    keepalive_timeout 65;
{temp_paths}
{limits}{upstream}
    server {{
        listen {host}:{port}{listen_flags} backlog=1024;
{server_lines}        root "{root}";
        location / {{
{location}        }}
    }}
}}
"""


def _make_tls(directory, host):
    """A trustme CA and a certificate for ``host`` and localhost: (ca_file, chain, key) paths."""
    import trustme

    authority = trustme.CA()
    certificate = authority.issue_cert(host, "localhost")
    ca_file, chain, key = (os.path.join(directory, name) for name in ("ca.pem", "chain.pem", "key.pem"))
    authority.cert_pem.write_to_path(ca_file)
    certificate.private_key_pem.write_to_path(key)
    with open(chain, "wb") as out:
        for blob in certificate.cert_chain_pems:
            out.write(blob.bytes())
    return ca_file, chain, key


class NginxOrigin(Origin):
    """A private nginx (one worker) serving ``images`` on ``host`` (127.0.0.1), with optional limits.

    Args:
      limit_conn: at most this many requests in processing per client address
        (``limit_conn perip N``); more are answered 503 (``limit_conn_status 503``).
        nginx counts a request only while it is being processed: a static file that fits
        in the socket buffer is done at once, so on loopback the limit bites only with a
        slow reader or with ``upstream_latency``.
      limit_req: requests per second per client address (``limit_req_zone ... rate=Rr/s``);
        above it (plus ``burst``), requests are answered 429 (``limit_req_status 429``).
        All loopback clients of 127.0.0.1 share one bucket.
      burst, nodelay: ``limit_req``'s ``burst=B`` and ``nodelay`` (excess requests within
        the burst are served at once instead of being delayed to the rate).
      tls: serve https with a certificate from a fresh trustme CA; ``ca_file`` is the
        CA's PEM path for clients (None without tls).
      http2: offer HTTP/2 by ALPN (needs ``tls``: nginx 1.22 speaks cleartext HTTP/2 only to
        prior-knowledge clients).
      upstream_latency: seconds; nginx proxies every request to a
        :class:`tfeed.testing.ImageServer` with this latency (an app behind the limiter),
        so requests stay open and ``limit_conn`` counts them. None serves files directly.
      robots_tag: files under ``optout/`` are served with ``X-Robots-Tag: <robots_tag>``
        (nginx's ``add_header``); None: no such header anywhere.

    ``capacity`` (images/s): ``limit_req`` when set; ``limit_conn / upstream_latency`` when both
    are set (the smaller of the two when both limits are); otherwise None.
    ``stats()`` counts nginx's access log (every answered request, by status; ``connections``:
    the TCP connections that carried them).
    Raises NginxUnavailable on start when no nginx binary exists.
    """

    def __init__(self, images, limit_conn=None, limit_req=None, burst=0, tls=False, http2=False, *, nodelay=True,
                 upstream_latency=None, host="127.0.0.1", robots_tag=None):
        super().__init__(images)
        if http2 and not tls:
            raise ValueError("NginxOrigin: http2 needs tls (nginx 1.22 offers HTTP/2 to HTTP/1.1 clients only by ALPN)")
        if (limit_conn is not None and limit_conn < 1) or (limit_req is not None and limit_req <= 0) or burst < 0:
            raise ValueError(f"NginxOrigin: bad limits limit_conn={limit_conn} limit_req={limit_req} burst={burst}")
        self.limit_conn, self.limit_req, self.burst, self.nodelay = limit_conn, limit_req, int(burst), nodelay
        self.tls, self.http2, self.upstream_latency, self.host = bool(tls), bool(http2), upstream_latency, host
        self.robots_tag = robots_tag
        known = [limit_req] if limit_req else []
        if limit_conn and upstream_latency:
            known.append(limit_conn / upstream_latency)
        self.capacity = min(known) if known else None
        self.port = None
        self.ca_file = None
        self._proc = None
        self._app = None

    def _start(self):
        binary = _nginx.find_nginx()
        tmp = self._tmp
        self.port = _free_port(self.host)
        limits, server_lines, upstream = "", "", ""
        if self.limit_conn:
            limits += ("    limit_conn_zone $binary_remote_addr zone=perip:1m;\n    limit_conn_status 503;\n"
                       "    limit_conn_log_level info;\n")
            server_lines += f"        limit_conn perip {int(self.limit_conn)};\n"
        if self.limit_req:
            limits += (f"    limit_req_zone $binary_remote_addr zone=rate:1m rate={self.limit_req:g}r/s;\n"
                       "    limit_req_status 429;\n    limit_req_log_level info;\n")
            extra = f" burst={self.burst}{' nodelay' if self.nodelay else ''}" if self.burst else ""
            server_lines += f"        limit_req zone=rate{extra};\n"  # nginx rejects burst=0: omitted
        if self.robots_tag is not None:
            server_lines += (f'        location /optout/ {{ add_header X-Robots-Tag "{self.robots_tag}"; '
                             'try_files $uri =404; }\n')
        if self.tls:
            self.ca_file, chain, key = _make_tls(tmp, self.host)
            server_lines += f'        ssl_certificate "{chain}";\n        ssl_certificate_key "{key}";\n'
        if self.upstream_latency is not None:
            self._app = tfeed.testing.ImageServer(self.root, latency=self.upstream_latency, process=True).start()
            upstream = f"    upstream app {{ server 127.0.0.1:{self._app.port}; keepalive 256; }}\n"
            location = ("            proxy_pass http://app;\n            proxy_http_version 1.1;\n"
                        "            proxy_set_header Connection \"\";\n")
        else:
            location = "            try_files $uri =404;\n"
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_CONF.format(
                user="user root;\n" if os.geteuid() == 0 else "", tmp=tmp, temp_paths=_nginx.temp_paths(binary, tmp),
                limits=limits, upstream=upstream, host=self.host, port=self.port,
                listen_flags=(" ssl" if self.tls else "") + (" http2" if self.http2 else ""),
                server_lines=server_lines, root=self.root, location=location))
        error_log = os.path.join(tmp, "error.log")
        self._proc = subprocess.Popen([binary, "-c", conf, "-p", tmp, "-e", error_log], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_accepting(self.host, self.port, self._proc, "nginx", error_log)

    def _stop(self):
        proc, self._proc = self._proc, None
        stop_process(proc)
        app, self._app = self._app, None
        if app is not None:
            app.stop()

    def _base_url(self, index):
        self._require_started()
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/"

    def describe(self):
        parts = []
        if self.limit_conn:
            parts.append(f"limit_conn {self.limit_conn} -> 503")
        if self.limit_req:
            burst = f" burst {self.burst}{' nodelay' if self.nodelay else ''}" if self.burst else ""
            parts.append(f"limit_req {self.limit_req:g} r/s{burst} -> 429")
        if self.tls:
            parts.append("TLS" + (" + HTTP/2" if self.http2 else ""))
        if self.upstream_latency is not None:
            parts.append(f"proxy to a {self.upstream_latency * 1000:.0f} ms app")
        return "nginx " + (", ".join(parts) if parts else "static")

    def stats(self):
        self._require_started()
        counts, connections = collections.Counter(), set()
        with open(os.path.join(self._tmp, "access.log"), errors="replace") as f:
            for line in f:
                status, _, connection = line.strip().partition(" ")
                if status:
                    counts[status] += 1
                    connections.add(connection)
        return {"requests": sum(counts.values()), "by_status": dict(counts), "connections": len(connections)}

    def error_log(self):
        """The end of nginx's error log (for diagnostics)."""
        return _tail(os.path.join(self._tmp, "error.log")) if self._tmp else ""

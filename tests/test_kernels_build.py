"""tfeed.kernels' sources and build: the generated contract.h says what
tfeed/contract.py says, the C++ sniffer and attempt classifier agree with the
Python engine (each compiled alone with a small driver, no TensorFlow), the
build hash follows the contract, the core library builds without libcurl's
headers, and no source file grows past 400 lines."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tfeed import contract, errors
from tfeed.fetching import sniff
from tfeed.kernels import build, contract_header

KERNELS = Path(build.__file__).resolve().parent
FETCH = KERNELS / "fetch"
GXX = shutil.which("g++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="no g++")


def compile_program(tmp_path: Path, name: str, driver: str, sources=()) -> Path:
    """Compiles ``driver`` (C++ text) with fetch/``sources`` against a freshly rendered contract.h."""
    include = tmp_path / "include"
    include.mkdir(exist_ok=True)
    (include / "contract.h").write_text(contract_header.render())
    (include / "image_contract.h").write_text(contract_header.render_image())
    (tmp_path / f"{name}.cc").write_text(textwrap.dedent(driver))
    program = tmp_path / name
    command = [GXX, "-std=c++17", "-O1", "-Wall", "-Werror", "-I", str(include), "-I", str(FETCH),
               str(tmp_path / f"{name}.cc"), *(str(FETCH / s) for s in sources), "-o", str(program)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and "curl/curl.h" in done.stderr:
        pytest.skip("libcurl headers are missing")
    assert done.returncode == 0, done.stderr[-3000:]
    return program


def run(program: Path, stdin: str = "") -> list:
    done = subprocess.run([str(program)], input=stdin, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()


# -- contract.h ---------------------------------------------------------------------

DUMP = r"""
    #include <cstdio>
    #include "contract.h"
    namespace c = tfeed::contract;
    static void Hex(const char* p, std::size_t n) { for (std::size_t i = 0; i < n; ++i) std::printf("%02x", (unsigned char)p[i]); }
    int main() {
      static_assert(sizeof c::kReasons / sizeof *c::kReasons == c::kReasonsCount, "count");
      for (const char* r : c::kReasons) std::printf("reason %s\n", r);
      for (long s : c::kRetryableStatuses) std::printf("retryable_status %ld\n", s);
      std::printf("first_server_error %ld\n", c::kFirstServerError);
      std::printf("backoff_fixed_share %.17g\n", c::kBackoffFixedShare);
      for (long s = 100; s < 1000; ++s) std::printf("status %ld %d %s\n", s, c::IsRetryableStatus(s), c::HttpReason(s).c_str());
      for (int a = 1; a <= 12; ++a)
        for (double b : {0.0, 0.01, 0.25, 1.0})
          for (double m : {0.0, 0.05, 8.0, 60.0}) std::printf("ceiling %d %.17g %.17g %.17g\n", a, b, m, c::BackoffCeiling(a, b, m));
      for (const char* d : c::kDecodable) std::printf("decodable %s\n", d);
      for (const auto& s : c::kSignatures) {
        std::printf("signature %s %zu %d", s.format, s.min_length, s.decodable ? 1 : 0);
        for (int i = 0; i < s.part_count; ++i) { std::printf(" %zu:", s.parts[i].offset); Hex(s.parts[i].bytes, s.parts[i].length); }
        std::printf("\n");
      }
      std::printf("cache_magic "); Hex(c::kCacheMagic + c::kCacheMagicOffset, c::kCacheMagicBytes); std::printf("\n");
      std::printf("cache_header %zu %zu %zu %zu %zu\n", c::kCacheHeaderBytes, c::kCacheLengthOffset, c::kCacheLengthBytes,
                  c::kCacheCrcOffset, c::kCacheCrcBytes);
      for (const char* r : c::kPermanentReasons) std::printf("permanent %s\n", r);
      std::printf("group_size %d\n", c::kGroupSize);
      LIMITER
    }
"""


def limiter_names() -> list:
    """``(contract name, C++ constant)`` of the limiter's constants, when the contract has them."""
    return [(name, contract_header.identifier(name.lower())) for name in getattr(contract, "LIMITER_CONSTANTS", ())]


def dump_source() -> str:
    lines = [f'std::printf("limiter {name} %.17g\\n", static_cast<double>(c::{constant}));'
             for name, constant in limiter_names()]
    if hasattr(contract, "OVERLOAD_STATUSES"):
        lines.append('for (long s : c::kOverloadStatuses) std::printf("overload_status %ld\\n", s);')
    return DUMP.replace("LIMITER", "\n      ".join(lines))


def expected_dump() -> list:
    lines = [f"reason {r}" for r in contract.REASONS]
    lines += [f"retryable_status {s}" for s in contract.RETRYABLE_STATUSES]
    lines += [f"first_server_error {contract.FIRST_SERVER_ERROR}", f"backoff_fixed_share {contract.BACKOFF_FIXED_SHARE}"]
    lines += [f"status {s} {int(contract.is_retryable_status(s))} {errors.http_reason(s)}" for s in range(100, 1000)]
    lines += [f"ceiling {a} {b} {m} {contract.backoff_ceiling(a, b, m)}"
              for a in range(1, 13) for b in (0.0, 0.01, 0.25, 1.0) for m in (0.0, 0.05, 8.0, 60.0)]
    lines += [f"decodable {d}" for d in contract.DECODABLE]
    lines += [f"signature {name} {n} {int(name in contract.DECODABLE)} " + " ".join(f"{o}:{m.hex()}" for o, m in parts)
              for name, n, parts in contract.SIGNATURES]
    length_at, crc_at = struct.calcsize("<4s"), struct.calcsize("<4sQ")
    lines += [f"cache_magic {contract.CACHE_MAGIC.hex()}",
              f"cache_header {contract.CACHE_HEADER_BYTES} {length_at} 8 {crc_at} 4"]
    lines += [f"permanent {r}" for r in contract.PERMANENT_REASONS]
    lines += [f"group_size {contract.GROUP_SIZE}"]
    lines += [f"limiter {name} {float(getattr(contract, name))!r}" for name, _ in limiter_names()]
    return lines + [f"overload_status {s}" for s in getattr(contract, "OVERLOAD_STATUSES", ())]


def normalise(line: str) -> tuple:
    """A dump line with its numbers parsed (C++ prints floats with %.17g, Python with repr)."""
    words = line.split()
    if words[0] == "ceiling":
        return (words[0], int(words[1]), *map(float, words[2:]))
    if words[0] == "backoff_fixed_share":
        return (words[0], float(words[1]))
    if words[0] == "limiter":
        return (words[0], words[1], float(words[2]))
    return tuple(words)


@needs_gxx
def test_contract_header_says_what_contract_py_says(tmp_path):
    program = compile_program(tmp_path, "dump", dump_source())
    assert [normalise(line) for line in run(program)] == [normalise(line) for line in expected_dump()]


def test_header_is_rendered_from_the_current_contract(monkeypatch):
    monkeypatch.setattr(contract, "GROUP_SIZE", 33)
    monkeypatch.setattr(contract, "RETRYABLE_STATUSES", (408, 425, 429))
    text = contract_header.render()
    assert "kGroupSize = 33;" in text and "kRetryableStatuses[] = {408, 425, 429};" in text


def test_header_refuses_a_cache_format_the_reader_cannot_read(monkeypatch):
    monkeypatch.setattr(contract, "CACHE_HEADER_FORMAT", "<4sIQ")
    with pytest.raises(ValueError, match="CACHE_HEADER_FORMAT"):
        contract_header.render()


def test_contract_change_changes_only_the_fetch_library_path(monkeypatch, tmp_path):
    before = {name: build.library_path(tmp_path, library=name) for name in build.LIBRARIES}
    monkeypatch.setattr(contract, "PERMANENT_REASONS", (*contract.PERMANENT_REASONS, "http_451"))
    after = {name: build.library_path(tmp_path, library=name) for name in build.LIBRARIES}
    assert after["fetch"] != before["fetch"] and after["core"] == before["core"]
    assert before["fetch"].name == "tfeed_fetch_ops.so" and before["core"].name == "tfeed_core_ops.so"


# -- sniffing ---------------------------------------------------------------------------

SNIFF = r"""
    #include <cstdio>
    #include <iostream>
    #include <string>
    #include "sniff.h"
    int main() {
      std::string hex;
      while (std::getline(std::cin, hex)) {
        std::string body;
        for (std::size_t i = 0; i + 1 < hex.size(); i += 2) body += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
        const auto* s = tfeed::fetch::Sniff(body.data(), body.size());
        tfeed::fetch::Verdict v = tfeed::fetch::CheckImage(body.data(), body.size(), true);
        std::printf("%s %d %s\n", s == nullptr ? "-" : s->format, v.ok ? 1 : 0, v.ok ? v.detail.c_str() : v.reason.c_str());
      }
    }
"""


def sniff_samples() -> list:
    rng = random.Random(0)
    samples = [b"", b"<html>", b"\x00" * 32, b"P1\x0b1 1", b"P1\x0c", b"P7 ", b"P0\n", b"BM" + bytes(24), b"BM" + bytes(25)]
    for _, min_length, parts in contract.SIGNATURES:
        size = max(min_length, max(offset + len(magic) for offset, magic in parts))
        body = bytearray(rng.randbytes(size))
        for offset, magic in parts:
            body[offset:offset + len(magic)] = magic
        samples += [bytes(body), bytes(body[:min_length - 1]), bytes(body) + rng.randbytes(100)]
        for offset, magic in parts:  # one byte of one part changed
            changed = bytearray(body)
            changed[offset + len(magic) - 1] ^= 0x01
            samples.append(bytes(changed))
    return samples + [rng.randbytes(rng.randrange(0, 40)) for _ in range(300)]


@needs_gxx
def test_cpp_sniffing_agrees_with_python(tmp_path):
    program = compile_program(tmp_path, "sniff", SNIFF, ["sniff.cc", "../shared/image_header.cc"])
    samples = sniff_samples()
    lines = run(program, "".join(s.hex() + "\n" for s in samples))
    assert len(lines) == len(samples)
    for body, line in zip(samples, lines):
        kind = sniff.sniff(body)
        verdict = sniff.check(body)  # the Python engine's rule (headers read by the core kernels)
        ok = verdict.reason is None
        expected = f"{kind or '-'} {int(ok)} {verdict.transcode and verdict.detail or '' if ok else verdict.reason}"
        assert line.rstrip() == expected.rstrip(), body


# -- classifying an attempt's end -----------------------------------------------------------

CLASSIFY = r"""
    #include <curl/curl.h>
    #include <cstdio>
    #include <iostream>
    #include <map>
    #include <sstream>
    #include "classify.h"
    #define CODE(name) {#name, name}
    int main() {
      const std::map<std::string, int> codes = {
          CODE(CURLE_OK), CODE(CURLE_WRITE_ERROR), CODE(CURLE_FILESIZE_EXCEEDED), CODE(CURLE_OPERATION_TIMEDOUT),
          CODE(CURLE_COULDNT_RESOLVE_HOST), CODE(CURLE_COULDNT_RESOLVE_PROXY), CODE(CURLE_TOO_MANY_REDIRECTS),
          CODE(CURLE_URL_MALFORMAT), CODE(CURLE_UNSUPPORTED_PROTOCOL), CODE(CURLE_PARTIAL_FILE),
          CODE(CURLE_BAD_CONTENT_ENCODING), CODE(CURLE_PEER_FAILED_VERIFICATION), CODE(CURLE_SSL_CACERT_BADFILE),
          CODE(CURLE_SSL_CERTPROBLEM), CODE(CURLE_SSL_CONNECT_ERROR), CODE(CURLE_COULDNT_CONNECT),
          CODE(CURLE_RECV_ERROR), CODE(CURLE_SEND_ERROR), CODE(CURLE_GOT_NOTHING)};
      tfeed::fetch::Options opt{};
      opt.read_timeout = 2.5, opt.max_bytes = 1000, opt.max_redirects = 5;
      std::string line;
      while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        std::string name;
        tfeed::fetch::AttemptEnd end;
        in >> name >> end.status >> end.too_large >> end.read_timed_out >> end.retry_after;
        end.curl_code = codes.at(name);
        end.error = "curl says no";
        tfeed::fetch::Verdict v = tfeed::fetch::Classify(end, opt);
        std::printf("%d|%s|%d|%g|%s\n", v.ok, v.reason.c_str(), v.retryable, v.retry_after, v.detail.c_str());
      }
    }
"""

# (curl code, HTTP status, too_large, read_timed_out, Retry-After) -> (reason, retryable), with the
# Python engine's counterpart (tfeed/fetching/python/download.py) where there is one.
CURL_CASES = [
    (("CURLE_OPERATION_TIMEDOUT", 0, 0, 0, -1), (errors.TIMEOUT, True)),         # asyncio.TimeoutError
    (("CURLE_OPERATION_TIMEDOUT", 0, 0, 1, -1), (errors.TIMEOUT, True)),         # sock_read timeout
    (("CURLE_OK", 200, 0, 1, -1), (errors.TIMEOUT, True)),                       # the read-timeout scan wins
    (("CURLE_COULDNT_RESOLVE_HOST", 0, 0, 0, -1), (errors.DNS, True)),           # ClientConnectorDNSError
    (("CURLE_COULDNT_RESOLVE_PROXY", 0, 0, 0, -1), (errors.DNS, True)),
    (("CURLE_COULDNT_CONNECT", 0, 0, 0, -1), (errors.CONNECTION, True)),         # ClientConnectorError
    (("CURLE_RECV_ERROR", 0, 0, 0, -1), (errors.CONNECTION, True)),              # ClientError / OSError
    (("CURLE_SEND_ERROR", 0, 0, 0, -1), (errors.CONNECTION, True)),
    (("CURLE_GOT_NOTHING", 0, 0, 0, -1), (errors.CONNECTION, True)),
    (("CURLE_WRITE_ERROR", 0, 0, 0, -1), (errors.CONNECTION, True)),
    (("CURLE_WRITE_ERROR", 0, 1, 0, -1), (errors.TOO_LARGE, False)),             # body exceeds max_bytes
    (("CURLE_FILESIZE_EXCEEDED", 0, 0, 0, -1), (errors.TOO_LARGE, False)),       # Content-Length > max_bytes
    (("CURLE_TOO_MANY_REDIRECTS", 0, 0, 0, -1), (errors.TOO_MANY_REDIRECTS, False)),  # TooManyRedirects
    (("CURLE_URL_MALFORMAT", 0, 0, 0, -1), (errors.INVALID_URL, False)),         # InvalidURL
    (("CURLE_UNSUPPORTED_PROTOCOL", 0, 0, 0, -1), (errors.INVALID_URL, False)),  # NonHttpUrlClientError
    (("CURLE_PARTIAL_FILE", 0, 0, 0, -1), (errors.TRUNCATED, True)),             # ClientPayloadError
    (("CURLE_BAD_CONTENT_ENCODING", 0, 0, 0, -1), (errors.TRUNCATED, True)),
    (("CURLE_PEER_FAILED_VERIFICATION", 0, 0, 0, -1), (errors.TLS, False)),     # ClientConnectorCertificateError
    (("CURLE_SSL_CACERT_BADFILE", 0, 0, 0, -1), (errors.TLS, False)),
    (("CURLE_SSL_CERTPROBLEM", 0, 0, 0, -1), (errors.TLS, False)),
    (("CURLE_SSL_CONNECT_ERROR", 0, 0, 0, -1), (errors.TLS, True)),              # ClientConnectorSSLError
]


def classify(tmp_path, cases):
    program = compile_program(tmp_path, "classify", CLASSIFY, ["classify.cc"])
    stdin = "".join(" ".join(str(x) for x in case) + "\n" for case in cases)
    rows = [line.split("|", 4) for line in run(program, stdin)]
    return [(bool(int(ok)), reason, bool(int(retryable)), float(after), detail) for ok, reason, retryable, after, detail
            in rows]


@needs_gxx
def test_classify_maps_curl_errors_as_the_python_engine_does(tmp_path):
    got = classify(tmp_path, [case for case, _ in CURL_CASES])
    assert [(reason, retryable) for ok, reason, retryable, _, _ in got] == [expected for _, expected in CURL_CASES]
    assert not any(ok for ok, *_ in got)
    details = {case[0] + ("+read" if case[3] else "") + ("+large" if case[2] else ""): d
               for (case, _), (*_, d) in zip(CURL_CASES, got)}
    assert details["CURLE_OPERATION_TIMEDOUT+read"] == "no data within read_timeout 2.5s"
    assert details["CURLE_WRITE_ERROR+large"] == "body exceeds max_bytes 1000"
    assert details["CURLE_FILESIZE_EXCEEDED"] == "Content-Length > max_bytes 1000"
    assert details["CURLE_TOO_MANY_REDIRECTS"] == "more than 5 redirects"
    assert details["CURLE_COULDNT_CONNECT"] == "curl says no"


@needs_gxx
def test_classify_maps_http_statuses_as_the_python_engine_does(tmp_path):
    statuses = [200, 204, 301, 399, *range(400, 600)]
    got = classify(tmp_path, [("CURLE_OK", s, 0, 0, 7 if s == 503 else -1) for s in statuses])
    assert len(got) == len(statuses)
    for status, (ok, reason, retryable, after, detail) in zip(statuses, got):
        if status < 400:
            assert (ok, reason, retryable) == (True, "", False)
            continue
        # download.py: errors.http_reason(status), contract.is_retryable_status(status), Retry-After honoured
        assert (ok, reason, retryable) == (False, errors.http_reason(status), contract.is_retryable_status(status))
        assert detail == f"HTTP {status}" and after == (7 if status == 503 else -1)


# -- the libraries ----------------------------------------------------------------------------

def test_no_kernel_source_is_longer_than_400_lines():
    files = [p for p in KERNELS.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files
    lengths = {str(p.relative_to(KERNELS)): len(p.read_text().splitlines()) for p in files}
    assert {name: n for name, n in lengths.items() if n > 400} == {}


def test_unity_sources_include_every_file_of_their_library():
    for lib in build.LIBRARIES.values():
        included = lib.unity_source().splitlines()
        own = sorted(lib.directory.glob("*.cc"))
        shared = sorted((KERNELS / "shared").glob("*.cc"))
        assert included == [f'#include "{source}"' for source in own + shared] and own and shared
    assert not (KERNELS / "fetch" / "contract.h").exists()  # rendered into each build's directory only


@needs_gxx
def test_core_builds_and_loads_without_curl_headers(tmp_path):
    """A compiler that cannot find curl/curl.h disables the fetch library only, with one warning."""
    wrapper = tmp_path / "g++-without-curl"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        for arg; do
          case "$arg" in *fetch_unity.cc)
            echo "curl_loader.h:11:10: fatal error: curl/curl.h: No such file or directory" >&2; exit 1;;
          esac
        done
        exec {GXX} "$@"
    """))
    wrapper.chmod(0o755)
    cache = tmp_path / "ops"
    script = textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("always")
        import tensorflow as tf
        with warnings.catch_warnings(record=True) as caught:
            from tfeed import kernels
            core = kernels.load_core({str(cache)!r}, compiler={str(wrapper)!r})
            fetch = kernels.load_fetch({str(cache)!r}, compiler={str(wrapper)!r})
            again = kernels.load_fetch({str(cache)!r}, compiler={str(wrapper)!r})
        mine = [str(w.message) for w in caught if issubclass(w.category, kernels.NativeUnavailableWarning)]
        assert core is not None and fetch is None and again is None, (core, fetch)
        assert len(mine) == 1 and "curl/curl.h" in mine[0] and "fetch" in mine[0], mine
        kept = core.tfeed_keep_rows([True, False, True], [tf.constant([1, 2, 3])])[0]
        assert kept.numpy().tolist() == [1, 3]
        print("OK")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]

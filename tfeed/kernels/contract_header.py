"""Render ``contract.h``, the C++ view of :mod:`tfeed.contract`.

The fetch library's sources include ``contract.h`` and take every rule of
the fetch contract from it: the failure reason strings, which HTTP statuses
are retried and the backoff, the magic-byte signatures, the cache entry
format and the failures the cache remembers.  :mod:`tfeed.kernels.build`
renders it into each build's own directory (never into the source tree) and
hashes the text with the sources, so changing the contract rebuilds the
library.  ``python -m tfeed.kernels.contract_header`` prints it.
"""

from __future__ import annotations

import re
import struct
import sys
from typing import Iterable, List, Tuple

from tfeed import contract, errors

GUARD = "TFEED_KERNELS_CONTRACT_H_"
# tfeed.fetching.sniff.sniff matches signatures against data[:16]; the C++
# sniffer against the whole body, so every part must end within 16 bytes.
SNIFF_WINDOW = 16


def render() -> str:
    """The text of ``contract.h`` for the current :mod:`tfeed.contract`."""
    sections = [_prologue(), _reasons(), _retries(), _signatures(), _cache(), _calls(), _limiter(), _loop(), _manners(), _epilogue()]
    return "\n".join(sections)


IMAGE_GUARD = "TFEED_KERNELS_IMAGE_CONTRACT_H_"


def render_image() -> str:
    """The text of ``image_contract.h``: the image header parser's part of the
    contract (format codes, the default pixel limit), which both libraries
    include (kernels/shared/image_header.cc), so the core library does not
    rebuild when the fetch rules change."""
    codes = "\n".join(f"  {identifier('format_' + name)} = {code}," for code, name in enumerate(contract.HEADER_FORMATS))
    names = ", ".join(c_string(name.encode()) for name in contract.HEADER_FORMATS)
    return f"""\
// Generated from tfeed/contract.py by tfeed/kernels/contract_header.py; do not edit.
#ifndef {IMAGE_GUARD}
#define {IMAGE_GUARD}

#include <cstdint>

namespace tfeed {{
namespace contract {{

// The header parser's format codes (tfeed.contract.HEADER_FORMATS).
enum HeaderFormat {{
{codes}
}};
inline constexpr const char* kHeaderFormats[] = {{{names}}};
inline constexpr int kHeaderFormatCount = {len(contract.HEADER_FORMATS)};
inline constexpr std::int64_t kDefaultMaxPixels = {int(contract.DEFAULT_MAX_PIXELS)};
inline constexpr std::size_t kBmffHeaderWindow = {int(contract.BMFF_HEADER_WINDOW)};
inline constexpr const char* kFormatRefusal = {c_string(contract.FORMAT_REFUSAL.encode())};

}}  // namespace contract
}}  // namespace tfeed

#endif  // {IMAGE_GUARD}
"""


def _limiter() -> str:
    lines = ["// -- per-host adaptive concurrency (tfeed/fetching/limiter.py; kernels/fetch/limiter.cc)"]
    for name in contract.LIMITER_CONSTANTS:
        value = getattr(contract, name)
        kind = "int" if isinstance(value, int) else "double"
        lines.append(f"inline constexpr {kind} {identifier(name.lower())} = {value!r};")
    statuses = ", ".join(str(status) for status in contract.OVERLOAD_STATUSES)
    lines.append(f"inline constexpr long kOverloadStatuses[] = {{{statuses}}};")
    return "\n".join(lines) + "\n"


def _loop() -> str:
    lines = ["// -- the fetch loop's place in the scheduler (kernels/fetch/loop_priority.cc)",
             f"inline constexpr const char* kLoopRealtimeSwitch = {c_string(contract.LOOP_REALTIME_SWITCH.encode())};"]
    lines += [f"inline constexpr double {identifier(name.lower())} = {float(getattr(contract, name))!r};"
              for name in contract.LOOP_CONSTANTS]
    return "\n".join(lines) + "\n"


def _manners() -> str:
    return ("// -- crawler manners: X-Robots-Tag opt-out (tfeed.contract.opts_out)\n"
            f"inline constexpr char kOptOutHeader[] = {c_string(contract.OPT_OUT_HEADER.encode())};\n"
            f"inline constexpr char kOptOutSeparators[] = {c_string(contract.OPT_OUT_SEPARATORS.encode())};\n"
            f"inline constexpr char kOptOutDetail[] = {c_string(contract.OPT_OUT_DETAIL.encode())};\n"
            + _string_array("kOptOutDirectives", contract.OPT_OUT_DIRECTIVES))


def identifier(value: str) -> str:
    """The C++ constant naming a reason: ``too_many_redirects`` -> ``kTooManyRedirects``."""
    return "k" + "".join(word[:1].upper() + word[1:] for word in re.split(r"[^0-9A-Za-z]+", value) if word)


def c_string(data: bytes) -> str:
    """``data`` as a C++ string literal; octal escapes (always three digits) never run on."""
    out = []
    for byte in data:
        char = chr(byte)
        if 32 <= byte < 127 and char not in '"\\?':
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def cache_header_fields() -> List[Tuple[str, int, int]]:
    """``(field, offset, size)`` of the cache header: the magic, the body length, its crc32.

    Raises ValueError when :data:`tfeed.contract.CACHE_HEADER_FORMAT` is not the
    little-endian magic | u64 | u32 layout the C++ cache reader is written for.
    """
    fmt = contract.CACHE_HEADER_FORMAT
    codes = re.findall(r"(\d*)([A-Za-z])", fmt[1:])
    expected = [(str(len(contract.CACHE_MAGIC)), "s"), ("", "Q"), ("", "I")]
    if not fmt.startswith("<") or codes != expected:
        raise ValueError(f"CACHE_HEADER_FORMAT {fmt!r}: the native cache reads '<{len(contract.CACHE_MAGIC)}sQI'")
    if struct.calcsize(fmt) != contract.CACHE_HEADER_BYTES:
        raise ValueError(f"CACHE_HEADER_BYTES {contract.CACHE_HEADER_BYTES} != calcsize({fmt!r})")
    fields, offset = [], 0
    for name, (count, code) in zip(("Magic", "Length", "Crc"), codes):
        size = struct.calcsize("<" + count + code)
        fields.append((name, offset, size))
        offset += size
    return fields


def _prologue() -> str:
    return f"""\
// Generated from tfeed/contract.py by tfeed/kernels/contract_header.py; do not edit.
// The fetch contract, shared with the Python engine: see tfeed/contract.py.
#ifndef {GUARD}
#define {GUARD}

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>

namespace tfeed {{
namespace contract {{
"""


def _epilogue() -> str:
    return f"""\
}}  // namespace contract
}}  // namespace tfeed

#endif  // {GUARD}
"""


def _string_array(name: str, values: Iterable[str]) -> str:
    values = list(values)
    items = ", ".join(identifier(v) if v in contract.REASONS else c_string(v.encode()) for v in values)
    return (f"inline constexpr const char* {name}[] = {{{items}}};\n"
            f"inline constexpr int {name}Count = {len(values)};\n")


def _reasons() -> str:
    lines = ["// -- failure reasons (besides http_<code> for HTTP client errors)"]
    lines += [f"inline constexpr char {identifier(r)}[] = {c_string(r.encode())};" for r in contract.REASONS]
    prefix = errors.http_reason(400)[:-len("400")]
    lines.append(f"inline constexpr char kHttpReasonPrefix[] = {c_string(prefix.encode())};")
    return "\n".join(lines) + "\n" + _string_array("kReasons", contract.REASONS)


def _retries() -> str:
    statuses = ", ".join(str(s) for s in contract.RETRYABLE_STATUSES)
    if errors.HTTP_5XX not in contract.REASONS:
        raise ValueError(f"REASONS lacks {errors.HTTP_5XX!r}, the reason of every server error")
    server = identifier(errors.HTTP_5XX)
    return f"""\
// -- retries: a final status >= kFirstServerError, or one of kRetryableStatuses, is retried
inline constexpr long kRetryableStatuses[] = {{{statuses}}};
inline constexpr long kFirstServerError = {int(contract.FIRST_SERVER_ERROR)};
inline constexpr double kBackoffFixedShare = {float(contract.BACKOFF_FIXED_SHARE)!r};

inline constexpr bool IsRetryableStatus(long status) {{
  if (status >= kFirstServerError) return true;
  for (long retryable : kRetryableStatuses)
    if (status == retryable) return true;
  return false;
}}

// The longest wait before retry number `attempt` (1-based), seconds; the delay
// is ceiling * kBackoffFixedShare plus a uniform draw from the rest.
inline double BackoffCeiling(int attempt, double backoff, double max_backoff) {{
  return std::min(max_backoff, backoff * std::ldexp(1.0, attempt - 1));
}}

// The reason of a final HTTP error status: {server} for server errors, else http_<status>.
inline std::string HttpReason(long status) {{
  return status >= kFirstServerError ? std::string({server}) : kHttpReasonPrefix + std::to_string(status);
}}
"""


def _signatures() -> str:
    most = max(len(parts) for _, _, parts in contract.SIGNATURES)
    rows = []
    for name, min_length, parts in contract.SIGNATURES:
        for offset, magic in parts:
            if offset + len(magic) > SNIFF_WINDOW:
                raise ValueError(f"signature {name!r}: bytes past {SNIFF_WINDOW}, which Python's sniff never reads")
        cells = ", ".join(f"{{{offset}, {c_string(magic)}, {len(magic)}}}" for offset, magic in parts)
        decodable = "true" if name in contract.DECODABLE else "false"
        rows.append(f"    {{{c_string(name.encode())}, {min_length}, {decodable}, {len(parts)}, {{{cells}}}}},")
    decodable = _string_array("kDecodable", contract.DECODABLE) + _string_array("kUnsupported", contract.UNSUPPORTED)
    return f"""\
// -- what counts as an image: a body matches a signature when it has at least
// min_length bytes and every part's bytes at its offset; the first match wins.
// Decodable formats go to tf.io.decode_image, unsupported ones fail as
// unsupported_format, the others are transcoded.
{decodable}\
inline constexpr int kMaxSignatureParts = {most};
struct SignaturePart {{
  std::size_t offset;
  const char* bytes;
  std::size_t length;
}};
struct Signature {{
  const char* format;
  std::size_t min_length;
  bool decodable;
  int part_count;
  SignaturePart parts[kMaxSignatureParts];
}};
inline constexpr Signature kSignatures[] = {{
{chr(10).join(rows)}
}};
inline constexpr int kSignatureCount = {len(contract.SIGNATURES)};
"""


def _cache() -> str:
    fields = "".join(f"inline constexpr std::size_t kCache{name}Offset = {offset}, kCache{name}Bytes = {size};\n"
                     for name, offset, size in cache_header_fields())
    return f"""\
// -- the disk cache: an entry is magic | body length (u64 LE) | crc32 (u32 LE) | body
inline constexpr char kCacheMagic[] = {c_string(contract.CACHE_MAGIC)};
inline constexpr std::size_t kCacheHeaderBytes = {contract.CACHE_HEADER_BYTES};
{fields}\
// Failures remembered in the cache (<entry>.fail), so later epochs skip dead URLs.
{_string_array("kPermanentReasons", contract.PERMANENT_REASONS)}"""


def _calls() -> str:
    return f"""\
// -- calls
inline constexpr int kGroupSize = {int(contract.GROUP_SIZE)};  // URLs per fetch call

// -- local files under file_root: symbolic links followed per path, at most
inline constexpr int kMaxSymlinks = {int(contract.MAX_SYMLINKS)};
"""


if __name__ == "__main__":
    sys.stdout.write(render())

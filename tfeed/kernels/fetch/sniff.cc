#include "sniff.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

namespace tfeed {
namespace fetch {

namespace c = ::tfeed::contract;

const c::Signature* Sniff(const char* data, size_t n) {
  for (const c::Signature& signature : c::kSignatures) {
    if (n < signature.min_length) continue;
    bool match = true;
    for (int i = 0; i < signature.part_count && match; ++i) {
      const c::SignaturePart& part = signature.parts[i];
      match = part.offset + part.length <= n && std::memcmp(data + part.offset, part.bytes, part.length) == 0;
    }
    if (match) return &signature;
  }
  return nullptr;
}

std::string Preview(const char* p, size_t n) {
  std::string out = "b'";
  for (size_t i = 0; i < std::min<size_t>(n, 24); ++i) {
    unsigned char c = p[i];
    char buf[8];
    if (c == '\\' || c == '\'') { out += '\\'; out += c; }
    else if (c >= 32 && c < 127) out += c;
    else { std::snprintf(buf, sizeof buf, "\\x%02x", c); out += buf; }
  }
  return out + "'";
}

bool IsUnsupported(const char* format) {
  for (const char* unsupported : c::kUnsupported)
    if (std::strcmp(format, unsupported) == 0) return true;
  return false;
}

Verdict CheckImage(const char* data, size_t n, bool pass_transcodable, int64_t max_pixels) {
  Verdict v;
  const c::Signature* signature = Sniff(data, n);
  if (signature == nullptr) {
    v.reason = c::kNotImage;
    v.detail = "body starts with " + Preview(data, n);
    return v;
  }
  const image::Header header = image::ReadHeader(reinterpret_cast<const unsigned char*>(data), n);
  std::string format = header.format == c::kFormatAvif ? "avif" : signature->format;
  if (max_pixels > 0 && image::Pixels(header) > max_pixels) {
    v.reason = c::kTooLarge;
    v.detail = format + " header declares " + std::to_string(header.width) + "x" + std::to_string(header.height) +
               " pixels > max_pixels " + std::to_string(max_pixels);
  } else if (IsUnsupported(format.c_str())) {
    v.reason = c::kUnsupportedFormat;
    v.detail = format + ": no installed decoder reads it";
  } else if (signature->decodable && !header.animated) {
    v.ok = true;
  } else {  // the caller transcodes it; the detail names the format
    if (header.animated) format += " (animated)";
    v.ok = pass_transcodable;
    v.detail = format;
    if (!v.ok) {  // graph-only pipelines (tf.data service workers) cannot run the Python transcoder
      v.reason = c::kUnsupportedFormat;
      v.detail += " needs transcoding (OpenCV, in Python), which graph-only pipelines such as tf.data service "
                  "workers cannot run";
    }
  }
  return v;
}

}  // namespace fetch
}  // namespace tfeed

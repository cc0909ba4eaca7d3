#include "sniff.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

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

Verdict CheckImage(const char* data, size_t n, bool pass_transcodable) {
  Verdict v;
  const c::Signature* signature = Sniff(data, n);
  if (signature == nullptr) {
    v.reason = c::kNotImage;
    v.detail = "body starts with " + Preview(data, n);
  } else if (signature->decodable) {
    v.ok = true;
  } else {  // the caller transcodes it; the detail names the format
    v.ok = pass_transcodable;
    v.detail = signature->format;
    if (!v.ok) v.reason = c::kDecodeError, v.detail += " needs transcoding (pass_transcodable=False)";
  }
  return v;
}

}  // namespace fetch
}  // namespace tfeed

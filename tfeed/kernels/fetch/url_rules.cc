#include "url_rules.h"

#include <cctype>

namespace tfeed {
namespace fetch {

// The host of scheme://[user@]host[:port]/... as written: tfeed.urls.host_of.
std::string HostOf(const std::string& url) {
  const size_t start = url.find("://");
  if (start == std::string::npos) return "";
  std::string authority = url.substr(start + 3, url.find_first_of("/?#", start + 3) - (start + 3));
  const size_t at = authority.rfind('@');
  if (at != std::string::npos) authority = authority.substr(at + 1);
  return authority.compare(0, 1, "[") == 0 ? authority : authority.substr(0, authority.find(':'));
}

// Whether `host` reads as IPv4 but not as four plain decimal parts: tfeed.urls.is_legacy_ipv4.
bool IsLegacyIpv4(const std::string& host) {
  if (host.empty() || host.find_first_not_of("0123456789abcdefABCDEFxX.") != std::string::npos) return false;
  std::string trimmed = host.substr(0, host.find_last_not_of('.') + 1);
  const std::string last = trimmed.substr(trimmed.rfind('.') == std::string::npos ? 0 : trimmed.rfind('.') + 1);
  if (last.empty() || !std::isdigit(static_cast<unsigned char>(last[0]))) return false;
  int parts = 0;
  size_t begin = 0;
  while (begin <= trimmed.size()) {
    size_t end = trimmed.find('.', begin);
    if (end == std::string::npos) end = trimmed.size();
    const std::string part = trimmed.substr(begin, end - begin);
    const bool plain = !part.empty() && part.size() <= 3 && part.find_first_not_of("0123456789") == std::string::npos &&
                       (part == "0" || part[0] != '0') && std::stoi(part) < 256;
    if (!plain) return true;
    ++parts;
    begin = end + 1;
  }
  return parts != 4 || host.back() == '.';
}

// Why the op refuses `url` as given, or "": tfeed.urls.refusal (a control
// character anywhere, a space around a URL, a space in an http(s) URL, a
// legacy numeric IPv4 host).
std::string Refusal(const std::string& url, const std::string& scheme) {
  for (unsigned char ch : url) {
    if (ch < 0x20 || ch == 0x7f) return "URL contains a control character";
  }
  if (url.find("://") != std::string::npos && !url.empty() && (url.front() == ' ' || url.back() == ' '))
    return "URL has a leading or trailing space";
  if (scheme != "http" && scheme != "https") return "";
  if (url.find(' ') != std::string::npos) return "URL contains a space";
  if (IsLegacyIpv4(HostOf(url)))
    return "host is a numeric IPv4 address in a legacy form (2130706433, 0x7f.1, 127.1): write a.b.c.d";
  return "";
}

}  // namespace fetch
}  // namespace tfeed

// The URLs both engines refuse as given (tfeed/urls.py's refusal): never
// truncated at a NUL, never guessed at.  The source stage normalises URLs
// first (tfeed.urls.normalize), so these meet only URLs handed to the op directly.

#ifndef TFEED_KERNELS_FETCH_URL_RULES_H_
#define TFEED_KERNELS_FETCH_URL_RULES_H_

#include <string>

namespace tfeed {
namespace fetch {

// The host of scheme://[user@]host[:port]/... as written: tfeed.urls.host_of.
std::string HostOf(const std::string& url);

// Whether `host` reads as IPv4 but not as four plain decimal parts: tfeed.urls.is_legacy_ipv4.
bool IsLegacyIpv4(const std::string& host);

// Why `url` (of lower-case `scheme`) is invalid_url as given, or "".
std::string Refusal(const std::string& url, const std::string& scheme);

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_URL_RULES_H_

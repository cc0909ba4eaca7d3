#include "address_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdlib>
#include <cstring>

#include "transfer.h"

namespace tfeed {
namespace fetch {
namespace {

// Option numbers and bits of curl's ABI (deprecated in newer headers, still served).
constexpr CURLoption kOptProtocolsMask = static_cast<CURLoption>(CURLOPTTYPE_LONG + 181);
constexpr CURLoption kOptRedirProtocolsMask = static_cast<CURLoption>(CURLOPTTYPE_LONG + 182);
constexpr long kProtoHttp = 1L << 0, kProtoHttps = 1L << 1;

bool PrefixMatches(const unsigned char* a, const unsigned char* b, int bits) {
  const int whole = bits / 8, rest = bits % 8;
  if (std::memcmp(a, b, whole) != 0) return false;
  if (rest == 0) return true;
  const unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

// The address bytes to check: IPv4 (4) or IPv6 (16); an IPv4-mapped IPv6 address as IPv4.
int AddressBytes(int family, const unsigned char* raw, unsigned char* out) {
  static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family == AF_INET6 && std::memcmp(raw, kMapped, 12) == 0) {
    std::memcpy(out, raw + 12, 4);
    return AF_INET;
  }
  std::memcpy(out, raw, family == AF_INET ? 4 : 16);
  return family;
}

const DeniedNetwork* Match(int family, const unsigned char* raw, const std::vector<DeniedNetwork>& networks) {
  unsigned char bytes[16];
  const int checked = AddressBytes(family, raw, bytes);
  for (const DeniedNetwork& n : networks) {
    if (n.family == checked && PrefixMatches(bytes, n.bytes, n.prefix)) return &n;
  }
  return nullptr;
}

const DeniedNetwork& Unparsable() {
  static const DeniedNetwork kUnparsable = [] {
    DeniedNetwork n;
    n.text = "unparsable";
    return n;
  }();
  return kUnparsable;
}

}  // namespace

bool ParseNetworks(const std::vector<std::string>& cidrs, std::vector<DeniedNetwork>* out, std::string* error) {
  for (const std::string& cidr : cidrs) {
    DeniedNetwork n;
    n.text = cidr;
    const size_t slash = cidr.find('/');
    const std::string ip = cidr.substr(0, slash);
    n.family = ip.find(':') == std::string::npos ? AF_INET : AF_INET6;
    const int bits = n.family == AF_INET ? 32 : 128;
    char* end = nullptr;
    const long prefix = slash == std::string::npos ? bits : std::strtol(cidr.c_str() + slash + 1, &end, 10);
    const bool prefix_ok = slash == std::string::npos || (end != nullptr && *end == 0 && end != cidr.c_str() + slash + 1);
    if (inet_pton(n.family, ip.c_str(), n.bytes) != 1 || !prefix_ok || prefix < 0 || prefix > bits) {
      *error = "deny_networks entry '" + cidr + "' is not an IP network";
      return false;
    }
    n.prefix = static_cast<int>(prefix);
    out->push_back(n);
  }
  return true;
}

const DeniedNetwork* DeniedBy(const sockaddr* addr, const std::vector<DeniedNetwork>& networks) {
  if (networks.empty()) return nullptr;
  if (addr->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    return Match(AF_INET, reinterpret_cast<const unsigned char*>(&in->sin_addr), networks);
  }
  if (addr->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    return Match(AF_INET6, in6->sin6_addr.s6_addr, networks);
  }
  return &Unparsable();  // a Unix socket or anything else: fail closed
}

const DeniedNetwork* DeniedByText(const char* ip, const std::vector<DeniedNetwork>& networks) {
  if (networks.empty()) return nullptr;
  unsigned char raw[16];
  if (ip == nullptr) return &Unparsable();
  std::string text(ip);
  text = text.substr(0, text.find('%'));  // a zone id (fe80::1%eth0)
  if (inet_pton(AF_INET, text.c_str(), raw) == 1) return Match(AF_INET, raw, networks);
  if (inet_pton(AF_INET6, text.c_str(), raw) == 1) return Match(AF_INET6, raw, networks);
  return &Unparsable();
}

std::string BlockedDetail(const std::string& address, const DeniedNetwork& network) {
  return "address " + address + " is in denied network " + network.text + " (deny_networks)";
}

bool ConfineProtocols(CURL* easy, const std::string& protocols) {
  const CurlApi& api = Curl();
  if (api.easy_setopt(easy, kOptProtocolsStr, protocols.c_str()) == CURLE_OK) {
    return api.easy_setopt(easy, kOptRedirProtocolsStr, protocols.c_str()) == CURLE_OK;
  }
  long mask = 0;
  if (protocols.find("https") != std::string::npos) mask |= kProtoHttps;
  if (protocols == "http" || protocols.find("http,") != std::string::npos) mask |= kProtoHttp;
  return api.easy_setopt(easy, kOptProtocolsMask, mask) == CURLE_OK &&
         api.easy_setopt(easy, kOptRedirProtocolsMask, mask) == CURLE_OK;
}

curl_socket_t OpenCheckedSocket(void* clientp, curlsocktype, struct curl_sockaddr* address) {
  auto* t = static_cast<Transfer*>(clientp);
  const DeniedNetwork* denied = DeniedBy(&address->addr, t->batch->opt->deny_networks);
  if (denied != nullptr) {
    char text[INET6_ADDRSTRLEN] = "?";
    const sockaddr* sa = &address->addr;
    const void* raw = sa->sa_family == AF_INET ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(sa)->sin_addr)
                                               : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr);
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) inet_ntop(sa->sa_family, raw, text, sizeof text);
    t->blocked = BlockedDetail(text, *denied);
    return CURL_SOCKET_BAD;
  }
  return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

}  // namespace fetch
}  // namespace tfeed

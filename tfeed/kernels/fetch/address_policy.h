// The address policy (tfeed/addresses.py): networks a transfer may not
// connect to, checked on the address of every socket libcurl opens (DNS
// answers, literal IPs in any form, redirects) and again before each request
// (a pooled connection reused by a transfer with a stricter policy), plus the
// confinement of requests and redirects to http(s) on every libcurl version.

#ifndef TFEED_KERNELS_FETCH_ADDRESS_POLICY_H_
#define TFEED_KERNELS_FETCH_ADDRESS_POLICY_H_

#include <sys/socket.h>

#include <string>
#include <vector>

#include "curl_loader.h"
#include "options.h"

namespace tfeed {
namespace fetch {

// Parses CIDR strings ("10.0.0.0/8", "fe80::/10"); false with *error naming the bad entry.
bool ParseNetworks(const std::vector<std::string>& cidrs, std::vector<DeniedNetwork>* out, std::string* error);

// The denied network containing `addr` (an IPv4-mapped IPv6 address is
// checked as IPv4), or nullptr.  An address of another family is denied
// (fail closed) when any network is listed.
const DeniedNetwork* DeniedBy(const sockaddr* addr, const std::vector<DeniedNetwork>& networks);

// The same for a numeric address string (libcurl's CURLINFO_PRIMARY_IP form).
const DeniedNetwork* DeniedByText(const char* ip, const std::vector<DeniedNetwork>& networks);

// "address A is in denied network N (deny_networks)": the Python engine's wording.
std::string BlockedDetail(const std::string& address, const DeniedNetwork& network);

// Sets CURLOPT_PROTOCOLS_STR / CURLOPT_REDIR_PROTOCOLS_STR to `protocols`
// ("http,https"), or on libcurl < 7.85 the CURLOPT_PROTOCOLS /
// CURLOPT_REDIR_PROTOCOLS bitmasks.  False when neither could be set: the
// caller must not start the transfer (fail closed).
bool ConfineProtocols(CURL* easy, const std::string& protocols);

// CURLOPT_OPENSOCKETFUNCTION: `clientp` is the Transfer; refuses a denied
// address before any packet is sent (the transfer ends CURLE_COULDNT_CONNECT
// with Transfer::blocked set).
curl_socket_t OpenCheckedSocket(void* clientp, curlsocktype purpose, struct curl_sockaddr* address);

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_ADDRESS_POLICY_H_

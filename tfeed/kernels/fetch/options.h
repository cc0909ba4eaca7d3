// The settings of one fetch kernel (one tfeed.FetchConfig), read from its attributes.

#ifndef TFEED_KERNELS_FETCH_OPTIONS_H_
#define TFEED_KERNELS_FETCH_OPTIONS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tfeed {
namespace fetch {

// One network of FetchConfig.deny_networks (address_policy.h).
struct DeniedNetwork {
  int family = 0;                // AF_INET or AF_INET6
  unsigned char bytes[16] = {};  // the network address (4 bytes used for AF_INET)
  int prefix = 0;                // prefix length in bits
  std::string text;              // "10.0.0.0/8", as given
};

struct Options {
  double connect_timeout, read_timeout, deadline, backoff, max_backoff, dns_cache_ttl;
  int64_t retries, max_redirects, max_bytes, max_in_flight, connections_per_host;
  int64_t max_pixels = 0;  // a header declaring more pixels is too_large; 0: no limit
  int64_t max_in_flight_bytes = int64_t{512} << 20;  // bodies held (downloading or not yet returned) before admission pauses
  bool http = false, https = false, file = false, trust_env = false, pass_transcodable = false;
  bool verify_tls = true;
  std::string ca_file;  // "": the system's CAs
  std::vector<std::string> schemes;
  std::string user_agent, protocols;
  std::string cache_dir;  // "": no cache
  double remember_failures_s = 0;
  bool adaptive = true;        // per-host adaptive windows (hosts.h); false: fixed windows
  double host_patience = 300;  // seconds of nothing but overload before a host's URLs are given up
  double max_rps_per_host = 0;  // a fixed pace per host; 0: none
  bool respect_opt_out = true;  // X-Robots-Tag: noai / noimageai -> opted_out
  std::vector<DeniedNetwork> deny_networks;  // never connected to (address_policy.h)
  std::string file_root;  // "": local files anywhere; else only beneath it (file_root.h)
};

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_OPTIONS_H_

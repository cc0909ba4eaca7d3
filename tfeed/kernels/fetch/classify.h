// How an attempt ended, judged: success, or a failure reason (tfeed/errors.py)
// and whether a retry may help.  Pure: no socket, no libcurl calls, no
// TensorFlow, so it is tested alone (tests/test_kernels_build.py).  The
// mapping follows the Python engine's (tfeed/fetching/python/download.py).

#ifndef TFEED_KERNELS_FETCH_CLASSIFY_H_
#define TFEED_KERNELS_FETCH_CLASSIFY_H_

#include <string>

#include "options.h"

namespace tfeed {
namespace fetch {

struct Verdict {
  bool ok = false;
  std::string reason, detail;
  bool retryable = false;
  double retry_after = -1;
};

// What the event loop saw when an attempt ended.
struct AttemptEnd {
  int curl_code = 0;            // the transfer's CURLcode
  long status = 0;              // the final HTTP status (read when curl_code is CURLE_OK)
  double retry_after = -1;      // Retry-After in seconds, < 0 if absent (read for an HTTP error)
  bool too_large = false;       // the write callback refused the body at max_bytes
  bool read_timed_out = false;  // aborted after read_timeout seconds without data
  bool opted_out = false;       // the final response's X-Robots-Tag opts out (with respect_opt_out)
  bool connect_timed_out = false;  // no connection within the attempt's connect timeout
  std::string error;            // libcurl's message
  std::string blocked;          // the address policy refused the connection: why ("" if not)
};

Verdict Classify(const AttemptEnd& end, const Options& opt);

// Whether one raw header line (`Name: value\r\n`, as libcurl hands it over) is an
// X-Robots-Tag whose value carries an opt-out directive (tfeed.contract.opts_out).
bool HeaderOptsOut(const char* line, size_t size);

// `seconds` as printf's %g writes it (Python's str of the float, for round values).
std::string FormatSeconds(double seconds);

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_CLASSIFY_H_

// The fetch ops' interfaces (their kernels: kernels.cc).

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfeed {
namespace fetch {
namespace {

// Every output of both fetch ops has one row per input URL.
absl::Status OutputsShapedLikeUrls(tensorflow::shape_inference::InferenceContext* c) {
  for (int i = 0; i < c->num_outputs(); ++i) c->set_output(i, c->input(0));
  return absl::OkStatus();
}

}  // namespace

// The attributes of both fetch ops (see TfeedFetch's doc).
#define TFEED_FETCH_ATTRS \
    .Attr("connect_timeout: float = 10.0") \
    .Attr("read_timeout: float = 20.0") \
    .Attr("deadline: float = 60.0") \
    .Attr("retries: int = 3") \
    .Attr("backoff: float = 0.25") \
    .Attr("max_backoff: float = 8.0") \
    .Attr("max_redirects: int = 5") \
    .Attr("max_bytes: int = 33554432") \
    .Attr("max_pixels: int = 90000000") \
    .Attr("max_in_flight: int = 256") \
    .Attr("max_in_flight_bytes: int = 536870912") \
    .Attr("connections_per_host: int = 256") \
    .Attr("dns_cache_ttl: float = 300.0") \
    .Attr("schemes: list(string) = ['http', 'https']") \
    .Attr("trust_env: bool = false") \
    .Attr("user_agent: string = 'tfeed'") \
    .Attr("pass_transcodable: bool = false") \
    .Attr("cache_dir: string = ''") \
    .Attr("remember_failures_s: float = 86400.0") \
    .Attr("ca_file: string = ''") \
    .Attr("verify_tls: bool = true") \
    .Attr("adaptive: bool = true") \
    .Attr("host_patience: float = 300.0") \
    .Attr("max_requests_per_second_per_host: float = 0.0") \
    .Attr("respect_opt_out: bool = true") \
    .Attr("deny_networks: list(string) = []") \
    .Attr("file_root: string = ''")

REGISTER_OP("TfeedFetch")
    .Input("urls: string")
    .Output("bodies: string")
    .Output("reasons: string")
    .Output("attempts: int32")
    .Output("details: string")
    TFEED_FETCH_ATTRS
    .SetIsStateful()
    .SetShapeFn(OutputsShapedLikeUrls)
    .Doc(R"doc(
Downloads every URL; never fails for a bad URL.

bodies: the image bytes, "" where the URL failed.
reasons: "" for success, else a tfeed failure reason (timeout, connection, dns,
  too_large (body over max_bytes, or header over max_pixels), truncated,
  too_many_redirects, not_image, unsupported_format, decode_error,
  invalid_url, read_error, tls, rate_limited, opted_out, blocked_address,
  outside_file_root, http_<code> for 4xx, http_5xx).
attempts: tries made (1 = no retry; 0 = none: the URL was invalid, or it was
  answered from cache_dir -- a body, or a remembered permanent failure).
details: for a failure, a human explanation; for a success, "" or, with
  pass_transcodable, the format (tiff, jp2, pnm, avif, ico, "webp (animated)")
  the caller must transcode.
max_pixels: a body whose header declares more pixels counts as too_large
  (0: no limit); read before any decoder allocates.
cache_dir: a tfeed.DiskCache directory ("" for none): http(s) bodies are read
  from it and stored in it; permanent failures (http_404, http_410, not_image)
  are remembered for remember_failures_s seconds.  A hit refreshes the entry's
  mtime (LRU); the size cap is the caller's (tfeed.DiskCache.grew).
ca_file: PEM file of the CAs trusted for https ("" for the system's);
  verify_tls=false accepts any certificate.
deny_networks: CIDR networks never connected to (DNS answers, literal IPs,
  redirects and reused connections are all checked): such a URL fails
  blocked_address, without retries.
file_root: "" or a directory: local files (file:// URLs, plain paths) are
  read only when they resolve beneath it, else outside_file_root (never opened).
)doc");

REGISTER_OP("TfeedFetchPooled")
    .Input("urls: string")
    .Input("labels: int64")
    .Input("lot: int64")
    .Output("bodies: string")
    .Output("labels_out: int64")
    .Output("urls_out: string")
    .Output("reasons: string")
    .Output("attempts: int32")
    .Output("details: string")
    TFEED_FETCH_ATTRS
    .SetIsStateful()
    .SetShapeFn(OutputsShapedLikeUrls)
    .Doc(R"doc(
TfeedFetch for the calls of one iterator: the calls given the same lot (a
non-zero id unique to the iterator) share their results, so one slow URL does
not hold back the finished URLs of its group.  Each call returns as many rows
as it was given URLs, in completion order, each row one of the lot's URLs with
its label: across the lot's calls every URL appears exactly once.  Cancelling
any call (the iterator going away) cancels the lot's transfers and calls.
)doc");

REGISTER_OP("TfeedHostStats")
    .Output("hosts: string")
    .Output("counts: int64")
    .Output("state: float")
    .SetIsStateful()
    .Doc(R"doc(
The fetch loop's host states (process-wide): hosts[n], each "<host>\n<limiter
shape>" (one host has a state per shape of the datasets asking it; "" for
local files); counts[n, 6] = requests,
images, failures, throttles (429/503/refused answers), queued, in flight;
state[n, 3] = window, paced requests/s (0: unpaced), seconds of pause left.
Refreshed by the loop every 50 ms.
)doc");

REGISTER_OP("TfeedCurlVersion").Output("version: string").SetIsStateful();

REGISTER_OP("TfeedCacheCorrupt")
    .Input("cache_dir: string")
    .Output("count: int64")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::ScalarShape)
    .Doc("Corrupt entries of cache_dir (as given to TfeedFetch) this process has deleted.");

}  // namespace fetch
}  // namespace tfeed

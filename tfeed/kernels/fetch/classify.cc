#include "classify.h"

#include <curl/curl.h>

#include <strings.h>

#include <cctype>
#include <cstdio>
#include <cstring>

#include "contract.h"

namespace tfeed {
namespace fetch {
namespace {

namespace c = ::tfeed::contract;

Verdict Failure(const char* reason, std::string detail, bool retryable) {
  Verdict v;
  v.reason = reason;
  v.detail = std::move(detail);
  v.retryable = retryable;
  return v;
}

// A complete HTTP response: success below 400, else http_<code> / http_5xx.
Verdict FromStatus(const AttemptEnd& end) {
  Verdict v;
  if (end.status < 400 && end.opted_out) return Failure(c::kOptedOut, c::kOptOutDetail, false);
  if (end.status < 400) {
    v.ok = true;
    return v;
  }
  v.reason = c::HttpReason(end.status);
  v.detail = "HTTP " + std::to_string(end.status);
  v.retryable = c::IsRetryableStatus(end.status);
  if (end.retry_after > 0) v.retry_after = end.retry_after;
  return v;
}

// A transfer libcurl ended with an error.
Verdict FromCurlError(const AttemptEnd& end, const Options& opt) {
  switch (end.curl_code) {
    case CURLE_WRITE_ERROR:
      if (end.too_large) return Failure(c::kTooLarge, "body exceeds max_bytes " + std::to_string(opt.max_bytes), false);
      return Failure(c::kConnection, end.error, true);
    case CURLE_FILESIZE_EXCEEDED:
      return Failure(c::kTooLarge, "Content-Length > max_bytes " + std::to_string(opt.max_bytes), false);
    case CURLE_OPERATION_TIMEDOUT:
      return Failure(c::kTimeout, end.error, true);
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return Failure(c::kDns, end.error, true);
    case CURLE_TOO_MANY_REDIRECTS:
      return Failure(c::kTooManyRedirects, "more than " + std::to_string(opt.max_redirects) + " redirects", false);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return Failure(c::kInvalidUrl, end.error, false);
    case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING:
      return Failure(c::kTruncated, end.error, true);
    case CURLE_PEER_FAILED_VERIFICATION:  // an untrusted certificate: retrying cannot help
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
      return Failure(c::kTls, end.error, false);
    case CURLE_SSL_CONNECT_ERROR:
      return Failure(c::kTls, end.error, true);
    default:
      return Failure(c::kConnection, end.error, true);
  }
}

}  // namespace

Verdict Classify(const AttemptEnd& end, const Options& opt) {
  if (end.read_timed_out) {
    return Failure(c::kTimeout, "no data within read_timeout " + FormatSeconds(opt.read_timeout) + "s", true);
  }
  if (end.curl_code == CURLE_OK) return FromStatus(end);
  if (!end.blocked.empty()) return Failure(c::kBlockedAddress, end.blocked, false);  // never retried
  return FromCurlError(end, opt);
}

bool HeaderOptsOut(const char* line, size_t size) {
  const size_t name = sizeof c::kOptOutHeader - 1;
  if (size <= name || line[name] != ':' || strncasecmp(line, c::kOptOutHeader, name) != 0) return false;
  std::string token;
  for (size_t i = name + 1; i <= size; ++i) {
    const char ch = i < size ? line[i] : ' ';
    if (ch != '\r' && ch != '\n' && std::strchr(c::kOptOutSeparators, ch) == nullptr) {
      token += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      continue;
    }
    for (int d = 0; d < c::kOptOutDirectivesCount; ++d) {
      if (token == c::kOptOutDirectives[d]) return true;
    }
    token.clear();
  }
  return false;
}

std::string FormatSeconds(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", seconds);
  return buf;
}

}  // namespace fetch
}  // namespace tfeed

// libcurl, resolved at run time from the system library.
//
// libcurl is opened with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) and called through
// function pointers: libtensorflow_framework exports its own libcurl (BoringSSL,
// no CA defaults) into the global symbol scope, so plain -lcurl calls would
// silently land in TensorFlow's copy.  Only curl's headers are needed to build.

#ifndef TFEED_KERNELS_FETCH_CURL_LOADER_H_
#define TFEED_KERNELS_FETCH_CURL_LOADER_H_

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include <string>

namespace tfeed {
namespace fetch {

// Option numbers newer than some headers; the values are part of curl's ABI.
constexpr CURLoption kOptPrereqFunction = static_cast<CURLoption>(20000 + 312);
constexpr CURLoption kOptPrereqData = static_cast<CURLoption>(10000 + 313);
constexpr CURLoption kOptProtocolsStr = static_cast<CURLoption>(10000 + 318);
constexpr CURLoption kOptRedirProtocolsStr = static_cast<CURLoption>(10000 + 319);
constexpr CURLINFO kInfoRetryAfter = static_cast<CURLINFO>(CURLINFO_OFF_T + 57);

struct CurlApi {
  CURLcode (*global_init)(long);
  char* (*version)();
  CURL* (*easy_init)();
  void (*easy_cleanup)(CURL*);
  void (*easy_reset)(CURL*);
  CURLcode (*easy_setopt)(CURL*, CURLoption, ...);
  CURLcode (*easy_getinfo)(CURL*, CURLINFO, ...);
  const char* (*easy_strerror)(CURLcode);
  CURLM* (*multi_init)();
  CURLMcode (*multi_cleanup)(CURLM*);
  CURLMcode (*multi_setopt)(CURLM*, CURLMoption, ...);
  CURLMcode (*multi_add_handle)(CURLM*, CURL*);
  CURLMcode (*multi_remove_handle)(CURLM*, CURL*);
  CURLMcode (*multi_socket_action)(CURLM*, curl_socket_t, int, int*);
  CURLMsg* (*multi_info_read)(CURLM*, int*);
  CURLMcode (*multi_assign)(CURLM*, curl_socket_t, void*);

  bool ok = false;
  std::string error;  // why not ok
};

// The process's libcurl, opened and initialised on first use; check ok.
const CurlApi& Curl();

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_CURL_LOADER_H_

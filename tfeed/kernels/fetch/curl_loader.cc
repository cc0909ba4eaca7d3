#include "curl_loader.h"

#include <dlfcn.h>

namespace tfeed {
namespace fetch {
namespace {

template <typename F>
bool Bind(void* lib, const char* name, F* fn, std::string* error) {
  *fn = reinterpret_cast<F>(dlsym(lib, name));
  if (*fn == nullptr && error->empty()) *error = std::string("libcurl lacks ") + name;
  return *fn != nullptr;
}

void* OpenLibcurl() {
  for (const char* name : {"libcurl.so.4", "libcurl.so", "libcurl-gnutls.so.4"}) {
    void* lib = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (lib != nullptr) return lib;
  }
  return nullptr;
}

bool BindAll(void* lib, CurlApi* a) {
  std::string& e = a->error;
  return Bind(lib, "curl_global_init", &a->global_init, &e) &
         Bind(lib, "curl_version", &a->version, &e) &
         Bind(lib, "curl_easy_init", &a->easy_init, &e) &
         Bind(lib, "curl_easy_cleanup", &a->easy_cleanup, &e) &
         Bind(lib, "curl_easy_reset", &a->easy_reset, &e) &
         Bind(lib, "curl_easy_setopt", &a->easy_setopt, &e) &
         Bind(lib, "curl_easy_getinfo", &a->easy_getinfo, &e) &
         Bind(lib, "curl_easy_strerror", &a->easy_strerror, &e) &
         Bind(lib, "curl_multi_init", &a->multi_init, &e) &
         Bind(lib, "curl_multi_cleanup", &a->multi_cleanup, &e) &
         Bind(lib, "curl_multi_setopt", &a->multi_setopt, &e) &
         Bind(lib, "curl_multi_add_handle", &a->multi_add_handle, &e) &
         Bind(lib, "curl_multi_remove_handle", &a->multi_remove_handle, &e) &
         Bind(lib, "curl_multi_socket_action", &a->multi_socket_action, &e) &
         Bind(lib, "curl_multi_info_read", &a->multi_info_read, &e) &
         Bind(lib, "curl_multi_assign", &a->multi_assign, &e);
}

}  // namespace

const CurlApi& Curl() {
  static const CurlApi* api = [] {
    auto* a = new CurlApi();
    void* lib = OpenLibcurl();
    if (lib == nullptr) {
      a->error = std::string("cannot load libcurl.so.4 (apt-get install libcurl4): ") + dlerror();
      return a;
    }
    bool ok = BindAll(lib, a);
    if (ok && a->global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      a->error = "curl_global_init failed";
      ok = false;
    }
    a->ok = ok;
    return a;
  }();
  return *api;
}

}  // namespace fetch
}  // namespace tfeed

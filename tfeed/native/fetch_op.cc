// TfeedFetch: download a vector of URLs inside TensorFlow, without holding a
// tf.data thread or the GIL while bytes are in flight.
//
//   ComputeAsync (a tf.data thread)      Fetcher loop thread (one per process)
//   ------------------------------      -------------------------------------
//   allocate outputs, read file:// URLs
//   Submit(batch) ----- eventfd ----->  admit transfers FIFO (max_in_flight)
//   return                              libcurl multi + epoll: keep-alive pool,
//                                       DNS cache, per-host limit, redirects,
//                                       gzip, size cap, connect/read timeouts
//                                       retries on a timer heap (backoff with
//                                       equal jitter, Retry-After, deadline)
//                                       sniff magic bytes, write outputs
//   done() <--- completer thread <----  last transfer of the batch finished
//
// TfeedFetchPooled is the same with the outputs shared by one iterator's calls
// (a "lot"): results go to the lot's oldest waiting call, so a hanging URL
// delays the lot's last call instead of its own group (see struct Lot).
//
// Semantics follow tfeed/download.py; reasons are the names in tfeed/errors.py.
//
// libcurl is opened with dlopen(RTLD_LOCAL | RTLD_DEEPBIND) and called through
// function pointers: libtensorflow_framework exports its own libcurl (BoringSSL,
// no CA defaults) into the global symbol scope, so plain -lcurl calls would
// silently land in TensorFlow's copy.

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfeed {
namespace {

using Clock = std::chrono::steady_clock;
using tensorflow::AsyncOpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::tstring;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
Clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// ---------------------------------------------------------------------------
// libcurl, resolved at run time from the system library.

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
  std::string error;
};

template <typename F>
bool Bind(void* lib, const char* name, F* fn, std::string* error) {
  *fn = reinterpret_cast<F>(dlsym(lib, name));
  if (*fn == nullptr && error->empty()) *error = std::string("libcurl lacks ") + name;
  return *fn != nullptr;
}

const CurlApi& Curl() {
  static const CurlApi* api = [] {
    auto* a = new CurlApi();
    void* lib = nullptr;
    for (const char* name : {"libcurl.so.4", "libcurl.so", "libcurl-gnutls.so.4"}) {
      lib = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (lib != nullptr) break;
    }
    if (lib == nullptr) {
      a->error = std::string("cannot load libcurl.so.4 (apt-get install libcurl4): ") + dlerror();
      return a;
    }
    std::string& e = a->error;
    bool ok = Bind(lib, "curl_global_init", &a->global_init, &e) &
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
    if (ok && a->global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      e = "curl_global_init failed";
      ok = false;
    }
    a->ok = ok;
    return a;
  }();
  return *api;
}

// ---------------------------------------------------------------------------
// Settings (one FetchConfig) and magic-byte sniffing.

struct Options {
  double connect_timeout, read_timeout, deadline, backoff, max_backoff, dns_cache_ttl;
  int64_t retries, max_redirects, max_bytes, max_in_flight, connections_per_host;
  bool http = false, https = false, file = false, trust_env = false, pass_transcodable = false;
  bool verify_tls = true;
  std::string ca_file;  // "": the system's CAs
  std::vector<std::string> schemes;
  std::string user_agent, protocols;
  std::string cache_dir;  // "": no cache
  double remember_failures_s = 0;
};

enum class Kind { kNotImage, kDecodable, kTranscodable };

Kind Sniff(const char* p, size_t n, const char** name) {
  auto starts = [&](const char* magic, size_t len) { return n >= len && std::memcmp(p, magic, len) == 0; };
  *name = "";
  if (starts("\xff\xd8\xff", 3) || starts("\x89PNG\r\n\x1a\n", 8) || starts("GIF87a", 6) ||
      starts("GIF89a", 6) || (starts("BM", 2) && n > 26) ||
      (starts("RIFF", 4) && n >= 12 && std::memcmp(p + 8, "WEBP", 4) == 0)) {
    return Kind::kDecodable;
  }
  if (starts("II*\0", 4) || starts("MM\0*", 4)) *name = "tiff";
  else if (starts("\0\0\0\x0cjP  ", 8) || starts("\xffO\xffQ", 4)) *name = "jp2";
  else if (n > 2 && p[0] == 'P' && p[1] >= '1' && p[1] <= '6' && std::isspace(static_cast<unsigned char>(p[2])))
    *name = "pnm";
  return **name ? Kind::kTranscodable : Kind::kNotImage;
}

std::string Preview(const char* p, size_t n) {  // like Python's repr of the first bytes
  std::string out = "b'";
  for (size_t i = 0; i < std::min<size_t>(n, 24); ++i) {
    unsigned char c = p[i];
    char buf[8];
    if (c == '\\' || c == '\'') { out += '\\'; out += c; }
    else if (c >= 32 && c < 127) out += c;
    else { std::snprintf(buf, sizeof buf, "\\x%02x", c); out += buf; }
  }
  return out + "'";
}

struct Verdict {
  bool ok = false;
  std::string reason, detail;
  bool retryable = false;
  double retry_after = -1;
};

// Success stays success only for image bytes (tfeed/sniff.py).
Verdict CheckImage(const tstring& body, const Options& opt) {
  Verdict v;
  const char* kind;
  switch (Sniff(body.data(), body.size(), &kind)) {
    case Kind::kDecodable:
      v.ok = true;
      break;
    case Kind::kTranscodable:  // the caller transcodes it; the detail names the format
      v.ok = opt.pass_transcodable;
      v.detail = kind;
      if (!v.ok) v.reason = "decode_error", v.detail += " needs transcoding (pass_transcodable=False)";
      break;
    case Kind::kNotImage:
      v.reason = "not_image";
      v.detail = "body starts with " + Preview(body.data(), body.size());
      break;
  }
  return v;
}

std::string HttpReason(long status) {
  return status >= 500 ? "http_5xx" : "http_" + std::to_string(status);
}

// Scheme as urllib.parse.urlsplit sees it when the URL has "://", else "".
std::string SchemeOf(const std::string& url) {
  if (url.find("://") == std::string::npos) return "";
  size_t colon = url.find(':');
  if (colon == 0 || !std::isalpha(static_cast<unsigned char>(url[0]))) return "";
  std::string scheme;
  for (size_t i = 0; i < colon; ++i) {
    char c = url[i];
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') return "";
    scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return scheme;
}

std::string LocalPath(const std::string& url) {
  if (url.compare(0, 5, "file:") != 0) return url;
  std::string rest = url.substr(5);
  if (rest.compare(0, 2, "//") == 0) {
    size_t slash = rest.find('/', 2);
    rest = slash == std::string::npos ? "" : rest.substr(slash);
  }
  rest = rest.substr(0, rest.find_first_of("?#"));
  std::string path;
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == '%' && i + 2 < rest.size() && std::isxdigit(static_cast<unsigned char>(rest[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(rest[i + 2]))) {
      path += static_cast<char>(std::stoi(rest.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      path += rest[i];
    }
  }
  return path;
}

// Reads a local file on the calling thread (a tf.data thread, not the loop).
// Reads up to size bytes from fd (fewer only at end of file or on an error); returns how many.
size_t ReadUpTo(int fd, char* out, size_t size) {
  size_t got = 0;
  while (got < size) {
    ssize_t r = read(fd, out + got, size - got);
    if (r <= 0) break;
    got += r;
  }
  return got;
}

Verdict ReadLocal(const std::string& url, const Options& opt, tstring* body) {
  Verdict v;
  std::string path = LocalPath(url);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int err = fd < 0 ? errno : (S_ISREG(st.st_mode) ? errno : EISDIR);
    if (fd >= 0) close(fd);
    v.reason = "read_error";
    v.detail = path + ": " + std::strerror(err);
    return v;
  }
  if (st.st_size > opt.max_bytes) {
    close(fd);
    v.reason = "too_large";
    v.detail = std::to_string(st.st_size) + " bytes > max_bytes " + std::to_string(opt.max_bytes);
    return v;
  }
  body->resize_uninitialized(st.st_size);
  const size_t got = ReadUpTo(fd, body->mdata(), st.st_size);
  close(fd);
  body->resize_uninitialized(got);
  return CheckImage(*body, opt);
}

// ---------------------------------------------------------------------------
// The download cache (tfeed/cache.py's format): <dir>/<aa>/<sha256(url) hex>
// holds "TFC1" | length u64 LE | crc32 u32 LE | body; "<entry>.fail" holds a
// remembered permanent failure's reason, valid for remember_failures_s after
// its mtime.  Entries are written to a temporary file and renamed into place.

class Sha256 {
 public:
  static std::string Hex(const std::string& text) {
    static const uint32_t kInit[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint32_t h[8];
    std::memcpy(h, kInit, sizeof h);
    std::string msg = text;
    const uint64_t bits = static_cast<uint64_t>(text.size()) * 8;
    msg += static_cast<char>(0x80);
    while (msg.size() % 64 != 56) msg += '\0';
    for (int i = 7; i >= 0; --i) msg += static_cast<char>((bits >> (8 * i)) & 0xff);
    for (size_t block = 0; block < msg.size(); block += 64) Compress(h, reinterpret_cast<const uint8_t*>(&msg[block]));
    static const char kDigits[] = "0123456789abcdef";
    std::string hex;
    for (uint32_t word : h)
      for (int shift = 28; shift >= 0; shift -= 4) hex += kDigits[(word >> shift) & 0xf];
    return hex;
  }

 private:
  static uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  static void Compress(uint32_t* h, const uint8_t* p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = hh + (Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
};

// zlib's crc32 (the cache's checksum), from the system libz; null if absent.
using Crc32Fn = unsigned long (*)(unsigned long, const unsigned char*, unsigned int);
Crc32Fn Crc32() {
  static const Crc32Fn fn = [] {
    void* lib = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
    return lib == nullptr ? nullptr : reinterpret_cast<Crc32Fn>(dlsym(lib, "crc32"));
  }();
  return fn;
}

uint32_t Checksum(const char* data, size_t n) {
  unsigned long crc = 0;
  while (n > 0) {
    unsigned int chunk = static_cast<unsigned int>(std::min<size_t>(n, 1u << 30));
    crc = Crc32()(crc, reinterpret_cast<const unsigned char*>(data), chunk);
    data += chunk, n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

constexpr char kCacheMagic[4] = {'T', 'F', 'C', '1'};
constexpr size_t kCacheHeader = 16;
const char* const kPermanentReasons[] = {"http_404", "http_410", "not_image"};

std::string CachePath(const std::string& dir, const std::string& url) {
  std::string digest = Sha256::Hex(url);
  return dir + "/" + digest.substr(0, 2) + "/" + digest;
}

bool ReadFully(int fd, char* out, size_t size) { return ReadUpTo(fd, out, size) == size; }

bool ReadAll(const std::string& path, std::string* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (ok) {
    out->resize(st.st_size);
    out->resize(ReadUpTo(fd, out->data(), out->size()));
  }
  close(fd);
  return ok;
}

// Corrupt cache entries this process deleted, per cache directory (what
// tfeed.DiskCache.corrupt_entries adds for the native engine; TfeedCacheCorrupt).
class CorruptCounts {
 public:
  static CorruptCounts& Get() {
    static CorruptCounts* counts = new CorruptCounts();  // never destroyed: kernels may run at exit
    return *counts;
  }
  void Add(const std::string& dir) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counts_[dir];
  }
  int64_t Count(const std::string& dir) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = counts_.find(dir);
    return it == counts_.end() ? 0 : it->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, int64_t> counts_;
};

// The cached body of an entry, or false (missing; a corrupt entry is deleted
// and *corrupt set).  The body is read straight into the output tensor's
// string: no zero-filled buffer, no second copy.
bool ReadCached(const std::string& path, tstring* body, bool* corrupt) {
  *corrupt = false;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  char header[kCacheHeader];
  uint64_t length = 0;
  uint32_t crc = 0;
  bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<size_t>(st.st_size) >= kCacheHeader &&
            ReadFully(fd, header, kCacheHeader) && std::memcmp(header, kCacheMagic, 4) == 0;
  if (ok) {
    std::memcpy(&length, header + 4, 8);  // little-endian, as x86 and arm64 Linux are
    std::memcpy(&crc, header + 12, 4);
    ok = length == static_cast<uint64_t>(st.st_size) - kCacheHeader;
  }
  if (ok) {
    body->resize_uninitialized(length);
    ok = ReadFully(fd, body->mdata(), length) && Checksum(body->data(), length) == crc;
  }
  if (ok) futimens(fd, nullptr);  // a hit is recent use: DiskCache's LRU eviction goes by mtime
  close(fd);
  if (!ok) {
    body->clear();
    *corrupt = unlink(path.c_str()) == 0;
  }
  return ok;
}

// A remembered permanent failure's reason, or "" (none, or expired and deleted).
std::string RememberedFailure(const std::string& path, double remember_s) {
  std::string fail_path = path + ".fail", reason;
  struct stat st;
  if (remember_s <= 0 || stat(fail_path.c_str(), &st) != 0) return "";
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  double age = static_cast<double>(now.tv_sec - st.st_mtim.tv_sec) + 1e-9 * (now.tv_nsec - st.st_mtim.tv_nsec);
  if (age > remember_s) {
    unlink(fail_path.c_str());
    return "";
  }
  return ReadAll(fail_path, &reason) ? reason : "";
}

void WriteAtomic(const std::string& path, const std::string& head, const char* data, size_t n) {
  mkdir(path.substr(0, path.rfind('/')).c_str(), 0777);
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, ".%d.%lu.tmp", static_cast<int>(getpid()),
                static_cast<unsigned long>(pthread_self()));
  std::string tmp = path + suffix;
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return;  // a cache that cannot be written only costs later downloads
  bool ok = true;
  for (auto [p, left] : {std::pair<const char*, size_t>{head.data(), head.size()}, {data, n}}) {
    while (ok && left > 0) {
      ssize_t w = write(fd, p, left);
      ok = w > 0;
      if (ok) p += w, left -= w;
    }
  }
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) unlink(tmp.c_str());
}

void StoreCached(const std::string& path, const tstring& body) {
  std::string head(kCacheMagic, 4);
  uint64_t length = body.size();
  uint32_t crc = Checksum(body.data(), body.size());
  head.append(reinterpret_cast<const char*>(&length), 8).append(reinterpret_cast<const char*>(&crc), 4);
  WriteAtomic(path, head, body.data(), body.size());
}

void RememberFailure(const std::string& path, const std::string& reason, double remember_s) {
  if (remember_s <= 0) return;
  for (const char* permanent : kPermanentReasons)
    if (reason == permanent) return WriteAtomic(path + ".fail", reason, "", 0);
}

// ---------------------------------------------------------------------------
// One kernel invocation (a batch) and one URL of it (a transfer).

struct Batch;

enum class State { kQueued, kActive, kWaiting, kDone };

struct Transfer {
  Batch* batch = nullptr;
  int64_t out = 0;   // index into the batch's outputs (unused in a pooled batch)
  int64_t label = 0;  // carried to the output row of a pooled batch
  int64_t slot = 0;  // index into the batch's transfers
  std::string url;
  std::string cache_path;  // where a success is stored; "" without a cache
  State state = State::kQueued;
  CURL* easy = nullptr;
  size_t active_pos = 0;
  tstring body;
  int attempts = 0;
  Clock::time_point deadline, last_activity;
  bool connected = false, too_large = false, status_checked = false, discard = false, read_timed_out = false;
  char errbuf[CURL_ERROR_SIZE];
};

struct Batch {
  uint64_t id = 0;
  uint64_t lot = 0;  // != 0: a pooled batch: its results go to its lot, not to outputs of its own
  std::shared_ptr<const Options> opt;
  std::unique_ptr<Transfer[]> transfers;
  int64_t size = 0, remaining = 0;
  tstring *bodies = nullptr, *reasons = nullptr, *details = nullptr;
  int32_t* attempts = nullptr;
  OpKernelContext* ctx = nullptr;
  AsyncOpKernel::DoneCallback done;
  tensorflow::CancellationManager* cm = nullptr;
  tensorflow::CancellationToken token = 0;
  bool cancelled = false;
};

// One finished URL of a lot, waiting for a call to take it.
struct Result {
  tstring body, reason, detail, url;
  int32_t attempts = 0;
  int64_t label = 0;
};

// A TfeedFetchPooled call: `size` output rows, filled in completion order by
// any results of its lot (its own URLs or those of the lot's other calls).
struct Call {
  uint64_t lot = 0;
  int64_t size = 0, filled = 0;
  tstring *bodies = nullptr, *reasons = nullptr, *details = nullptr, *urls = nullptr;
  int32_t* attempts = nullptr;
  int64_t* labels = nullptr;
  OpKernelContext* ctx = nullptr;
  AsyncOpKernel::DoneCallback done;
  tensorflow::CancellationManager* cm = nullptr;
  tensorflow::CancellationToken token = 0;
  bool cancelled = false;

  void Write(Result r) {
    const int64_t i = filled++;
    bodies[i] = std::move(r.body);
    reasons[i] = std::move(r.reason);
    details[i] = std::move(r.detail);
    urls[i] = std::move(r.url);
    attempts[i] = r.attempts;
    labels[i] = r.label;
  }
};

// The calls of one iterator (one lot id) share their results, so a URL that
// hangs holds back only the epoch's last call, never a whole group: every
// call returns as many rows as it brought URLs, and the lot's results number
// exactly its URLs, so each URL reaches exactly one call.
// Invariant: `ready` and `waiting` are never both non-empty.
struct Lot {
  std::deque<Result> ready;
  std::deque<std::unique_ptr<Call>> waiting;
  int64_t batches = 0;  // pooled batches with transfers not yet done
};

// Runs done callbacks off the network thread: TensorFlow may run the rest of
// a function inline in them.
class Completer {
 public:
  void Start() {
    thread_ = std::thread([this] { Run(); });
    pthread_setname_np(thread_.native_handle(), "tfeed-done");
  }
  ~Completer() { Stop(); }
  void Post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(fn));
    cv_.notify_one();
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------------------
// The process-wide fetcher: one multi handle, one loop thread.

class Fetcher {
 public:
  static Fetcher* Get(std::string* error);

  // Any thread.  Takes ownership; the batch's done runs exactly once.
  void Submit(std::unique_ptr<Batch> batch) {
    std::lock_guard<std::mutex> lock(mu_);
    WatchCancellation(batch.get(), batch->id, &cancels_);
    incoming_.push_back(std::move(batch));
    Wake();
  }

  // Any thread.  `batch` holds the call's URLs still to fetch; the call's done
  // runs exactly once, when its rows are filled or its lot is cancelled (the
  // iterator went away: every call of the lot ends Cancelled).
  void SubmitPooled(std::unique_ptr<Batch> batch, std::unique_ptr<Call> call) {
    std::lock_guard<std::mutex> lock(mu_);
    WatchCancellation(call.get(), call->lot, &lot_cancels_);
    incoming_.push_back(std::move(batch));
    incoming_calls_.push_back(std::move(call));
    Wake();
  }

  void Shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      stop_ = true;
      Wake();
    }
    if (loop_.joinable()) loop_.join();
    completer_.Stop();
  }

 private:
  // With mu_ held: when `waiter` (a Batch or a Call) is cancelled, `key` goes to
  // `queue` for the loop; a waiter already cancelled is marked so.
  template <typename Waiter>
  void WatchCancellation(Waiter* waiter, uint64_t key, std::vector<uint64_t>* queue) {
    if (waiter->cm == nullptr) return;
    waiter->token = waiter->cm->get_cancellation_token();
    auto enqueue = [this, key, queue] {
      std::lock_guard<std::mutex> lock(mu_);
      queue->push_back(key);
      Wake();
    };
    if (!waiter->cm->RegisterCallback(waiter->token, enqueue)) waiter->cancelled = true;
  }

  struct Ref {
    uint64_t batch;
    int64_t index;
  };
  struct Timer {
    Clock::time_point when;
    Ref ref;
    bool operator>(const Timer& o) const { return when > o.when; }
  };

  Fetcher() = default;
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;
  ~Fetcher() {  // only a fetcher that failed to start is ever deleted
    if (multi_ != nullptr) Curl().multi_cleanup(multi_);
    if (epoll_ >= 0) close(epoll_);
    if (wake_ >= 0) close(wake_);
  }

  bool Start(std::string* error) {
    const CurlApi& api = Curl();
    if (!api.ok) return *error = api.error, false;
    multi_ = api.multi_init();
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
    wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (multi_ == nullptr || epoll_ < 0 || wake_ < 0) return *error = "cannot create curl multi/epoll", false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = wake_;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &ev);
    api.multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Fetcher::OnSocket);
    api.multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    api.multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Fetcher::OnTimer);
    api.multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    completer_.Start();
    loop_ = std::thread([this] { Loop(); });
    pthread_setname_np(loop_.native_handle(), "tfeed-fetch");
    return true;
  }

  void Wake() {
    uint64_t one = 1;
    ssize_t ignored = write(wake_, &one, sizeof one);
    (void)ignored;
  }

  // -- curl callbacks (loop thread) ----------------------------------------
  // Mirrors libcurl's interest in a socket into the epoll set; the socket's
  // "assigned" pointer marks it as registered.
  static int OnSocket(CURL*, curl_socket_t fd, int what, void* self, void* registered) {
    auto* f = static_cast<Fetcher*>(self);
    if (what == CURL_POLL_REMOVE) {
      epoll_ctl(f->epoll_, EPOLL_CTL_DEL, fd, nullptr);
      return 0;
    }
    epoll_event ev{};
    ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    ev.data.fd = fd;
    if (registered != nullptr) {
      epoll_ctl(f->epoll_, EPOLL_CTL_MOD, fd, &ev);
    } else {
      epoll_ctl(f->epoll_, EPOLL_CTL_ADD, fd, &ev);
      Curl().multi_assign(f->multi_, fd, f);
    }
    return 0;
  }

  static int OnTimer(CURLM*, long timeout_ms, void* self) {
    auto* f = static_cast<Fetcher*>(self);
    f->curl_due_ = timeout_ms < 0 ? Clock::time_point::max() : Clock::now() + std::chrono::milliseconds(timeout_ms);
    return 0;
  }

  static size_t OnWrite(char* data, size_t size, size_t count, void* user) {
    auto* t = static_cast<Transfer*>(user);
    size_t n = size * count;
    t->last_activity = Clock::now();
    const Options& opt = *t->batch->opt;
    if (!t->status_checked) {
      t->status_checked = true;
      long status = 0;
      Curl().easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
      t->discard = status >= 400;  // error pages are not kept
      curl_off_t length = -1;
      if (!t->discard && Curl().easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) == CURLE_OK &&
          length > 0) {
        t->body.reserve(static_cast<size_t>(std::min<curl_off_t>(length, opt.max_bytes)));
      }
    }
    if (t->discard) return n;
    if (static_cast<int64_t>(t->body.size() + n) > opt.max_bytes) {
      t->too_large = true;
      return 0;  // aborts with CURLE_WRITE_ERROR
    }
    t->body.append(data, n);
    return n;
  }

  static size_t OnHeader(char*, size_t size, size_t count, void* user) {
    static_cast<Transfer*>(user)->last_activity = Clock::now();
    return size * count;
  }

  static int OnConnected(void* user, char*, char*, int, int) {
    auto* t = static_cast<Transfer*>(user);
    t->connected = true;
    t->last_activity = Clock::now();
    return 0;  // CURL_PREREQFUNC_OK
  }

  // -- loop ------------------------------------------------------------------
  void Loop() {
    std::vector<epoll_event> events(256);
    while (true) {
      if (!Intake()) break;
      Clock::time_point now = Clock::now();
      FireTimers(now);
      Admit(now);
      if (now >= next_scan_) ScanReadTimeouts(now);
      int timeout = WaitMs(Clock::now());
      int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), timeout);
      int running = 0;
      for (int i = 0; i < n; ++i) {
        int fd = events[i].data.fd;
        if (fd == wake_) {
          uint64_t value;
          ssize_t ignored = read(wake_, &value, sizeof value);
          (void)ignored;
          continue;
        }
        int flags = (events[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                    (events[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                    (events[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
        Curl().multi_socket_action(multi_, fd, flags, &running);
      }
      Clock::time_point due = curl_due_;
      if (Clock::now() >= due) {
        Curl().multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
        // libcurl calls OnTimer only when its next expiry changes; if its
        // clock had not reached the expiry yet, ask again shortly.
        if (curl_due_ == due) curl_due_ = Clock::now() + std::chrono::milliseconds(1);
      }
      Harvest();
    }
    Teardown();
  }

  // New batches and cancellations; false once stopping.
  bool Intake() {
    std::vector<std::unique_ptr<Batch>> incoming;
    std::vector<std::unique_ptr<Call>> calls;
    std::vector<uint64_t> cancels, lot_cancels;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return false;
      incoming.swap(incoming_);
      calls.swap(incoming_calls_);
      cancels.swap(cancels_);
      lot_cancels.swap(lot_cancels_);
    }
    for (auto& batch : incoming) {
      Batch* b = batch.get();
      ApplyLimits(*b->opt);
      if (b->lot != 0) ++lots_[b->lot].batches;
      batches_[b->id] = std::move(batch);
      if (b->cancelled) {
        CancelBatch(b);
        continue;
      }
      for (int64_t i = 0; i < b->size; ++i) queued_.push_back(Ref{b->id, i});
    }
    for (uint64_t id : cancels) {
      auto it = batches_.find(id);
      if (it != batches_.end()) CancelBatch(it->second.get());
    }
    for (auto& call : calls) {
      const uint64_t id = call->lot;
      const bool cancelled = call->cancelled;
      Lot& lot = lots_[id];
      while (call->filled < call->size && !lot.ready.empty()) {
        call->Write(std::move(lot.ready.front()));
        lot.ready.pop_front();
      }
      if (call->filled == call->size) FinishCall(std::move(call));
      else lot.waiting.push_back(std::move(call));
      if (cancelled) lot_cancels.push_back(id);
      DropIfIdle(id);
    }
    for (uint64_t id : lot_cancels) CancelLotNow(id);
    return true;
  }

  // A result of a pooled batch: to the lot's oldest waiting call, else kept ready.
  void Deliver(uint64_t id, Result r) {
    Lot& lot = lots_[id];
    if (lot.waiting.empty()) return lot.ready.push_back(std::move(r));
    Call* call = lot.waiting.front().get();
    call->Write(std::move(r));
    if (call->filled < call->size) return;
    FinishCall(std::move(lot.waiting.front()));
    lot.waiting.pop_front();
  }

  void FinishCall(std::unique_ptr<Call> call) {
    if (call->cm != nullptr) call->cm->TryDeregisterCallback(call->token);
    if (call->cancelled) call->ctx->SetStatus(tensorflow::errors::Cancelled("TfeedFetchPooled cancelled"));
    completer_.Post(std::move(call->done));
  }

  void DropIfIdle(uint64_t id) {
    auto it = lots_.find(id);
    if (it != lots_.end() && it->second.batches == 0 && it->second.waiting.empty() && it->second.ready.empty())
      lots_.erase(it);
  }

  // The iterator that owned the lot is gone: stop its transfers, end its calls.
  void CancelLotNow(uint64_t id) {
    auto it = lots_.find(id);
    if (it == lots_.end()) return;
    std::vector<Batch*> doomed;
    for (auto& entry : batches_)
      if (entry.second->lot == id) doomed.push_back(entry.second.get());
    for (Batch* b : doomed) {
      ReleaseTransfers(b);
      batches_.erase(b->id);
    }
    for (auto& call : it->second.waiting) {
      call->cancelled = true;
      FinishCall(std::move(call));
    }
    lots_.erase(it);
  }

  void ApplyLimits(const Options& opt) {
    if (opt.connections_per_host != host_limit_) {
      host_limit_ = opt.connections_per_host;
      Curl().multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, static_cast<long>(host_limit_));
    }
    if (opt.max_in_flight > total_limit_) {
      total_limit_ = opt.max_in_flight;
      Curl().multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS, static_cast<long>(total_limit_));
      Curl().multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(total_limit_));
    }
  }

  Transfer* Resolve(const Ref& ref) {
    auto it = batches_.find(ref.batch);
    return it == batches_.end() ? nullptr : &it->second->transfers[ref.index];
  }

  // Starts queued URLs, oldest first, while slots are free.  A URL holds its
  // slot from its first attempt until it is done (backoff included).
  void Admit(Clock::time_point now) {
    while (!queued_.empty()) {
      Transfer* t = Resolve(queued_.front());
      if (t == nullptr || t->state != State::kQueued) {
        queued_.pop_front();
        continue;
      }
      if (in_flight_ >= t->batch->opt->max_in_flight) break;
      queued_.pop_front();
      ++in_flight_;
      t->state = State::kWaiting;  // holds a slot from here on
      t->deadline = now + FromSeconds(t->batch->opt->deadline);
      StartAttempt(t, now);
    }
  }

  void FireTimers(Clock::time_point now) {
    while (!timers_.empty() && timers_.top().when <= now) {
      Ref ref = timers_.top().ref;
      timers_.pop();
      Transfer* t = Resolve(ref);
      if (t != nullptr && t->state == State::kWaiting) StartAttempt(t, now);
    }
  }

  CURL* AcquireEasy() {
    if (!free_easy_.empty()) {
      CURL* e = free_easy_.back();
      free_easy_.pop_back();
      return e;
    }
    return Curl().easy_init();
  }

  void ReleaseEasy(Transfer* t) {
    if (t->easy == nullptr) return;
    Curl().multi_remove_handle(multi_, t->easy);
    Curl().easy_reset(t->easy);
    free_easy_.push_back(t->easy);
    t->easy = nullptr;
    RemoveActive(t);
  }

  void StartAttempt(Transfer* t, Clock::time_point now) {
    const Options& opt = *t->batch->opt;
    const CurlApi& api = Curl();
    long left_ms = static_cast<long>(std::ceil(Seconds(t->deadline - now) * 1000));
    ++t->attempts;
    if (left_ms <= 0) {
      return Complete(t, Verdict{false, "timeout", "deadline of " + Format(opt.deadline) + "s passed"});
    }
    CURL* e = AcquireEasy();
    if (e == nullptr) return Complete(t, Verdict{false, "connection", "curl_easy_init failed"});
    t->easy = e;
    t->state = State::kActive;
    t->body.clear();
    t->too_large = t->status_checked = t->discard = t->read_timed_out = false;
    t->errbuf[0] = 0;
    t->last_activity = now;
    api.easy_setopt(e, CURLOPT_URL, t->url.c_str());
    api.easy_setopt(e, CURLOPT_PRIVATE, static_cast<void*>(t));
    api.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    api.easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    api.easy_setopt(e, CURLOPT_WRITEFUNCTION, &Fetcher::OnWrite);
    api.easy_setopt(e, CURLOPT_WRITEDATA, static_cast<void*>(t));
    api.easy_setopt(e, CURLOPT_HEADERFUNCTION, &Fetcher::OnHeader);
    api.easy_setopt(e, CURLOPT_HEADERDATA, static_cast<void*>(t));
    api.easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    api.easy_setopt(e, CURLOPT_MAXREDIRS, static_cast<long>(opt.max_redirects));
    api.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, std::max(1L, static_cast<long>(opt.connect_timeout * 1000)));
    api.easy_setopt(e, CURLOPT_TIMEOUT_MS, left_ms);
    api.easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    api.easy_setopt(e, CURLOPT_BUFFERSIZE, 64L * 1024);  // fewer reads and callbacks per image
    api.easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(opt.max_bytes));
    api.easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, static_cast<long>(opt.dns_cache_ttl));
    api.easy_setopt(e, CURLOPT_USERAGENT, opt.user_agent.c_str());
    if (api.easy_setopt(e, kOptProtocolsStr, opt.protocols.c_str()) == CURLE_OK) {
      api.easy_setopt(e, kOptRedirProtocolsStr, opt.protocols.c_str());
    }
    if (!opt.ca_file.empty()) api.easy_setopt(e, CURLOPT_CAINFO, opt.ca_file.c_str());
    if (!opt.verify_tls) {
      api.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
      api.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!opt.trust_env) {
      api.easy_setopt(e, CURLOPT_PROXY, "");  // ignore *_proxy variables
    } else {
      api.easy_setopt(e, CURLOPT_NETRC, static_cast<long>(CURL_NETRC_OPTIONAL));
    }
    bool have_prereq = api.easy_setopt(e, kOptPrereqFunction, &Fetcher::OnConnected) == CURLE_OK;
    api.easy_setopt(e, kOptPrereqData, static_cast<void*>(t));
    // Without the connected signal (libcurl < 7.80) the read clock starts
    // after the connect allowance.
    t->connected = !have_prereq;
    if (!have_prereq) t->last_activity = now + FromSeconds(opt.connect_timeout);
    t->active_pos = active_.size();
    active_.push_back(t);
    if (api.multi_add_handle(multi_, e) != CURLM_OK) {
      ReleaseEasy(t);
      return Complete(t, Verdict{false, "connection", "curl_multi_add_handle failed"});
    }
  }

  void RemoveActive(Transfer* t) {
    if (t->active_pos < active_.size() && active_[t->active_pos] == t) {
      Transfer* last = active_.back();
      active_[t->active_pos] = last;
      last->active_pos = t->active_pos;
      active_.pop_back();
    }
    t->active_pos = static_cast<size_t>(-1);
  }

  void Harvest() {
    CURLMsg* msg;
    int left;
    while ((msg = Curl().multi_info_read(multi_, &left)) != nullptr) {
      if (msg->msg != CURLMSG_DONE) continue;
      void* priv = nullptr;
      Curl().easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
      Finish(static_cast<Transfer*>(priv), msg->data.result);
    }
  }

  // Aborts attempts that received nothing for read_timeout seconds.
  void ScanReadTimeouts(Clock::time_point now) {
    std::vector<Transfer*> expired;
    Clock::time_point next = now + std::chrono::milliseconds(100);
    for (Transfer* t : active_) {
      if (!t->connected) continue;
      Clock::time_point due = t->last_activity + FromSeconds(t->batch->opt->read_timeout);
      if (due <= now) expired.push_back(t);
      else next = std::min(next, due);
    }
    next_scan_ = next;
    for (Transfer* t : expired) {
      t->read_timed_out = true;
      Finish(t, CURLE_OPERATION_TIMEDOUT);
    }
  }

  Verdict Classify(Transfer* t, CURLcode rc) {
    const Options& opt = *t->batch->opt;
    const CurlApi& api = Curl();
    Verdict v;
    std::string error = t->errbuf[0] ? t->errbuf : api.easy_strerror(rc);
    if (t->read_timed_out) {
      v.reason = "timeout";
      v.detail = "no data within read_timeout " + Format(opt.read_timeout) + "s";
      v.retryable = true;
      return v;
    }
    if (rc == CURLE_OK) {
      long status = 0;
      api.easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
      if (status >= 400) {
        v.reason = HttpReason(status);
        v.detail = "HTTP " + std::to_string(status);
        v.retryable = status >= 500 || status == 408 || status == 429;
        curl_off_t after = -1;
        if (api.easy_getinfo(t->easy, kInfoRetryAfter, &after) == CURLE_OK && after > 0) v.retry_after = after;
        return v;
      }
      v.ok = true;
      return v;
    }
    v.detail = error;
    switch (rc) {
      case CURLE_WRITE_ERROR:
        if (t->too_large) {
          v.reason = "too_large";
          v.detail = "body exceeds max_bytes " + std::to_string(opt.max_bytes);
        } else {
          v.reason = "connection", v.retryable = true;
        }
        break;
      case CURLE_FILESIZE_EXCEEDED:
        v.reason = "too_large";
        v.detail = "Content-Length > max_bytes " + std::to_string(opt.max_bytes);
        break;
      case CURLE_OPERATION_TIMEDOUT:
        v.reason = "timeout", v.retryable = true;
        break;
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_RESOLVE_PROXY:
        v.reason = "dns", v.retryable = true;
        break;
      case CURLE_TOO_MANY_REDIRECTS:
        v.reason = "too_many_redirects";
        v.detail = "more than " + std::to_string(opt.max_redirects) + " redirects";
        break;
      case CURLE_URL_MALFORMAT:
      case CURLE_UNSUPPORTED_PROTOCOL:
        v.reason = "invalid_url";
        break;
      case CURLE_PARTIAL_FILE:
      case CURLE_BAD_CONTENT_ENCODING:
        v.reason = "truncated", v.retryable = true;
        break;
      case CURLE_PEER_FAILED_VERIFICATION:  // an untrusted certificate: retrying cannot help
      case CURLE_SSL_CACERT_BADFILE:
      case CURLE_SSL_CERTPROBLEM:
        v.reason = "tls";
        break;
      case CURLE_SSL_CONNECT_ERROR:
        v.reason = "tls", v.retryable = true;
        break;
      default:
        v.reason = "connection", v.retryable = true;
    }
    return v;
  }

  // An attempt ended: succeed, schedule a retry, or fail for good.
  void Finish(Transfer* t, CURLcode rc) {
    Verdict v = Classify(t, rc);
    ReleaseEasy(t);
    const Options& opt = *t->batch->opt;
    Clock::time_point now = Clock::now();
    if (v.ok) return Complete(t, CheckImage(t->body, opt));
    if (!v.retryable || t->attempts > opt.retries) {
      if (v.reason == "timeout" && now >= t->deadline) v.detail = "deadline of " + Format(opt.deadline) + "s passed";
      return Complete(t, std::move(v));
    }
    double ceiling = std::min(opt.max_backoff, opt.backoff * std::ldexp(1.0, t->attempts - 1));
    double delay = ceiling / 2 + std::uniform_real_distribution<double>(0, ceiling / 2)(rng_);
    if (v.retry_after >= 0) delay = std::max(delay, v.retry_after);
    Clock::time_point when = now + FromSeconds(delay);
    if (when >= t->deadline) {
      if (v.reason == "timeout" && now >= t->deadline) v.detail = "deadline of " + Format(opt.deadline) + "s passed";
      return Complete(t, std::move(v));
    }
    t->state = State::kWaiting;
    t->body.clear();
    timers_.push(Timer{when, Ref{t->batch->id, t->slot}});
  }

  void Complete(Transfer* t, Verdict v) {
    Batch* b = t->batch;
    if (t->state == State::kActive || t->state == State::kWaiting) --in_flight_;
    t->state = State::kDone;
    if (!t->cache_path.empty()) {
      if (v.ok) StoreCached(t->cache_path, t->body);
      else RememberFailure(t->cache_path, v.reason, b->opt->remember_failures_s);
    }
    if (b->lot != 0) {
      Result r;
      if (v.ok) r.body = std::move(t->body);
      r.reason = v.ok ? "" : v.reason;
      r.detail = v.detail;
      r.url = t->url;
      r.attempts = t->attempts;
      r.label = t->label;
      t->body = tstring();
      Deliver(b->lot, std::move(r));
      if (--b->remaining > 0) return;
      const uint64_t lot = b->lot;
      batches_.erase(b->id);
      --lots_[lot].batches;
      return DropIfIdle(lot);
    }
    if (v.ok) b->bodies[t->out] = std::move(t->body);
    b->reasons[t->out] = v.ok ? "" : v.reason;
    b->details[t->out] = v.detail;
    b->attempts[t->out] = t->attempts;
    t->body = tstring();
    if (--b->remaining == 0) FinishBatch(b);
  }

  void ReleaseTransfers(Batch* b) {
    for (int64_t i = 0; i < b->size; ++i) {
      Transfer* t = &b->transfers[i];
      if (t->state == State::kDone) continue;
      ReleaseEasy(t);
      if (t->state == State::kActive || t->state == State::kWaiting) --in_flight_;
      t->state = State::kDone;
    }
  }

  void CancelBatch(Batch* b) {
    if (b->lot != 0) return;  // a pooled batch ends with its lot (CancelLotNow)
    b->cancelled = true;
    ReleaseTransfers(b);
    FinishBatch(b);
  }

  void FinishBatch(Batch* b) {
    auto it = batches_.find(b->id);
    std::unique_ptr<Batch> owned = std::move(it->second);
    batches_.erase(it);
    if (b->cm != nullptr) b->cm->TryDeregisterCallback(b->token);
    if (b->cancelled) b->ctx->SetStatus(tensorflow::errors::Cancelled("TfeedFetch cancelled"));
    completer_.Post(std::move(b->done));
  }

  int WaitMs(Clock::time_point now) {
    Clock::time_point until = curl_due_;
    if (!timers_.empty()) until = std::min(until, timers_.top().when);
    if (!active_.empty()) until = std::min(until, next_scan_);
    if (until == Clock::time_point::max()) return -1;
    if (until <= now) return 0;
    double ms = std::ceil(Seconds(until - now) * 1000);
    return static_cast<int>(std::min(ms, 60000.0));
  }

  void Teardown() {
    for (Transfer* t : std::vector<Transfer*>(active_)) ReleaseEasy(t);
    for (CURL* e : free_easy_) Curl().easy_cleanup(e);
    free_easy_.clear();
    Curl().multi_cleanup(multi_);
    multi_ = nullptr;
    close(epoll_);
    close(wake_);
    epoll_ = wake_ = -1;
  }

  static std::string Format(double seconds) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", seconds);
    return buf;
  }

  std::mutex mu_;
  std::vector<std::unique_ptr<Batch>> incoming_;
  std::vector<std::unique_ptr<Call>> incoming_calls_;
  std::vector<uint64_t> cancels_, lot_cancels_;
  bool stop_ = false;

  CURLM* multi_ = nullptr;
  int epoll_ = -1, wake_ = -1;
  std::thread loop_;
  Completer completer_;

  // Loop-thread state.
  std::unordered_map<uint64_t, std::unique_ptr<Batch>> batches_;
  std::unordered_map<uint64_t, Lot> lots_;
  std::deque<Ref> queued_;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  std::vector<Transfer*> active_;
  std::vector<CURL*> free_easy_;
  int64_t in_flight_ = 0, host_limit_ = 0, total_limit_ = 0;
  Clock::time_point curl_due_ = Clock::time_point::max(), next_scan_ = Clock::time_point::min();
  std::mt19937_64 rng_{std::random_device{}()};
};

std::mutex g_mu;
Fetcher* g_fetcher = nullptr;

void ShutdownAtExit() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_fetcher != nullptr) g_fetcher->Shutdown();
}

Fetcher* Fetcher::Get(std::string* error) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_fetcher == nullptr) {
    if (!Curl().ok) return *error = Curl().error, nullptr;
    auto* f = new Fetcher();
    if (!f->Start(error)) {
      delete f;
      return nullptr;
    }
    g_fetcher = f;
    static bool hooks = [] {
      // Registered after curl (and OpenSSL) initialised, so it runs before
      // their own exit handlers.
      std::atexit(ShutdownAtExit);
      // A forked child has no loop thread: it starts its own fetcher.
      pthread_atfork([] { g_mu.lock(); }, [] { g_mu.unlock(); },
                     [] {
                       g_fetcher = nullptr;
                       g_mu.unlock();
                     });
      return true;
    }();
    (void)hooks;
  }
  return g_fetcher;
}

// ---------------------------------------------------------------------------
// The kernels.

// The attributes both fetch kernels share, and what they do before the network.
class FetchKernel : public AsyncOpKernel {
 public:
  explicit FetchKernel(OpKernelConstruction* ctx) : AsyncOpKernel(ctx) {
    auto opt = std::make_shared<Options>();
    float f;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("connect_timeout", &f));
    opt->connect_timeout = f;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("read_timeout", &f));
    opt->read_timeout = f;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("deadline", &f));
    opt->deadline = f;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("backoff", &f));
    opt->backoff = f;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_backoff", &f));
    opt->max_backoff = f;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dns_cache_ttl", &f));
    opt->dns_cache_ttl = f;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("retries", &opt->retries));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_redirects", &opt->max_redirects));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_bytes", &opt->max_bytes));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_in_flight", &opt->max_in_flight));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("connections_per_host", &opt->connections_per_host));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("trust_env", &opt->trust_env));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pass_transcodable", &opt->pass_transcodable));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("user_agent", &opt->user_agent));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("schemes", &opt->schemes));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cache_dir", &opt->cache_dir));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("ca_file", &opt->ca_file));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("verify_tls", &opt->verify_tls));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("remember_failures_s", &f));
    opt->remember_failures_s = f;
    OP_REQUIRES(ctx, opt->cache_dir.empty() || Crc32() != nullptr,
                tensorflow::errors::FailedPrecondition("cache_dir needs zlib (libz.so.1) for its checksums"));
    for (auto& s : opt->schemes) {
      std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
      opt->http |= s == "http";
      opt->https |= s == "https";
      opt->file |= s == "file";
    }
    opt->protocols = opt->http && opt->https ? "http,https" : opt->https ? "https" : "http";
    OP_REQUIRES(ctx, opt->connect_timeout > 0 && opt->read_timeout > 0 && opt->deadline > 0,
                tensorflow::errors::InvalidArgument("timeouts must be > 0"));
    OP_REQUIRES(ctx, opt->max_in_flight >= 1 && opt->connections_per_host >= 1 && opt->max_bytes >= 1,
                tensorflow::errors::InvalidArgument("max_in_flight, connections_per_host, max_bytes must be >= 1"));
    OP_REQUIRES(ctx, opt->retries >= 0 && opt->max_redirects >= 0 && opt->backoff >= 0 && opt->max_backoff >= 0,
                tensorflow::errors::InvalidArgument("retries, max_redirects, backoff, max_backoff must be >= 0"));
    opt_ = opt;
  }

 protected:
  // Answers `url` without the network where it can: a file:// read, a cache
  // hit or remembered failure, a scheme not allowed.  Returns false then, with
  // *body, *v and *attempts set; true if it needs a transfer (*cache_path set
  // when there is a cache).
  bool NeedsTransfer(const std::string& url, tstring* body, Verdict* v, int32_t* attempts,
                     std::string* cache_path) const {
    const Options& opt = *opt_;
    std::string scheme = SchemeOf(url);
    *attempts = 0;
    if ((scheme == "http" && opt.http) || (scheme == "https" && opt.https)) {
      if (opt.cache_dir.empty()) return true;
      *cache_path = CachePath(opt.cache_dir, url);
      return !FromCache(*cache_path, opt, body, v);
    }
    if ((scheme.empty() || scheme == "file") && opt.file) {
      *attempts = 1;
      *v = ReadLocal(url, opt, body);
      if (!v->ok) *body = tstring();
    } else if (std::find(opt.schemes.begin(), opt.schemes.end(), scheme) != opt.schemes.end()) {
      v->reason = "invalid_url", v->detail = "scheme " + scheme + " is not read by the native fetch op";
    } else {
      std::string allowed;
      for (const auto& s : opt.schemes) allowed += (allowed.empty() ? "" : ", ") + s;
      v->reason = "invalid_url", v->detail = "scheme not in (" + allowed + ")";
    }
    return false;
  }

  // Appends a transfer of `url` to `batch`; the caller sets where its result goes.
  static Transfer* AddTransfer(Batch* batch, std::string url, std::string cache_path) {
    Transfer& t = batch->transfers[batch->size];
    t.cache_path = std::move(cache_path);
    t.slot = batch->size++;
    t.batch = batch;
    t.url = std::move(url);
    return &t;
  }

  // Numbers `batch` for the loop and returns the fetcher to submit it to, or
  // nullptr after failing the op (done called) when the fetcher cannot start.
  static Fetcher* Launch(OpKernelContext* ctx, const DoneCallback& done, Batch* batch) {
    static std::atomic<uint64_t> next_id{1};
    std::string error;
    Fetcher* fetcher = Fetcher::Get(&error);
    if (fetcher == nullptr) {
      ctx->SetStatus(tensorflow::errors::FailedPrecondition(error));
      done();
      return nullptr;
    }
    batch->id = next_id++;
    batch->remaining = batch->size;
    return fetcher;
  }

  std::shared_ptr<const Options> opt_;

 private:
  // A cache hit (a body, or a remembered permanent failure) into *body / *v; false on a miss.
  static bool FromCache(const std::string& path, const Options& opt, tstring* body, Verdict* v) {
    bool corrupt = false;
    if (ReadCached(path, body, &corrupt)) {
      *v = CheckImage(*body, opt);
    } else {
      if (corrupt) CorruptCounts::Get().Add(opt.cache_dir);
      v->reason = RememberedFailure(path, opt.remember_failures_s);
      if (v->reason.empty()) return false;
      v->detail = "remembered from an earlier attempt (cache)";
    }
    if (!v->ok) *body = tstring();
    return true;
  }
};

// TfeedFetch: row i of every output answers URL i.
class TfeedFetchOp : public FetchKernel {
 public:
  using FetchKernel::FetchKernel;

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    const Tensor& urls = ctx->input(0);
    Tensor *bodies, *reasons, *attempts, *details;
    OP_REQUIRES_OK_ASYNC(ctx, ctx->allocate_output(0, urls.shape(), &bodies), done);
    OP_REQUIRES_OK_ASYNC(ctx, ctx->allocate_output(1, urls.shape(), &reasons), done);
    OP_REQUIRES_OK_ASYNC(ctx, ctx->allocate_output(2, urls.shape(), &attempts), done);
    OP_REQUIRES_OK_ASYNC(ctx, ctx->allocate_output(3, urls.shape(), &details), done);
    auto in = urls.flat<tstring>();
    const int64_t n = in.size();
    auto batch = std::make_unique<Batch>();
    batch->opt = opt_;
    batch->bodies = bodies->flat<tstring>().data();
    batch->reasons = reasons->flat<tstring>().data();
    batch->details = details->flat<tstring>().data();
    batch->attempts = attempts->flat<int32_t>().data();
    batch->transfers.reset(new Transfer[n]);
    for (int64_t i = 0; i < n; ++i) {
      std::string url(in(i).data(), in(i).size());
      std::string cache_path;
      Verdict v;
      if (NeedsTransfer(url, &batch->bodies[i], &v, &batch->attempts[i], &cache_path)) {
        AddTransfer(batch.get(), std::move(url), std::move(cache_path))->out = i;
        continue;
      }
      batch->reasons[i] = v.ok ? "" : v.reason;
      batch->details[i] = v.detail;
    }
    if (batch->size == 0) return done();
    Fetcher* fetcher = Launch(ctx, done, batch.get());
    if (fetcher == nullptr) return;
    batch->ctx = ctx;
    batch->done = std::move(done);
    batch->cm = ctx->cancellation_manager();
    fetcher->Submit(std::move(batch));
  }
};

// TfeedFetchPooled: n rows out for n URLs in, in completion order, drawn from
// every call sharing the lot (see Lot).
class TfeedFetchPooledOp : public FetchKernel {
 public:
  using FetchKernel::FetchKernel;

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    const Tensor& urls = ctx->input(0);
    const Tensor& labels = ctx->input(1);
    const Tensor& lot = ctx->input(2);
    OP_REQUIRES_ASYNC(ctx, labels.shape() == urls.shape() && tensorflow::TensorShapeUtils::IsScalar(lot.shape()),
                      tensorflow::errors::InvalidArgument("labels must match urls; lot must be a scalar"), done);
    auto call = std::make_unique<Call>();
    call->lot = static_cast<uint64_t>(lot.scalar<int64_t>()());
    OP_REQUIRES_ASYNC(ctx, call->lot != 0, tensorflow::errors::InvalidArgument("lot must not be 0"), done);
    Tensor* out[6];
    for (int k = 0; k < 6; ++k) OP_REQUIRES_OK_ASYNC(ctx, ctx->allocate_output(k, urls.shape(), &out[k]), done);
    call->bodies = out[0]->flat<tstring>().data();
    call->labels = out[1]->flat<int64_t>().data();
    call->urls = out[2]->flat<tstring>().data();
    call->reasons = out[3]->flat<tstring>().data();
    call->attempts = out[4]->flat<int32_t>().data();
    call->details = out[5]->flat<tstring>().data();
    auto in = urls.flat<tstring>();
    auto in_labels = labels.flat<int64_t>();
    call->size = in.size();
    auto batch = std::make_unique<Batch>();
    batch->opt = opt_;
    batch->lot = call->lot;
    batch->transfers.reset(new Transfer[call->size]);
    for (int64_t i = 0; i < call->size; ++i) {
      std::string url(in(i).data(), in(i).size());
      Result r;
      std::string cache_path;
      Verdict v;
      if (NeedsTransfer(url, &r.body, &v, &r.attempts, &cache_path)) {
        AddTransfer(batch.get(), std::move(url), std::move(cache_path))->label = in_labels(i);
        continue;
      }
      r.reason = v.ok ? "" : v.reason;
      r.detail = v.detail;
      r.url = in(i);
      r.label = in_labels(i);
      call->Write(std::move(r));  // answered here: this call's own row
    }
    if (batch->size == 0) return done();
    Fetcher* fetcher = Launch(ctx, done, batch.get());
    if (fetcher == nullptr) return;
    call->ctx = ctx;
    call->done = std::move(done);
    call->cm = ctx->cancellation_manager();
    fetcher->SubmitPooled(std::move(batch), std::move(call));
  }
};

class TfeedCurlVersionOp : public tensorflow::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    std::string error;
    OP_REQUIRES(ctx, Fetcher::Get(&error) != nullptr, tensorflow::errors::FailedPrecondition(error));
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {}, &out));
    out->scalar<tstring>()() = Curl().version();
  }
};

class TfeedCacheCorruptOp : public tensorflow::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES(ctx, tensorflow::TensorShapeUtils::IsScalar(ctx->input(0).shape()),
                tensorflow::errors::InvalidArgument("cache_dir must be a scalar"));
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {}, &out));
    out->scalar<int64_t>()() = CorruptCounts::Get().Count(ctx->input(0).scalar<tstring>()());
  }
};

}  // namespace

// Every output of both fetch ops has one row per input URL.
static absl::Status OutputsShapedLikeUrls(tensorflow::shape_inference::InferenceContext* c) {
  for (int i = 0; i < c->num_outputs(); ++i) c->set_output(i, c->input(0));
  return absl::OkStatus();
}

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
    .Attr("max_in_flight: int = 256") \
    .Attr("connections_per_host: int = 256") \
    .Attr("dns_cache_ttl: float = 300.0") \
    .Attr("schemes: list(string) = ['http', 'https']") \
    .Attr("trust_env: bool = false") \
    .Attr("user_agent: string = 'tfeed'") \
    .Attr("pass_transcodable: bool = false") \
    .Attr("cache_dir: string = ''") \
    .Attr("remember_failures_s: float = 86400.0") \
    .Attr("ca_file: string = ''") \
    .Attr("verify_tls: bool = true")

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
  too_large, truncated, too_many_redirects, not_image, decode_error,
  invalid_url, read_error, tls, http_<code> for 4xx, http_5xx).
attempts: tries made (1 = no retry; 0 = none: the URL was invalid, or it was
  answered from cache_dir -- a body, or a remembered permanent failure).
details: for a failure, a human explanation; for a success, "" or, with
  pass_transcodable, the format (tiff, jp2, pnm) the caller must transcode.
cache_dir: a tfeed.DiskCache directory ("" for none): http(s) bodies are read
  from it and stored in it; permanent failures (http_404, http_410, not_image)
  are remembered for remember_failures_s seconds.  A hit refreshes the entry's
  mtime (LRU); the size cap is the caller's (tfeed.DiskCache.grew).
ca_file: PEM file of the CAs trusted for https ("" for the system's);
  verify_tls=false accepts any certificate.
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

REGISTER_OP("TfeedCurlVersion").Output("version: string").SetIsStateful();

REGISTER_OP("TfeedCacheCorrupt")
    .Input("cache_dir: string")
    .Output("count: int64")
    .SetIsStateful()
    .SetShapeFn(tensorflow::shape_inference::ScalarShape)
    .Doc("Corrupt entries of cache_dir (as given to TfeedFetch) this process has deleted.");

REGISTER_KERNEL_BUILDER(Name("TfeedFetch").Device(tensorflow::DEVICE_CPU), TfeedFetchOp);
REGISTER_KERNEL_BUILDER(Name("TfeedFetchPooled").Device(tensorflow::DEVICE_CPU), TfeedFetchPooledOp);
REGISTER_KERNEL_BUILDER(Name("TfeedCurlVersion").Device(tensorflow::DEVICE_CPU), TfeedCurlVersionOp);
REGISTER_KERNEL_BUILDER(Name("TfeedCacheCorrupt").Device(tensorflow::DEVICE_CPU), TfeedCacheCorruptOp);

}  // namespace tfeed

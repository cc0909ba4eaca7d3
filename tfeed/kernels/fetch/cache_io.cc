#include "cache_io.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <utility>

#include "contract.h"
#include "local_files.h"

namespace tfeed {
namespace fetch {
namespace {

namespace c = ::tfeed::contract;
using tensorflow::tstring;

static_assert(c::kCacheMagicOffset == 0 && sizeof c::kCacheMagic == c::kCacheMagicBytes + 1,
              "the cache magic leads the header");
static_assert(c::kCacheLengthBytes == sizeof(uint64_t) && c::kCacheCrcBytes == sizeof(uint32_t),
              "the header holds a u64 length and a u32 crc32");
static_assert(c::kCacheCrcOffset + c::kCacheCrcBytes == c::kCacheHeaderBytes, "the crc32 ends the header");

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

// zlib's crc32, from the system libz; null if absent.
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

bool ReadFully(int fd, char* out, size_t size) { return ReadUpTo(fd, out, size) == size; }

// Entries are opened without following a symlink and without blocking (a
// planted FIFO never hangs the reader); only regular files count.
constexpr int kReadFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
constexpr off_t kMaxReasonBytes = 64;
constexpr double kClockSkewS = 60;  // a .fail dated further ahead is expired (tfeed/fetching/cache.py)

bool ReadAll(const std::string& path, std::string* out) {
  int fd = open(path.c_str(), kReadFlags);
  if (fd < 0) return false;
  struct stat st;
  bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= kMaxReasonBytes;
  if (ok) {
    out->resize(st.st_size);
    out->resize(ReadUpTo(fd, out->data(), out->size()));
  }
  close(fd);
  return ok;
}

// The header of a regular file of `file_size` bytes, read from fd: its body length and crc32, or false.
bool ReadHeader(int fd, size_t file_size, uint64_t* length, uint32_t* crc) {
  char header[c::kCacheHeaderBytes];
  if (file_size < c::kCacheHeaderBytes || !ReadFully(fd, header, c::kCacheHeaderBytes) ||
      std::memcmp(header, c::kCacheMagic, c::kCacheMagicBytes) != 0) {
    return false;
  }
  std::memcpy(length, header + c::kCacheLengthOffset, c::kCacheLengthBytes);  // little-endian, as x86 and arm64 Linux are
  std::memcpy(crc, header + c::kCacheCrcOffset, c::kCacheCrcBytes);
  return *length == file_size - c::kCacheHeaderBytes;
}

// An unpredictable temporary name: a planted file or symlink cannot be guessed into place.
std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char suffix[40];
  std::snprintf(suffix, sizeof suffix, ".%016llx.tmp", static_cast<unsigned long long>(rng()));
  return suffix;
}

void WriteAtomic(const std::string& path, const std::string& head, const char* data, size_t n) {
  mkdir(path.substr(0, path.rfind('/')).c_str(), 0700);
  std::string tmp = path + RandomSuffix();
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
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

}  // namespace

bool HaveChecksum() { return Crc32() != nullptr; }

std::string CachePath(const std::string& dir, const std::string& url) {
  std::string digest = Sha256::Hex(url);
  return dir + "/" + digest.substr(0, 2) + "/" + digest;
}

bool ReadCached(const std::string& path, int64_t max_body, tstring* body, bool* corrupt) {
  *corrupt = false;
  int fd = open(path.c_str(), kReadFlags);
  if (fd < 0) {
    if (errno == ELOOP) *corrupt = unlink(path.c_str()) == 0;  // a symlink planted as an entry
    return false;
  }
  struct stat st;
  uint64_t length = 0;
  uint32_t crc = 0;
  bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (ok && st.st_size > max_body + static_cast<off_t>(c::kCacheHeaderBytes)) {
    close(fd);  // larger than this config downloads: a miss (the download will say too_large), kept
    return false;
  }
  ok = ok && fcntl(fd, F_SETFL, 0) == 0 && ReadHeader(fd, st.st_size, &length, &crc);
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

std::string RememberedFailure(const std::string& path, double remember_s) {
  std::string fail_path = path + ".fail", reason;
  struct stat st;
  if (remember_s <= 0 || lstat(fail_path.c_str(), &st) != 0) return "";
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  double age = static_cast<double>(now.tv_sec - st.st_mtim.tv_sec) + 1e-9 * (now.tv_nsec - st.st_mtim.tv_nsec);
  if (age > remember_s || age < -kClockSkewS) {  // a future time expires too: never remembered forever
    unlink(fail_path.c_str());
    return "";
  }
  if (!ReadAll(fail_path, &reason)) return "";
  for (const char* permanent : c::kPermanentReasons)
    if (reason == permanent) return reason;
  return "";
}

void StoreCached(const std::string& path, const tstring& body) {
  std::string head(c::kCacheHeaderBytes, '\0');
  const uint64_t length = body.size();
  const uint32_t crc = Checksum(body.data(), body.size());
  std::memcpy(&head[c::kCacheMagicOffset], c::kCacheMagic, c::kCacheMagicBytes);
  std::memcpy(&head[c::kCacheLengthOffset], &length, c::kCacheLengthBytes);
  std::memcpy(&head[c::kCacheCrcOffset], &crc, c::kCacheCrcBytes);
  WriteAtomic(path, head, body.data(), body.size());
}

void RememberFailure(const std::string& path, const std::string& reason, double remember_s) {
  if (remember_s <= 0) return;
  for (const char* permanent : c::kPermanentReasons)
    if (reason == permanent) return WriteAtomic(path + ".fail", reason, "", 0);
}

}  // namespace fetch
}  // namespace tfeed

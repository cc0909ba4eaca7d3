// The download cache (tfeed/fetching/cache.py's format, tfeed/contract.py's
// constants): <dir>/<aa>/<sha256(url) hex> holds magic | length u64 LE |
// crc32 u32 LE | body; "<entry>.fail" holds a remembered permanent failure's
// reason, valid for remember_failures_s after its mtime.  Entries are written
// to a temporary file and renamed into place.

#ifndef TFEED_KERNELS_FETCH_CACHE_IO_H_
#define TFEED_KERNELS_FETCH_CACHE_IO_H_

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "tensorflow/core/platform/tstring.h"

namespace tfeed {
namespace fetch {

// zlib's crc32 (the cache's checksum) from the system libz: false if absent.
bool HaveChecksum();

// Where the entry of `url` lives under the cache directory `dir`.
std::string CachePath(const std::string& dir, const std::string& url);

// The cached body of an entry, or false (missing; a corrupt entry is deleted
// and *corrupt set).  The body is read straight into the output tensor's
// string: no zero-filled buffer, no second copy.  Only a regular file is read
// (a symlink, FIFO or device planted in the cache is deleted as corrupt, the
// open never blocks); an entry of more than max_body body bytes is a miss.
bool ReadCached(const std::string& path, int64_t max_body, tensorflow::tstring* body, bool* corrupt);

// A remembered permanent failure's reason, or "" (none, or expired and deleted).
std::string RememberedFailure(const std::string& path, double remember_s);

void StoreCached(const std::string& path, const tensorflow::tstring& body);

// Remembers `reason` for the entry if it is a permanent one (and remember_s > 0).
void RememberFailure(const std::string& path, const std::string& reason, double remember_s);

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

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_CACHE_IO_H_

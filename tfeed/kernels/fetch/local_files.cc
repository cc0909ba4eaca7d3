#include "local_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "contract.h"
#include "file_root.h"
#include "sniff.h"

namespace tfeed {
namespace fetch {

namespace c = ::tfeed::contract;

std::string SchemeOf(const std::string& url) {
  if (url.find("://") == std::string::npos) return "";
  size_t colon = url.find(':');
  if (colon == 0 || !std::isalpha(static_cast<unsigned char>(url[0]))) return "";
  std::string scheme;
  for (size_t i = 0; i < colon; ++i) {
    char ch = url[i];
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '+' && ch != '-' && ch != '.') return "";
    scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
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

size_t ReadUpTo(int fd, char* out, size_t size) {
  size_t got = 0;
  while (got < size) {
    ssize_t r = read(fd, out + got, size - got);
    if (r <= 0) break;
    got += r;
  }
  return got;
}

// Opens the file of `path` (under opt.file_root when set) for ReadLocal; -1 with *v set on failure.
int OpenLocal(const std::string& path, const Options& opt, Verdict* v) {
  if (path.find('\0') != std::string::npos) {  // percent-encoded: open() would stop there, at another file
    v->reason = c::kInvalidUrl;
    v->detail = "NUL byte in the file path";
    return -1;
  }
  if (opt.file_root.empty()) {
    int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);  // a FIFO's open never blocks
    if (fd < 0) {
      v->reason = c::kReadError;
      v->detail = path + ": " + std::strerror(errno);
    }
    return fd;
  }
  BeneathError error;
  std::string detail;
  int fd = OpenBeneath(opt.file_root, path, &error, &detail);
  if (fd < 0) {
    const bool outside = error == BeneathError::kOutside;
    v->reason = outside ? c::kOutsideFileRoot : c::kReadError;
    v->detail = outside ? path + " is outside file_root " + opt.file_root : path + ": " + detail;
  }
  return fd;
}

Verdict ReadLocal(const std::string& url, const Options& opt, tensorflow::tstring* body) {
  Verdict v;
  std::string path = LocalPath(url);
  int fd = OpenLocal(path, opt, &v);
  if (fd < 0) return v;
  struct stat st;
  const bool stated = fstat(fd, &st) == 0;
  if (!stated || !S_ISREG(st.st_mode)) {  // FIFOs, devices, directories: read_error
    int err = stated ? EISDIR : errno;
    close(fd);
    v.reason = c::kReadError;
    v.detail = path + ": " + std::strerror(err);
    return v;
  }
  if (st.st_size > opt.max_bytes) {
    close(fd);
    v.reason = c::kTooLarge;
    v.detail = std::to_string(st.st_size) + " bytes > max_bytes " + std::to_string(opt.max_bytes);
    return v;
  }
  fcntl(fd, F_SETFL, 0);
  body->resize_uninitialized(st.st_size + 1);  // one byte more: a file that grew past max_bytes is caught
  const size_t got = ReadUpTo(fd, body->mdata(), st.st_size + 1);
  close(fd);
  if (static_cast<int64_t>(got) > opt.max_bytes) {
    body->clear();
    v.reason = c::kTooLarge;
    v.detail = "file grew past max_bytes " + std::to_string(opt.max_bytes);
    return v;
  }
  body->resize_uninitialized(got);
  return CheckImage(body->data(), body->size(), opt.pass_transcodable, opt.max_pixels);
}

}  // namespace fetch
}  // namespace tfeed

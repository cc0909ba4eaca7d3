#include "file_root.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <vector>

#include "contract.h"

namespace tfeed {
namespace fetch {
namespace {

#ifdef O_PATH
constexpr int kBeneathDirFlags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
#else
constexpr int kBeneathDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
#endif
constexpr int kBeneathReadFlags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC;

struct HeldDir {
  int fd;
  dev_t dev;
  ino_t ino;
};

// The components of `path` in front of *pending (in order), without "" and ".".
void PushComponents(const std::string& path, std::deque<std::string>* pending) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    std::string part = path.substr(start, slash - start);
    if (!part.empty() && part != ".") parts.push_back(part);
    start = slash + 1;
  }
  pending->insert(pending->begin(), parts.begin(), parts.end());
}

// The directories from / to the current one; closes what it holds.
class BeneathWalk {
 public:
  ~BeneathWalk() {
    for (const HeldDir& d : dirs_) close(d.fd);
  }
  bool Push(int fd) {
    struct stat st;
    if (fd < 0) return false;
    if (fstat(fd, &st) != 0) {
      close(fd);
      return false;
    }
    dirs_.push_back(HeldDir{fd, st.st_dev, st.st_ino});
    return true;
  }
  void PopTo(size_t depth) {
    while (dirs_.size() > depth) {
      close(dirs_.back().fd);
      dirs_.pop_back();
    }
  }
  size_t depth() const { return dirs_.size(); }
  int top() const { return dirs_.back().fd; }
  bool Holds(const struct stat& root) const {
    for (const HeldDir& d : dirs_)
      if (d.dev == root.st_dev && d.ino == root.st_ino) return true;
    return false;
  }

 private:
  std::vector<HeldDir> dirs_;  // from / to the current directory
};

int FailBeneath(BeneathError kind, int err, BeneathError* error, std::string* detail) {
  *error = kind;
  *detail = std::strerror(err);
  return -1;
}

}  // namespace

int OpenBeneath(const std::string& root, const std::string& given, BeneathError* error, std::string* detail) {
  *error = BeneathError::kNone;
  struct stat root_st;
  if (stat(root.c_str(), &root_st) != 0) return FailBeneath(BeneathError::kFailed, errno, error, detail);
  std::string path = given;
  if (path.empty() || path[0] != '/') {
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == nullptr) return FailBeneath(BeneathError::kFailed, errno, error, detail);
    path = std::string(cwd) + "/" + path;
  }
  std::deque<std::string> pending;
  PushComponents(path, &pending);
  BeneathWalk walk;
  if (!walk.Push(open("/", kBeneathDirFlags))) return FailBeneath(BeneathError::kFailed, errno, error, detail);
  int links = 0;
  while (!pending.empty()) {
    std::string name = std::move(pending.front());
    pending.pop_front();
    if (name == "..") {
      walk.PopTo(walk.depth() > 1 ? walk.depth() - 1 : 1);
      continue;
    }
    const bool inside = walk.Holds(root_st);
    const BeneathError failed = inside ? BeneathError::kFailed : BeneathError::kOutside;
    struct stat st;
    if (fstatat(walk.top(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return FailBeneath(failed, errno, error, detail);
    if (S_ISLNK(st.st_mode)) {
      if (++links > contract::kMaxSymlinks) return FailBeneath(failed, ELOOP, error, detail);
      std::string target(PATH_MAX, '\0');
      ssize_t n = readlinkat(walk.top(), name.c_str(), &target[0], target.size());
      if (n < 0 || static_cast<size_t>(n) >= target.size())
        return FailBeneath(failed, n < 0 ? errno : ENAMETOOLONG, error, detail);
      target.resize(n);
      if (!target.empty() && target[0] == '/') walk.PopTo(1);
      PushComponents(target, &pending);
      continue;
    }
    if (pending.empty()) {
      if (!inside) return FailBeneath(BeneathError::kOutside, EACCES, error, detail);
      int fd = openat(walk.top(), name.c_str(), kBeneathReadFlags);
      return fd >= 0 ? fd : FailBeneath(BeneathError::kFailed, errno, error, detail);
    }
    if (!walk.Push(openat(walk.top(), name.c_str(), kBeneathDirFlags))) return FailBeneath(failed, errno, error, detail);
  }
  return FailBeneath(BeneathError::kOutside, EISDIR, error, detail);  // "/" or the like: no file named
}

}  // namespace fetch
}  // namespace tfeed

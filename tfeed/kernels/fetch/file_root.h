// Local files confined to FetchConfig.file_root: the walk of tfeed.safefs.open_beneath.

#ifndef TFEED_KERNELS_FETCH_FILE_ROOT_H_
#define TFEED_KERNELS_FETCH_FILE_ROOT_H_

#include <string>

namespace tfeed {
namespace fetch {

// How OpenBeneath ended when it returned -1.
enum class BeneathError { kNone, kOutside, kFailed };

// A descriptor (O_RDONLY | O_NONBLOCK | O_CLOEXEC) of `path` (absolute, or
// relative to the working directory) if it resolves to a file beneath the
// directory `root`; else -1 with *error set: kOutside when it resolves
// elsewhere (the file is never opened; also for a failure while the walk is
// outside root), kFailed for another failure (*detail holds strerror).
// Same rules as tfeed.safefs.open_beneath, whose docstring says why this walk:
// each component is opened O_NOFOLLOW relative to its parent's descriptor
// (directories O_PATH), symlinks are read and resolved in place (at most
// contract::kMaxSymlinks), ".." returns to the parent's descriptor, and the
// file is beneath root when root (device and inode) is among the directories
// held when it is opened.
int OpenBeneath(const std::string& root, const std::string& path, BeneathError* error, std::string* detail);

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_FILE_ROOT_H_

// URL schemes and local files: what the kernels answer without the network.

#ifndef TFEED_KERNELS_FETCH_LOCAL_FILES_H_
#define TFEED_KERNELS_FETCH_LOCAL_FILES_H_

#include <cstddef>
#include <string>

#include "classify.h"
#include "options.h"
#include "tensorflow/core/platform/tstring.h"

namespace tfeed {
namespace fetch {

// Scheme as urllib.parse.urlsplit sees it when the URL has "://", else "".
std::string SchemeOf(const std::string& url);

// The path of a file:// URL (percent-decoded, without query or fragment), or `url` itself.
std::string LocalPath(const std::string& url);

// Reads up to size bytes from fd (fewer only at end of file or on an error); returns how many.
size_t ReadUpTo(int fd, char* out, size_t size);

// Reads a local file on the calling thread (a tf.data thread, not the loop)
// into *body, and checks that it is an image.  Only a regular file, at most
// max_bytes; with opt.file_root only one beneath it (else outside_file_root,
// never opened: file_root.h); a NUL byte in the decoded path is invalid_url.
Verdict ReadLocal(const std::string& url, const Options& opt, tensorflow::tstring* body);

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_LOCAL_FILES_H_

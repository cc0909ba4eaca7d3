// Recognise image bytes by their magic numbers (the generated contract.h
// signatures, the table tfeed/fetching/sniff.py reads), before any decoding.

#ifndef TFEED_KERNELS_FETCH_SNIFF_H_
#define TFEED_KERNELS_FETCH_SNIFF_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "classify.h"
#include "contract.h"
#include "../shared/image_header.h"

namespace tfeed {
namespace fetch {

// The first signature `data` matches, or nullptr: not an image.
const contract::Signature* Sniff(const char* data, size_t n);

// The first bytes as Python's repr of bytes shows them: b'...'.
std::string Preview(const char* data, size_t n);

// Success stays success only for image bytes: a body whose header declares
// more than max_pixels (> 0) pixels is too_large, a format in
// kUnsupported is unsupported_format; a decodable format passes; one that
// needs transcoding (an animated WebP too) passes, its name in the detail,
// with pass_transcodable, else fails as unsupported_format (graph-only
// pipelines cannot run the Python transcoder); anything else is not_image.
Verdict CheckImage(const char* data, size_t n, bool pass_transcodable,
                   int64_t max_pixels = contract::kDefaultMaxPixels);

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_SNIFF_H_

// Read an image's format, stored size and EXIF orientation from its first
// bytes, without decoding it.  Pure: no TensorFlow, no allocation, so both
// libraries compile it (the fetch check's max_pixels and animated-WebP
// routing; the decode stage's tfeed_image_header op) and tests compile it alone.
//
// Cost: a few hundred nanoseconds per body (it walks JPEG markers up to SOF,
// PNG chunks up to IDAT, an ISO-BMFF body's first kBmffHeaderWindow bytes).

#ifndef TFEED_KERNELS_SHARED_IMAGE_HEADER_H_
#define TFEED_KERNELS_SHARED_IMAGE_HEADER_H_

#include <cstddef>
#include <cstdint>

#include "image_contract.h"

namespace tfeed {
namespace image {

struct Header {
  int format = contract::kFormatUnknown;  // a tfeed.contract.HEADER_FORMATS code
  std::int64_t width = 0, height = 0;     // the stored frame, before orientation; 0: not found
  int orientation = 1;                    // JPEG EXIF orientation 1-8; 1 when absent or invalid
  bool animated = false;                  // a WebP with its animation flag set
  bool alpha = false;                     // PNG colour type 4/6 or a tRNS chunk; WebP with alpha
};

// The header of `data` (its first `n` bytes).  Sizes are those the largest
// image the body declares (ICO: the largest entry, PNG ones read from their
// IHDR; AVIF/HEIC: the largest 'ispe' property).
Header ReadHeader(const unsigned char* data, std::size_t n);

// Pixels the header declares (width * height, 0 when unknown).
inline std::int64_t Pixels(const Header& h) { return h.width * h.height; }

}  // namespace image
}  // namespace tfeed

#endif  // TFEED_KERNELS_SHARED_IMAGE_HEADER_H_

#include "image_header.h"

#include <algorithm>
#include <cstring>

namespace tfeed {
namespace image {
namespace {

namespace c = ::tfeed::contract;
using Bytes = const unsigned char*;

std::uint32_t Be16(Bytes p) { return (p[0] << 8) | p[1]; }
std::uint32_t Be32(Bytes p) { return (std::uint32_t(p[0]) << 24) | (p[1] << 16) | (p[2] << 8) | p[3]; }
std::uint32_t Le16(Bytes p) { return p[0] | (p[1] << 8); }
std::uint32_t Le24(Bytes p) { return p[0] | (p[1] << 8) | (p[2] << 16); }
std::uint32_t Le32(Bytes p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (std::uint32_t(p[3]) << 24); }
bool Is(Bytes p, const char* text) { return std::memcmp(p, text, std::strlen(text)) == 0; }

// The Orientation (0x0112) of a TIFF structure (EXIF's payload) in [tiff, tiff + n); 1 if none.
int ExifOrientation(Bytes tiff, std::size_t n) {
  if (n < 8) return 1;
  const bool little = Is(tiff, "II");
  if (!little && !Is(tiff, "MM")) return 1;
  auto u16 = [&](std::size_t at) { return little ? Le16(tiff + at) : Be16(tiff + at); };
  auto u32 = [&](std::size_t at) { return little ? Le32(tiff + at) : Be32(tiff + at); };
  const std::size_t ifd = u32(4);
  if (ifd + 2 > n) return 1;
  const std::size_t count = u16(ifd);
  for (std::size_t i = 0; i < count && ifd + 2 + 12 * (i + 1) <= n; ++i) {
    const std::size_t entry = ifd + 2 + 12 * i;
    if (u16(entry) != 0x0112) continue;
    const int value = static_cast<int>(u16(entry + 8));
    return value >= 1 && value <= 8 ? value : 1;
  }
  return 1;
}

// Markers up to the first SOFn: its size, and the orientation of an APP1 Exif segment before it.
void ReadJpeg(Bytes d, std::size_t n, Header* h) {
  std::size_t at = 2;
  while (at + 4 <= n) {
    if (d[at] != 0xFF) return;
    const unsigned marker = d[at + 1];
    if (marker == 0xFF) { ++at; continue; }  // fill byte
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) { at += 2; continue; }  // no length
    if (marker == 0xD9 || marker == 0xDA) return;  // end of image / start of scan before any SOF
    const std::size_t length = Be16(d + at + 2);
    if (length < 2) return;
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (sof) {
      if (at + 9 <= n) h->height = Be16(d + at + 5), h->width = Be16(d + at + 7);
      return;
    }
    if (marker == 0xE1 && length >= 8 && at + 10 <= n && Is(d + at + 4, "Exif") && h->orientation == 1) {
      const std::size_t end = std::min(n, at + 2 + length);
      h->orientation = ExifOrientation(d + at + 10, end - (at + 10));
    }
    at += 2 + length;
  }
}

void ReadPng(Bytes d, std::size_t n, Header* h) {
  if (n < 26 || !Is(d + 12, "IHDR")) return;
  h->width = Be32(d + 16), h->height = Be32(d + 20);
  h->alpha = d[25] == 4 || d[25] == 6;
  for (std::size_t at = 8; at + 8 <= n && !h->alpha;) {  // a tRNS chunk comes before the first IDAT
    if (Is(d + at + 4, "IDAT") || Is(d + at + 4, "IEND")) return;
    h->alpha = Is(d + at + 4, "tRNS");
    at += 12 + static_cast<std::size_t>(Be32(d + at));
  }
}

void ReadWebp(Bytes d, std::size_t n, Header* h) {
  if (n < 30) return;
  if (Is(d + 12, "VP8X")) {
    h->animated = (d[20] & 0x02) != 0, h->alpha = (d[20] & 0x10) != 0;
    h->width = Le24(d + 24) + 1, h->height = Le24(d + 27) + 1;
  } else if (Is(d + 12, "VP8L") && d[20] == 0x2F) {
    const std::uint32_t bits = Le32(d + 21);
    h->width = (bits & 0x3FFF) + 1, h->height = ((bits >> 14) & 0x3FFF) + 1, h->alpha = (bits >> 28) & 1;
  } else if (Is(d + 12, "VP8 ")) {
    h->width = Le16(d + 26) & 0x3FFF, h->height = Le16(d + 28) & 0x3FFF;
  }
}

void ReadTiff(Bytes d, std::size_t n, Header* h) {
  const bool little = d[0] == 'I';
  auto u16 = [&](std::size_t at) { return little ? Le16(d + at) : Be16(d + at); };
  auto u32 = [&](std::size_t at) { return little ? Le32(d + at) : Be32(d + at); };
  if (n < 8) return;
  const std::size_t ifd = u32(4);
  if (ifd + 2 > n) return;
  for (std::size_t i = 0, count = u16(ifd); i < count && ifd + 2 + 12 * (i + 1) <= n; ++i) {
    const std::size_t entry = ifd + 2 + 12 * i;
    const std::uint32_t tag = u16(entry), value = u16(entry + 2) == 3 ? u16(entry + 8) : u32(entry + 8);
    if (tag == 256) h->width = value;
    if (tag == 257) h->height = value;
  }
}

// ISO-BMFF (AVIF / HEIC): the brands tell the format, the largest 'ispe' property the size.
void ReadBmff(Bytes d, std::size_t n, Header* h) {
  const std::size_t ftyp_end = std::min<std::size_t>(n, Be32(d));
  h->format = c::kFormatHeic;
  for (std::size_t at = 8; at + 4 <= ftyp_end; at += 4)
    if (Is(d + at, "avif") || Is(d + at, "avis")) h->format = c::kFormatAvif;
  const std::size_t window = std::min(n, c::kBmffHeaderWindow);
  for (std::size_t at = 4; at + 16 <= window; ++at) {
    if (d[at] != 'i' || !Is(d + at, "ispe")) continue;
    const std::int64_t width = Be32(d + at + 8), height = Be32(d + at + 12);
    if (width * height > Pixels(*h)) h->width = width, h->height = height;
  }
}

// ICO: the largest directory entry (0 means 256), or the IHDR of an entry stored as PNG.
void ReadIco(Bytes d, std::size_t n, Header* h) {
  const std::size_t count = Le16(d + 4);
  for (std::size_t i = 0; i < count && 6 + 16 * (i + 1) <= n; ++i) {
    Bytes entry = d + 6 + 16 * i;
    Header one;
    one.width = entry[0] ? entry[0] : 256, one.height = entry[1] ? entry[1] : 256;
    const std::size_t offset = Le32(entry + 12);
    if (offset < n && n - offset >= 26 && Is(d + offset, "\x89PNG")) ReadPng(d + offset, n - offset, &one);
    if (Pixels(one) > Pixels(*h)) h->width = one.width, h->height = one.height;
    h->alpha = true;
  }
}

}  // namespace

Header ReadHeader(const unsigned char* d, std::size_t n) {
  Header h;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) {
    h.format = c::kFormatJpeg, ReadJpeg(d, n, &h);
  } else if (n >= 8 && Is(d, "\x89PNG\r\n\x1a\n")) {
    h.format = c::kFormatPng, ReadPng(d, n, &h);
  } else if (n >= 10 && (Is(d, "GIF87a") || Is(d, "GIF89a"))) {
    h.format = c::kFormatGif, h.width = Le16(d + 6), h.height = Le16(d + 8);
  } else if (n >= 26 && Is(d, "BM")) {
    const bool core = Le32(d + 14) == 12;  // BITMAPCOREHEADER: 16-bit sizes
    h.format = c::kFormatBmp;
    h.width = core ? Le16(d + 18) : static_cast<std::int32_t>(Le32(d + 18));
    h.height = core ? Le16(d + 20) : static_cast<std::int32_t>(Le32(d + 22));
    h.width = std::max<std::int64_t>(h.width, -h.width), h.height = std::max<std::int64_t>(h.height, -h.height);
  } else if (n >= 12 && Is(d, "RIFF") && Is(d + 8, "WEBP")) {
    h.format = c::kFormatWebp, ReadWebp(d, n, &h);
  } else if (n >= 8 && (std::memcmp(d, "II*\0", 4) == 0 || std::memcmp(d, "MM\0*", 4) == 0)) {
    h.format = c::kFormatTiff, ReadTiff(d, n, &h);
  } else if (n >= 12 && Is(d + 4, "ftyp")) {
    ReadBmff(d, n, &h);
  } else if (n >= 22 && d[0] == 0 && d[1] == 0 && d[2] == 1 && d[3] == 0) {
    h.format = c::kFormatIco, ReadIco(d, n, &h);
  }
  return h;
}

}  // namespace image
}  // namespace tfeed

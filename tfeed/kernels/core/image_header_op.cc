// TfeedImageHeader: what an image's header says, for the decode stage.
//
//   header = TfeedImageHeader(contents, require_format=0)
//     contents: string []; header: int64 [6] = [format, height, width, orientation, alpha, animated]
//
// require_format > 0: a body of another format fails with InvalidArgument
// (the decode stage's JPEG-only path: no separate assertion op, and libjpeg
// never sees other bytes).
// format is a tfeed.contract.HEADER_FORMATS code (0: unknown); height and
// width are the stored frame before EXIF orientation (0: not in the header);
// orientation is the JPEG EXIF Orientation 1-8 (1 when absent); alpha and
// animated are 0/1.  Reads only the header (kernels/shared/image_header.cc):
// measured well under 1 us per body, against 2-10 ms to decode one.
//
// tfeed_image_header_fields, the same six fields for a plain C caller: the
// Python engine's check reads them through ctypes (2 us per body), as an
// eager op call from its event loop took ~60 us alone, more with the GIL contended.

#include "../shared/image_header.h"

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfeed {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::tstring;

constexpr int kHeaderFields = 6;

void HeaderFields(const unsigned char* data, std::size_t n, std::int64_t* out) {
  const image::Header h = image::ReadHeader(data, n);
  out[0] = h.format, out[1] = h.height, out[2] = h.width, out[3] = h.orientation;
  out[4] = h.alpha ? 1 : 0, out[5] = h.animated ? 1 : 0;
}

REGISTER_OP("TfeedImageHeader")
    .Input("contents: string")
    .Output("header: int64")
    .Attr("require_format: int = 0")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle unused;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 0, &unused));
      c->set_output(0, c->Vector(kHeaderFields));
      return absl::OkStatus();
    });

class ImageHeaderOp : public OpKernel {
 public:
  explicit ImageHeaderOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("require_format", &require_format_));
  }

  void Compute(OpKernelContext* context) override {
    const tstring& contents = context->input(0).scalar<tstring>()();
    std::int64_t fields[kHeaderFields];
    HeaderFields(reinterpret_cast<const unsigned char*>(contents.data()), contents.size(), fields);
    OP_REQUIRES(context, require_format_ <= 0 || fields[0] == require_format_,
                ::tensorflow::errors::InvalidArgument(::tfeed::contract::kFormatRefusal, " (", require_format_,
                                                      "), header format ", fields[0]));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({kHeaderFields}), &output));
    auto out = output->vec<int64_t>();
    for (int i = 0; i < kHeaderFields; ++i) out(i) = fields[i];
  }

 private:
  int64_t require_format_ = 0;
};

REGISTER_KERNEL_BUILDER(Name("TfeedImageHeader").Device(::tensorflow::DEVICE_CPU), ImageHeaderOp);

}  // namespace
}  // namespace tfeed

// [format, height, width, orientation, alpha, animated] of data[0, n) into out[6].
extern "C" __attribute__((visibility("default"))) void tfeed_image_header_fields(const unsigned char* data,
                                                                                std::size_t n, std::int64_t* out) {
  tfeed::HeaderFields(data, n, out);
}

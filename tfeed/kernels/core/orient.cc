// The decode stage's per-image bookkeeping as two kernels instead of ~30 small graph ops
// (on ImageNet-sized images those cost ~8% of the decode's CPU).
//
//   index, target = TfeedScalePlan(region, size, orientation, scaled=true)
//     region: int32 [2], the stored-frame pixels to decode (a JPEG's size, or a crop window's);
//     size: int32 [2], the upright output size; orientation: int32 [] (EXIF 1-8).
//     target: int32 [2], size in the stored frame (swapped for orientations 5-8);
//     index: int32 [], into (1, 2, 4, 8): the largest JPEG DCT reduction at which region
//     (rounded up, as libjpeg does) still covers target; 0 when scaled=false.
//   upright = TfeedOrient(image, orientation)
//     image: [H, W, C] uint8 or float32 in the stored frame; orientation 1 forwards it
//     without a copy; others transpose (5-8) then mirror rows (3, 4, 7, 8) and columns
//     (2, 3, 6, 7), in one pass.

#include <cstdint>
#include <cstring>

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
namespace si = ::tensorflow::shape_inference;

constexpr int kRatios[] = {1, 2, 4, 8};

REGISTER_OP("TfeedScalePlan")
    .Input("region: int32")
    .Input("size: int32")
    .Input("orientation: int32")
    .Output("index: int32")
    .Output("target: int32")
    .Attr("scaled: bool = true")
    .SetShapeFn([](si::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Vector(2));
      return absl::OkStatus();
    });

class ScalePlanOp : public OpKernel {
 public:
  explicit ScalePlanOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("scaled", &scaled_));
  }

  void Compute(OpKernelContext* context) override {
    auto region = context->input(0).vec<int32_t>();
    auto size = context->input(1).vec<int32_t>();
    const int orientation = context->input(2).scalar<int32_t>()();
    const bool swap = orientation >= 5 && orientation <= 8;
    const int64_t target_h = swap ? size(1) : size(0), target_w = swap ? size(0) : size(1);
    int index = 0;
    for (int i = 1; scaled_ && i < 4; ++i) {
      const int64_t r = kRatios[i];
      if ((region(0) + r - 1) / r >= target_h && (region(1) + r - 1) / r >= target_w) index = i;
    }
    Tensor* index_out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({}), &index_out));
    index_out->scalar<int32_t>()() = index;
    Tensor* target_out = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({2}), &target_out));
    target_out->vec<int32_t>()(0) = static_cast<int32_t>(target_h);
    target_out->vec<int32_t>()(1) = static_cast<int32_t>(target_w);
  }

 private:
  bool scaled_ = true;
};

REGISTER_KERNEL_BUILDER(Name("TfeedScalePlan").Device(::tensorflow::DEVICE_CPU), ScalePlanOp);

REGISTER_OP("TfeedOrient")
    .Input("image: T")
    .Input("orientation: int32")
    .Output("upright: T")
    .Attr("T: {uint8, float}")
    .SetShapeFn([](si::InferenceContext* c) {
      si::ShapeHandle image;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &image));
      c->set_output(0, c->MakeShape({c->UnknownDim(), c->UnknownDim(), c->Dim(image, 2)}));
      return absl::OkStatus();
    });

template <typename T>
class OrientOp : public OpKernel {
 public:
  explicit OrientOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& image = context->input(0);
    OP_REQUIRES(context, image.dims() == 3, ::tensorflow::errors::InvalidArgument("TfeedOrient: image must be [H, W, C]"));
    const int orientation = context->input(1).scalar<int32_t>()();
    if (orientation < 2 || orientation > 8) {  // 1, or no valid tag: as stored
      context->set_output(0, image);
      return;
    }
    const int64_t height = image.dim_size(0), width = image.dim_size(1), channels = image.dim_size(2);
    const bool swap = orientation >= 5;
    const bool flip_rows = orientation == 3 || orientation == 4 || orientation == 7 || orientation == 8;
    const bool flip_cols = orientation == 2 || orientation == 3 || orientation == 6 || orientation == 7;
    const int64_t out_h = swap ? width : height, out_w = swap ? height : width;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({out_h, out_w, channels}), &output));
    const T* in = image.flat<T>().data();
    T* out = output->flat<T>().data();
    for (int64_t y = 0; y < out_h; ++y) {
      const int64_t ty = flip_rows ? out_h - 1 - y : y;  // the row of the transposed image
      for (int64_t x = 0; x < out_w; ++x) {
        const int64_t tx = flip_cols ? out_w - 1 - x : x;
        const int64_t sy = swap ? tx : ty, sx = swap ? ty : tx;
        std::memcpy(out + (y * out_w + x) * channels, in + (sy * width + sx) * channels, sizeof(T) * channels);
      }
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("TfeedOrient").Device(::tensorflow::DEVICE_CPU).TypeConstraint<uint8_t>("T"),
                        OrientOp<uint8_t>);
REGISTER_KERNEL_BUILDER(Name("TfeedOrient").Device(::tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        OrientOp<float>);

}  // namespace
}  // namespace tfeed

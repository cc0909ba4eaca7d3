// TfeedAffineMirror: the colour-and-flip end of an augmentation in one node.
//
//   output = TfeedAffineMirror(images, matrix, bias, mean_gain, mirror)
//
// images: float [..., H, W, C] (one image or a batch: any leading dims L);
// matrix: float [L..., C, C]; bias: float [L..., C]; mean_gain: float
// [L..., C, C]; mirror: bool [L...].  For every image i and pixel (h, w):
//
//   output[i, h, w, :] = matrix[i] @ images[i, h, w', :] + bias[i] + mean_gain[i] @ mean[i]
//   mean[i] = the mean colour of images[i];  w' = W - 1 - w where mirror[i], else w
//
// Colour ops whose offset reads the image's mean colour (contrast) are affine
// in that mean, so a chain of them is fully described by (matrix, bias,
// mean_gain), which can be computed from the random draws before the image
// exists.  Why: per image, tf.image's way of doing this (a mean, a reshape, a
// matmul, an add, a tf.cond around tf.reverse) is a dozen graph nodes and
// three passes over the pixels, and in a tf.data function each node costs
// microseconds.  Here it is one node: a pass for the mean (skipped when
// mean_gain is zero) and one that transforms each row and, while the row is
// in cache, reverses it; in place when TensorFlow lets the input buffer be
// reused.  Run per example right after resizing, the image is still in cache:
// ~0.05 ms per 224x224 image on this machine (-O3; -O2 left the loop scalar).

#include <utility>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfeed {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

REGISTER_OP("TfeedAffineMirror")
    .Input("images: float")
    .Input("matrix: float")
    .Input("bias: float")
    .Input("mean_gain: float")
    .Input("mirror: bool")
    .Output("output: float")
    .SetShapeFn(::tensorflow::shape_inference::UnchangedShape);

// One row of `width` pixels of `c` values, in place or not: out = M @ in + b
// (in and out may be the same buffer: each pixel is read before it is written).
void TransformRow(const float* in, float* out, int64_t width, int c, const float* m, const float* b) {
  std::vector<float> pixel(c);
  for (int64_t w = 0; w < width; ++w) {
    for (int i = 0; i < c; ++i) pixel[i] = in[w * c + i];
    for (int i = 0; i < c; ++i) {
      float sum = b[i];
      for (int j = 0; j < c; ++j) sum += m[i * c + j] * pixel[j];
      out[w * c + i] = sum;
    }
  }
}

// The 3-channel case with the matrix in registers: a loop GCC vectorises at -O3.
void TransformRgbRow(const float* in, float* out, int64_t width, const float* m, const float* b) {
  const float m00 = m[0], m01 = m[1], m02 = m[2], m10 = m[3], m11 = m[4], m12 = m[5], m20 = m[6], m21 = m[7],
              m22 = m[8], b0 = b[0], b1 = b[1], b2 = b[2];
  for (int64_t w = 0; w < width; ++w) {
    const float r = in[3 * w], g = in[3 * w + 1], bl = in[3 * w + 2];
    out[3 * w] = m00 * r + m01 * g + m02 * bl + b0;
    out[3 * w + 1] = m10 * r + m11 * g + m12 * bl + b1;
    out[3 * w + 2] = m20 * r + m21 * g + m22 * bl + b2;
  }
}

// Reverses the order of a row's pixels in place.
void MirrorRow(float* row, int64_t width, int c) {
  for (int64_t w = 0, v = width - 1; w < v; ++w, --v) {
    for (int i = 0; i < c; ++i) std::swap(row[w * c + i], row[v * c + i]);
  }
}

// The mean of each of the c channels of `pixels` values (double sums).
void ChannelMean(const float* in, int64_t pixels, int c, double* mean) {
  for (int i = 0; i < c; ++i) mean[i] = 0.0;
  if (c == 3) {
    double r = 0.0, g = 0.0, b = 0.0;
    for (int64_t p = 0; p < pixels; ++p) {
      r += in[3 * p];
      g += in[3 * p + 1];
      b += in[3 * p + 2];
    }
    mean[0] = r, mean[1] = g, mean[2] = b;
  } else {
    for (int64_t p = 0; p < pixels; ++p) {
      for (int i = 0; i < c; ++i) mean[i] += in[p * c + i];
    }
  }
  for (int i = 0; i < c; ++i) mean[i] /= pixels > 0 ? static_cast<double>(pixels) : 1.0;
}

class AffineMirrorOp : public OpKernel {
 public:
  explicit AffineMirrorOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& images = context->input(0);
    const Tensor& matrix = context->input(1);
    const Tensor& bias = context->input(2);
    const Tensor& mean_gain = context->input(3);
    const Tensor& mirror = context->input(4);
    OP_REQUIRES(context, images.dims() >= 3,
                errors::InvalidArgument("images must be [..., height, width, channels], got shape ",
                                        images.shape().DebugString()));
    const int rank = images.dims();
    TensorShape leading = images.shape();
    leading.RemoveLastDims(3);
    const int64_t count = leading.num_elements(), height = images.dim_size(rank - 3);
    const int64_t width = images.dim_size(rank - 2), channels = images.dim_size(rank - 1);
    TensorShape square = leading, vector = leading;
    square.AddDim(channels), square.AddDim(channels), vector.AddDim(channels);
    OP_REQUIRES(context, matrix.shape() == square,
                errors::InvalidArgument("matrix must be ", square.DebugString(), " (the images' leading dims, ",
                                        "channels, channels), got ", matrix.shape().DebugString()));
    OP_REQUIRES(context, bias.shape() == vector,
                errors::InvalidArgument("bias must be ", vector.DebugString(), ", got ", bias.shape().DebugString()));
    OP_REQUIRES(context, mean_gain.shape() == square,
                errors::InvalidArgument("mean_gain must be ", square.DebugString(), ", got ",
                                        mean_gain.shape().DebugString()));
    OP_REQUIRES(context, mirror.shape() == leading,
                errors::InvalidArgument("mirror must be ", leading.DebugString(), ", got ",
                                        mirror.shape().DebugString()));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->forward_input_or_allocate_output({0}, 0, images.shape(), &output));
    const float* in = images.flat<float>().data();
    float* out = output->flat<float>().data();
    const float* m = matrix.flat<float>().data();
    const float* b = bias.flat<float>().data();
    const float* g = mean_gain.flat<float>().data();
    auto flips = mirror.flat<bool>();
    const int c = static_cast<int>(channels);
    const int64_t row = width * channels, image_size = height * row;
    std::vector<double> mean(c);
    std::vector<float> offset(c);
    for (int64_t i = 0; i < count; ++i) {
      const float* mi = m + i * c * c;
      const float* gi = g + i * c * c;
      bool reads_mean = false;
      for (int k = 0; k < c * c; ++k) reads_mean = reads_mean || gi[k] != 0.0f;
      if (reads_mean) ChannelMean(in + i * image_size, height * width, c, mean.data());
      for (int k = 0; k < c; ++k) {
        double sum = b[i * c + k];
        if (reads_mean) {
          for (int j = 0; j < c; ++j) sum += static_cast<double>(gi[k * c + j]) * mean[j];
        }
        offset[k] = static_cast<float>(sum);
      }
      for (int64_t h = 0; h < height; ++h) {
        const int64_t at = i * image_size + h * row;
        if (c == 3) {
          TransformRgbRow(in + at, out + at, width, mi, offset.data());
        } else {
          TransformRow(in + at, out + at, width, c, mi, offset.data());
        }
        if (flips(i)) MirrorRow(out + at, width, c);
      }
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("TfeedAffineMirror").Device(::tensorflow::DEVICE_CPU), AffineMirrorOp);

}  // namespace
}  // namespace tfeed

// TfeedTryCall: call a function; on error return zeros and the error instead of failing.
//
//   outputs, ok, error = TfeedTryCall(args, f=fn, fallbacks=[g, ...], Tout=..., output_shapes=...)
//
// ok is true and outputs are fn(args) when fn succeeds.  When fn fails (e.g.
// a corrupt image in tf.io.decode_image), each fallback is tried in turn with
// the same args; when all fail, ok is false, error holds the last message and
// outputs are zeros of output_shapes (each fully defined), so the element
// still fits a batch and can be masked out after batching.  A cancelled call
// (the iterator was destroyed) still fails.
//
// fallback_on (default ""): when set, a failure whose message does not
// contain it ends the call there (the fallbacks are for inputs the first
// function refuses, e.g. with tfeed.contract.FORMAT_REFUSAL, not for inputs
// it failed on: a corrupt JPEG is not decoded, and reported, twice).
//
// Fallbacks let a fast path that only some inputs take (a JPEG-only decode)
// go without a tf.cond, which cost ~0.05-0.1 ms per element in a tf.data
// function: the other inputs fail it at once and take the general path.
//
// Why: tf.data's ignore_errors() between a decode map and batch() stops
// tf.data from fusing the two into MapAndBatch, and on 2 cores that cost
// 3-10% of decode throughput.  With this op the decode map never fails.

#include <cstring>
#include <map>
#include <memory>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "tensorflow/core/framework/cancellation.h"
#include "tensorflow/core/framework/function.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/mutex.h"

namespace tfeed {
namespace {

using ::tensorflow::AttrSlice;
using ::tensorflow::DataType;
using ::tensorflow::DataTypeVector;
using ::tensorflow::FunctionLibraryRuntime;
using ::tensorflow::NameAttrList;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::PartialTensorShape;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::tstring;

REGISTER_OP("TfeedTryCall")
    .Input("args: Tin")
    .Output("outputs: Tout")
    .Output("ok: bool")
    .Output("error: string")
    .Attr("Tin: list(type) >= 0")
    .Attr("Tout: list(type) >= 1")
    .Attr("output_shapes: list(shape) >= 1")
    .Attr("f: func")
    .Attr("fallbacks: list(func) = []")
    .Attr("fallback_on: string = ''")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      std::vector<PartialTensorShape> shapes;
      TF_RETURN_IF_ERROR(c->GetAttr("output_shapes", &shapes));
      for (size_t i = 0; i < shapes.size(); ++i) {
        ::tensorflow::shape_inference::ShapeHandle handle;
        TF_RETURN_IF_ERROR(c->MakeShapeFromPartialTensorShape(shapes[i], &handle));
        c->set_output(static_cast<int>(i), handle);
      }
      c->set_output(static_cast<int>(shapes.size()), c->Scalar());
      c->set_output(static_cast<int>(shapes.size()) + 1, c->Scalar());
      return absl::OkStatus();
    });

class TryCallOp : public ::tensorflow::AsyncOpKernel {
 public:
  explicit TryCallOp(OpKernelConstruction* ctx) : AsyncOpKernel(ctx) {
    NameAttrList first;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("f", &first));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("fallbacks", &funcs_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("fallback_on", &fallback_on_));
    funcs_.insert(funcs_.begin(), first);
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tout", &types_));
    std::vector<PartialTensorShape> partial;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("output_shapes", &partial));
    OP_REQUIRES(ctx, partial.size() == types_.size(),
                absl::InvalidArgumentError("TfeedTryCall: output_shapes and Tout differ in length"));
    for (const auto& shape : partial) {
      TensorShape full;
      OP_REQUIRES(ctx, shape.AsTensorShape(&full),
                  absl::InvalidArgumentError("TfeedTryCall: every output shape must be fully defined, got " +
                                             shape.DebugString()));
      shapes_.push_back(full);
    }
  }

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    FunctionLibraryRuntime* lib = ctx->function_library();
    OP_REQUIRES_ASYNC(ctx, lib != nullptr, absl::InternalError("TfeedTryCall: no function library"), done);
    auto args = std::make_shared<std::vector<Tensor>>();
    args->reserve(ctx->num_inputs());
    for (int i = 0; i < ctx->num_inputs(); ++i) args->push_back(ctx->input(i));
    Attempt(ctx, lib, std::move(args), 0, std::move(done));
  }

 private:
  // Runs funcs_[index]; on a failure that is not a cancellation, the next one.
  void Attempt(OpKernelContext* ctx, FunctionLibraryRuntime* lib, std::shared_ptr<std::vector<Tensor>> args,
               size_t index, DoneCallback done) {
    FunctionLibraryRuntime::Handle handle;
    OP_REQUIRES_OK_ASYNC(ctx, Instantiate(lib, index, &handle), done);
    // A failing function aborts its rendezvous and cancels its cancellation
    // manager: it gets no rendezvous (decode functions send nothing) and a
    // child cancellation manager, so the caller's step goes on.
    auto* cancellation = ctx->cancellation_manager() != nullptr
                             ? new ::tensorflow::CancellationManager(ctx->cancellation_manager())
                             : new ::tensorflow::CancellationManager();
    FunctionLibraryRuntime::Options opts;
    opts.create_rendezvous = false;
    opts.cancellation_manager = cancellation;
    opts.step_container = ctx->step_container();
    opts.stats_collector = ctx->stats_collector();
    opts.runner = ctx->runner();
    opts.run_all_kernels_inline = ctx->run_all_kernels_inline();
    opts.collective_executor = ctx->collective_executor();
    auto* rets = new std::vector<Tensor>;
    lib->Run(opts, handle, *args, rets,
             [this, ctx, lib, args, index, done, rets, cancellation](const absl::Status& result) mutable {
               std::unique_ptr<std::vector<Tensor>> owned(rets);
               delete cancellation;
               absl::Status status = result.ok() ? CheckOutputs(*rets) : result;
               if (!status.ok() && !Cancelled(ctx, status) && index + 1 < funcs_.size() &&
                   absl::StrContains(status.message(), fallback_on_)) {
                 return Attempt(ctx, lib, std::move(args), index + 1, std::move(done));
               }
               Finish(ctx, status, *rets);
               done();
             });
  }

  static bool Cancelled(OpKernelContext* ctx, const absl::Status& status) {
    return absl::IsCancelled(status) ||
           (ctx->cancellation_manager() != nullptr && ctx->cancellation_manager()->IsCancelled());
  }

  // status: the last attempt's, its outputs already checked.
  void Finish(OpKernelContext* ctx, absl::Status status, const std::vector<Tensor>& rets) {
    if (Cancelled(ctx, status)) {
      ctx->SetStatus(status.ok() ? absl::CancelledError("TfeedTryCall: cancelled") : status);
      return;
    }
    const int n = static_cast<int>(types_.size());
    for (int i = 0; i < n; ++i) {
      if (status.ok()) {
        ctx->set_output(i, rets[i]);
        continue;
      }
      Tensor* zeros = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(i, shapes_[i], &zeros));
      FillZeros(zeros);
    }
    Tensor* ok = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(n, TensorShape({}), &ok));
    ok->scalar<bool>()() = status.ok();
    Tensor* error = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(n + 1, TensorShape({}), &error));
    const absl::string_view message = status.message();
    error->scalar<tstring>()() = status.ok() ? "" : std::string(message.substr(0, message.find('\n')));
  }

  // Handles by library and function: a kernel lives no longer than the library that created it.
  absl::Status Instantiate(FunctionLibraryRuntime* lib, size_t index, FunctionLibraryRuntime::Handle* handle) {
    const auto key = std::make_pair(lib, index);
    {
      ::tensorflow::mutex_lock lock(mu_);
      auto found = handles_.find(key);
      if (found != handles_.end()) {
        *handle = found->second;
        return absl::OkStatus();
      }
    }
    const NameAttrList& func = funcs_[index];
    TF_RETURN_IF_ERROR(lib->Instantiate(func.name(), AttrSlice(&func.attr()), handle));
    ::tensorflow::mutex_lock lock(mu_);
    handles_.emplace(key, *handle);
    return absl::OkStatus();
  }

  absl::Status CheckOutputs(const std::vector<Tensor>& rets) const {
    if (rets.size() != types_.size()) {
      return absl::InvalidArgumentError("TfeedTryCall: the function returned " + std::to_string(rets.size()) +
                                        " values, expected " + std::to_string(types_.size()));
    }
    for (size_t i = 0; i < rets.size(); ++i) {
      if (rets[i].dtype() != types_[i] || rets[i].shape() != shapes_[i]) {
        return absl::InvalidArgumentError("TfeedTryCall: output " + std::to_string(i) + " is " +
                                          rets[i].DebugString(0) + ", expected shape " +
                                          shapes_[i].DebugString());
      }
    }
    return absl::OkStatus();
  }

  static void FillZeros(Tensor* tensor) {
    if (tensor->dtype() == ::tensorflow::DT_STRING) {
      auto flat = tensor->flat<tstring>();
      for (int64_t i = 0; i < flat.size(); ++i) flat(i) = "";
      return;
    }
    auto bytes = tensor->tensor_data();
    if (!bytes.empty()) std::memset(const_cast<char*>(bytes.data()), 0, bytes.size());
  }

  std::vector<NameAttrList> funcs_;  // f, then the fallbacks
  std::string fallback_on_;          // "": any failure falls back
  DataTypeVector types_;
  std::vector<TensorShape> shapes_;
  ::tensorflow::mutex mu_;
  std::map<std::pair<FunctionLibraryRuntime*, size_t>, FunctionLibraryRuntime::Handle> handles_;
};

REGISTER_KERNEL_BUILDER(Name("TfeedTryCall").Device(::tensorflow::DEVICE_CPU), TryCallOp);

// TfeedKeepRows: values[i][keep] for each value, without a tf.cond: when
// every row is kept the inputs are forwarded as they are (no copy).
//
//   kept = TfeedKeepRows(keep, values)     keep: bool [n]; values: tensors [n, ...]
REGISTER_OP("TfeedKeepRows")
    .Input("keep: bool")
    .Input("values: T")
    .Output("kept: T")
    .Attr("T: list(type) >= 1")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      for (int i = 1; i < c->num_inputs(); ++i) {
        ::tensorflow::shape_inference::ShapeHandle out;
        TF_RETURN_IF_ERROR(c->ReplaceDim(c->input(i), 0, c->UnknownDim(), &out));
        c->set_output(i - 1, out);
      }
      return absl::OkStatus();
    });

class KeepRowsOp : public OpKernel {
 public:
  explicit KeepRowsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& keep = ctx->input(0);
    OP_REQUIRES(ctx, keep.dims() == 1, absl::InvalidArgumentError("TfeedKeepRows: keep must be a vector"));
    const auto flags = keep.vec<bool>();
    const int64_t n = flags.size();
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) kept += flags(i) ? 1 : 0;
    for (int v = 1; v < ctx->num_inputs(); ++v) {
      const Tensor& value = ctx->input(v);
      OP_REQUIRES(ctx, value.dims() >= 1 && value.dim_size(0) == n,
                  absl::InvalidArgumentError("TfeedKeepRows: every value needs " + std::to_string(n) + " rows"));
      if (kept == n) {
        ctx->set_output(v - 1, value);
        continue;
      }
      TensorShape shape = value.shape();
      shape.set_dim(0, kept);
      Tensor* out = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(v - 1, shape, &out));
      if (kept == 0 || value.NumElements() == 0) continue;
      const int64_t row = value.NumElements() / n;
      if (value.dtype() == ::tensorflow::DT_STRING) {
        const auto in = value.flat<tstring>();
        auto dst = out->flat<tstring>();
        for (int64_t i = 0, j = 0; i < n; ++i) {
          if (!flags(i)) continue;
          for (int64_t k = 0; k < row; ++k) dst(j * row + k) = in(i * row + k);
          ++j;
        }
        continue;
      }
      OP_REQUIRES(ctx, ::tensorflow::DataTypeCanUseMemcpy(value.dtype()),
                  absl::InvalidArgumentError("TfeedKeepRows: unsupported dtype"));
      const size_t row_bytes = value.tensor_data().size() / n;
      const char* in = value.tensor_data().data();
      char* dst = const_cast<char*>(out->tensor_data().data());
      for (int64_t i = 0; i < n; ++i) {
        if (!flags(i)) continue;
        std::memcpy(dst, in + i * row_bytes, row_bytes);
        dst += row_bytes;
      }
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("TfeedKeepRows").Device(::tensorflow::DEVICE_CPU), KeepRowsOp);

}  // namespace
}  // namespace tfeed

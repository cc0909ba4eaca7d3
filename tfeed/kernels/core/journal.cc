// A process-wide journal of delivered URLs, so the accounting stage needs no
// Python per batch (a py_function per batch cost ~1.5-2% of throughput).
//
//   TfeedJournalAppend(urls, journal="j")   one batch's URL column (stateful, no output)
//   urls, sizes, first_time = TfeedJournalDrain(journal="j")   everything appended since
//       the last drain, in order: urls [m], the batch sizes [k] (sum(sizes) == m) and
//       the CLOCK_MONOTONIC time of the first append (-1 if none)
//
// Python (tfeed.Stats) drains when it is read and at the end of each epoch.

#include <time.h>

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

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

struct Journal {
  std::vector<std::string> urls;
  std::vector<int64_t> sizes;
  double first_time = -1;  // CLOCK_MONOTONIC seconds of the first append (Python's time.monotonic())
};

double MonotonicSeconds() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec + now.tv_nsec * 1e-9;
}

std::mutex& JournalsLock() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

std::unordered_map<std::string, Journal>& Journals() {
  static auto* journals = new std::unordered_map<std::string, Journal>;
  return *journals;
}

REGISTER_OP("TfeedJournalAppend")
    .Input("urls: string")
    .Attr("journal: string")
    .SetIsStateful()
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext*) { return absl::OkStatus(); });

REGISTER_OP("TfeedJournalDrain")
    .Output("urls: string")
    .Output("sizes: int64")
    .Output("first_time: double")
    .Attr("journal: string")
    .SetIsStateful()
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(c->UnknownDim()));
      c->set_output(1, c->Vector(c->UnknownDim()));
      c->set_output(2, c->Scalar());
      return absl::OkStatus();
    });

class JournalAppendOp : public OpKernel {
 public:
  explicit JournalAppendOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("journal", &name_));
  }

  void Compute(OpKernelContext* ctx) override {
    const auto urls = ctx->input(0).flat<tstring>();
    std::lock_guard<std::mutex> lock(JournalsLock());
    Journal& journal = Journals()[name_];
    if (journal.first_time < 0) journal.first_time = MonotonicSeconds();
    for (int64_t i = 0; i < urls.size(); ++i) journal.urls.emplace_back(urls(i).data(), urls(i).size());
    journal.sizes.push_back(urls.size());
  }

 private:
  std::string name_;
};

class JournalDrainOp : public OpKernel {
 public:
  explicit JournalDrainOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("journal", &name_));
  }

  void Compute(OpKernelContext* ctx) override {
    Journal drained;
    {
      std::lock_guard<std::mutex> lock(JournalsLock());
      auto found = Journals().find(name_);
      if (found != Journals().end()) {
        drained = std::move(found->second);
        Journals().erase(found);
      }
    }
    Tensor* urls = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({static_cast<int64_t>(drained.urls.size())}), &urls));
    auto flat = urls->flat<tstring>();
    for (size_t i = 0; i < drained.urls.size(); ++i) flat(i) = std::move(drained.urls[i]);
    Tensor* sizes = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({static_cast<int64_t>(drained.sizes.size())}), &sizes));
    auto out = sizes->flat<int64_t>();
    for (size_t i = 0; i < drained.sizes.size(); ++i) out(i) = drained.sizes[i];
    Tensor* first_time = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({}), &first_time));
    first_time->scalar<double>()() = drained.first_time;
  }

 private:
  std::string name_;
};

REGISTER_KERNEL_BUILDER(Name("TfeedJournalAppend").Device(::tensorflow::DEVICE_CPU), JournalAppendOp);
REGISTER_KERNEL_BUILDER(Name("TfeedJournalDrain").Device(::tensorflow::DEVICE_CPU), JournalDrainOp);

}  // namespace
}  // namespace tfeed

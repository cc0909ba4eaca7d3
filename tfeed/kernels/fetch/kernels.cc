// The fetch kernels: TfeedFetch and TfeedFetchPooled (their ops: ops.cc),
// TfeedCurlVersion and TfeedCacheCorrupt.  A kernel answers what it can
// without the network (file:// reads, cache hits, refused schemes) on its own
// thread and hands the rest to the process's Fetcher (fetcher.h).

#include <algorithm>
#include <atomic>
#include <cctype>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "address_policy.h"
#include "cache_io.h"
#include "contract.h"
#include "fetcher.h"
#include "local_files.h"
#include "sniff.h"
#include "url_rules.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tfeed {
namespace fetch {

namespace c = ::tfeed::contract;
using tensorflow::AsyncOpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;

static_assert(std::is_same<tensorflow::CancellationToken, decltype(Waiter::token)>::value,
              "Waiter::token holds a CancellationToken");

void WatchCancel(Waiter* waiter, std::function<void()> on_cancel) {
  tensorflow::CancellationManager* cm = waiter->ctx->cancellation_manager();
  if (cm == nullptr) return;
  waiter->watched = true;
  waiter->token = cm->get_cancellation_token();
  if (!cm->RegisterCallback(waiter->token, std::move(on_cancel))) waiter->cancelled = true;
}

void EndWait(Waiter* waiter, const char* message) {
  if (waiter->watched) waiter->ctx->cancellation_manager()->TryDeregisterCallback(waiter->token);
  if (waiter->cancelled) waiter->ctx->SetStatus(tensorflow::errors::Cancelled(message));
}

namespace {

// The attributes of both fetch ops (ops.cc's TFEED_FETCH_ATTRS) into Options.
absl::Status ReadOptions(OpKernelConstruction* ctx, Options* opt) {
  struct Seconds {
    const char* name;
    double* value;
  };
  for (Seconds s : {Seconds{"connect_timeout", &opt->connect_timeout}, Seconds{"read_timeout", &opt->read_timeout},
                    Seconds{"deadline", &opt->deadline}, Seconds{"backoff", &opt->backoff},
                    Seconds{"max_backoff", &opt->max_backoff}, Seconds{"dns_cache_ttl", &opt->dns_cache_ttl},
                    Seconds{"remember_failures_s", &opt->remember_failures_s},
                    Seconds{"host_patience", &opt->host_patience},
                    Seconds{"max_requests_per_second_per_host", &opt->max_rps_per_host}}) {
    float f;
    TF_RETURN_IF_ERROR(ctx->GetAttr(s.name, &f));
    *s.value = f;
  }
  TF_RETURN_IF_ERROR(ctx->GetAttr("retries", &opt->retries));
  TF_RETURN_IF_ERROR(ctx->GetAttr("max_redirects", &opt->max_redirects));
  TF_RETURN_IF_ERROR(ctx->GetAttr("max_bytes", &opt->max_bytes));
  TF_RETURN_IF_ERROR(ctx->GetAttr("max_pixels", &opt->max_pixels));
  TF_RETURN_IF_ERROR(ctx->GetAttr("max_in_flight", &opt->max_in_flight));
  TF_RETURN_IF_ERROR(ctx->GetAttr("max_in_flight_bytes", &opt->max_in_flight_bytes));
  TF_RETURN_IF_ERROR(ctx->GetAttr("connections_per_host", &opt->connections_per_host));
  TF_RETURN_IF_ERROR(ctx->GetAttr("trust_env", &opt->trust_env));
  TF_RETURN_IF_ERROR(ctx->GetAttr("pass_transcodable", &opt->pass_transcodable));
  TF_RETURN_IF_ERROR(ctx->GetAttr("user_agent", &opt->user_agent));
  TF_RETURN_IF_ERROR(ctx->GetAttr("schemes", &opt->schemes));
  TF_RETURN_IF_ERROR(ctx->GetAttr("cache_dir", &opt->cache_dir));
  TF_RETURN_IF_ERROR(ctx->GetAttr("ca_file", &opt->ca_file));
  TF_RETURN_IF_ERROR(ctx->GetAttr("adaptive", &opt->adaptive));
  TF_RETURN_IF_ERROR(ctx->GetAttr("respect_opt_out", &opt->respect_opt_out));
  TF_RETURN_IF_ERROR(ctx->GetAttr("file_root", &opt->file_root));
  std::vector<std::string> deny;
  TF_RETURN_IF_ERROR(ctx->GetAttr("deny_networks", &deny));
  std::string error;
  if (!ParseNetworks(deny, &opt->deny_networks, &error)) return tensorflow::errors::InvalidArgument(error);
  return ctx->GetAttr("verify_tls", &opt->verify_tls);
}

// Lower-cased schemes, which of them libcurl serves, and its protocol list.
void ResolveSchemes(Options* opt) {
  for (auto& s : opt->schemes) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
    opt->http |= s == "http";
    opt->https |= s == "https";
    opt->file |= s == "file";
  }
  opt->protocols = opt->http && opt->https ? "http,https" : opt->https ? "https" : "http";
}

absl::Status Validate(const Options& opt) {
  if (!opt.cache_dir.empty() && !HaveChecksum())
    return tensorflow::errors::FailedPrecondition("cache_dir needs zlib (libz.so.1) for its checksums");
  if (!(opt.connect_timeout > 0 && opt.read_timeout > 0 && opt.deadline > 0))
    return tensorflow::errors::InvalidArgument("timeouts must be > 0");
  if (!(opt.max_in_flight >= 1 && opt.connections_per_host >= 1 && opt.max_bytes >= 1 && opt.max_in_flight_bytes >= 1))
    return tensorflow::errors::InvalidArgument(
        "max_in_flight, max_in_flight_bytes, connections_per_host, max_bytes must be >= 1");
  if (!(opt.retries >= 0 && opt.max_redirects >= 0 && opt.backoff >= 0 && opt.max_backoff >= 0))
    return tensorflow::errors::InvalidArgument("retries, max_redirects, backoff, max_backoff must be >= 0");
  return absl::OkStatus();
}

// A cache hit (a body, or a remembered permanent failure) into *body / *v; false on a miss.
bool FromCache(const std::string& path, const Options& opt, tstring* body, Verdict* v) {
  bool corrupt = false;
  if (ReadCached(path, opt.max_bytes, body, &corrupt)) {
    *v = CheckImage(body->data(), body->size(), opt.pass_transcodable, opt.max_pixels);
  } else {
    if (corrupt) CorruptCounts::Get().Add(opt.cache_dir);
    v->reason = RememberedFailure(path, opt.remember_failures_s);
    if (v->reason.empty()) return false;
    v->detail = "remembered from an earlier attempt (cache)";
  }
  if (!v->ok) *body = tstring();
  return true;
}

// A URL whose scheme the op does not fetch: an invalid_url verdict.
Verdict RefusedScheme(const std::string& scheme, const Options& opt) {
  Verdict v;
  v.reason = c::kInvalidUrl;
  if (std::find(opt.schemes.begin(), opt.schemes.end(), scheme) != opt.schemes.end()) {
    v.detail = "scheme " + scheme + " is not read by the native fetch op";
    return v;
  }
  std::string allowed;
  for (const auto& s : opt.schemes) allowed += (allowed.empty() ? "" : ", ") + s;
  v.detail = "scheme not in (" + allowed + ")";
  return v;
}

// The attributes both fetch kernels share, and what they do before the network.
class FetchKernel : public AsyncOpKernel {
 public:
  explicit FetchKernel(OpKernelConstruction* ctx) : AsyncOpKernel(ctx) {
    auto opt = std::make_shared<Options>();
    OP_REQUIRES_OK(ctx, ReadOptions(ctx, opt.get()));
    ResolveSchemes(opt.get());
    OP_REQUIRES_OK(ctx, Validate(*opt));
    opt_ = opt;
  }

 protected:
  // Answers `url` without the network where it can: a file:// read, a cache
  // hit or remembered failure, a scheme not allowed.  Returns false then, with
  // *body, *v and *attempts set; true if it needs a transfer (*cache_path set
  // when there is a cache).
  bool NeedsTransfer(const std::string& url, tstring* body, Verdict* v, int32_t* attempts,
                     std::string* cache_path) const {
    const Options& opt = *opt_;
    std::string scheme = SchemeOf(url);
    *attempts = 0;
    v->detail = Refusal(url, scheme);
    if (!v->detail.empty()) {  // as the Python engine: never truncated at a NUL, never guessed at
      v->reason = c::kInvalidUrl;
      return false;
    }
    if ((scheme == "http" && opt.http) || (scheme == "https" && opt.https)) {
      if (opt.cache_dir.empty()) return true;
      *cache_path = CachePath(opt.cache_dir, url);
      return !FromCache(*cache_path, opt, body, v);
    }
    if ((scheme.empty() || scheme == "file") && opt.file) {
      *attempts = 1;
      *v = ReadLocal(url, opt, body);
      if (!v->ok) *body = tstring();
    } else {
      *v = RefusedScheme(scheme, opt);
    }
    return false;
  }

  // Appends a transfer of `url` to `batch`; the caller sets where its result goes.
  static Transfer* AddTransfer(Batch* batch, std::string url, std::string cache_path) {
    Transfer& t = batch->transfers[batch->size];
    t.cache_path = std::move(cache_path);
    t.slot = batch->size++;
    t.batch = batch;
    t.url = std::move(url);
    return &t;
  }

  // Numbers `batch` for the loop and returns the fetcher to submit it to, or
  // nullptr after failing the op (done called) when the fetcher cannot start.
  static Fetcher* Launch(OpKernelContext* ctx, const DoneCallback& done, Batch* batch) {
    static std::atomic<uint64_t> next_id{1};
    std::string error;
    Fetcher* fetcher = Fetcher::Get(&error);
    if (fetcher == nullptr) {
      ctx->SetStatus(tensorflow::errors::FailedPrecondition(error));
      done();
      return nullptr;
    }
    batch->id = next_id++;
    batch->remaining = batch->size;
    return fetcher;
  }

  std::shared_ptr<const Options> opt_;
};

// TfeedFetch: row i of every output answers URL i.
class TfeedFetchOp : public FetchKernel {
 public:
  using FetchKernel::FetchKernel;

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    const Tensor& urls = ctx->input(0);
    Tensor* out[4];  // bodies, reasons, attempts, details
    for (int k = 0; k < 4; ++k) OP_REQUIRES_OK_ASYNC(ctx, ctx->allocate_output(k, urls.shape(), &out[k]), done);
    auto in = urls.flat<tstring>();
    const int64_t n = in.size();
    auto batch = std::make_unique<Batch>();
    batch->opt = opt_;
    batch->bodies = out[0]->flat<tstring>().data();
    batch->reasons = out[1]->flat<tstring>().data();
    batch->attempts = out[2]->flat<int32_t>().data();
    batch->details = out[3]->flat<tstring>().data();
    batch->transfers.reset(new Transfer[n]);
    for (int64_t i = 0; i < n; ++i) {
      std::string url(in(i).data(), in(i).size());
      std::string cache_path;
      Verdict v;
      if (NeedsTransfer(url, &batch->bodies[i], &v, &batch->attempts[i], &cache_path)) {
        AddTransfer(batch.get(), std::move(url), std::move(cache_path))->out = i;
        continue;
      }
      batch->reasons[i] = v.ok ? "" : v.reason;
      batch->details[i] = v.detail;
    }
    if (batch->size == 0) return done();
    Fetcher* fetcher = Launch(ctx, done, batch.get());
    if (fetcher == nullptr) return;
    batch->waiter.ctx = ctx;
    batch->waiter.done = std::move(done);
    fetcher->Submit(std::move(batch));
  }
};

// TfeedFetchPooled: n rows out for n URLs in, in completion order, drawn from
// every call sharing the lot (see Lot).
class TfeedFetchPooledOp : public FetchKernel {
 public:
  using FetchKernel::FetchKernel;

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    const Tensor& urls = ctx->input(0);
    const Tensor& labels = ctx->input(1);
    const Tensor& lot = ctx->input(2);
    OP_REQUIRES_ASYNC(ctx, labels.shape() == urls.shape() && tensorflow::TensorShapeUtils::IsScalar(lot.shape()),
                      tensorflow::errors::InvalidArgument("labels must match urls; lot must be a scalar"), done);
    auto call = std::make_unique<Call>();
    call->lot = static_cast<uint64_t>(lot.scalar<int64_t>()());
    OP_REQUIRES_ASYNC(ctx, call->lot != 0, tensorflow::errors::InvalidArgument("lot must not be 0"), done);
    OP_REQUIRES_OK_ASYNC(ctx, AllocateOutputs(ctx, urls, call.get()), done);
    auto in = urls.flat<tstring>();
    auto in_labels = labels.flat<int64_t>();
    call->size = in.size();
    auto batch = std::make_unique<Batch>();
    batch->opt = opt_;
    batch->lot = call->lot;
    batch->transfers.reset(new Transfer[call->size]);
    for (int64_t i = 0; i < call->size; ++i) {
      std::string url(in(i).data(), in(i).size());
      Result r;
      std::string cache_path;
      Verdict v;
      if (NeedsTransfer(url, &r.body, &v, &r.attempts, &cache_path)) {
        AddTransfer(batch.get(), std::move(url), std::move(cache_path))->label = in_labels(i);
        continue;
      }
      r.reason = v.ok ? "" : v.reason;
      r.detail = v.detail;
      r.url = in(i);
      r.label = in_labels(i);
      call->Write(std::move(r));  // answered here: this call's own row
    }
    if (batch->size == 0) return done();
    Fetcher* fetcher = Launch(ctx, done, batch.get());
    if (fetcher == nullptr) return;
    call->waiter.ctx = ctx;
    call->waiter.done = std::move(done);
    fetcher->SubmitPooled(std::move(batch), std::move(call));
  }

 private:
  static absl::Status AllocateOutputs(OpKernelContext* ctx, const Tensor& urls, Call* call) {
    Tensor* out[6];
    for (int k = 0; k < 6; ++k) TF_RETURN_IF_ERROR(ctx->allocate_output(k, urls.shape(), &out[k]));
    call->bodies = out[0]->flat<tstring>().data();
    call->labels = out[1]->flat<int64_t>().data();
    call->urls = out[2]->flat<tstring>().data();
    call->reasons = out[3]->flat<tstring>().data();
    call->attempts = out[4]->flat<int32_t>().data();
    call->details = out[5]->flat<tstring>().data();
    return absl::OkStatus();
  }
};

class TfeedCurlVersionOp : public tensorflow::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    std::string error;
    OP_REQUIRES(ctx, Fetcher::Get(&error) != nullptr, tensorflow::errors::FailedPrecondition(error));
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {}, &out));
    out->scalar<tstring>()() = Curl().version();
  }
};

class TfeedCacheCorruptOp : public tensorflow::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    OP_REQUIRES(ctx, tensorflow::TensorShapeUtils::IsScalar(ctx->input(0).shape()),
                tensorflow::errors::InvalidArgument("cache_dir must be a scalar"));
    Tensor* out;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {}, &out));
    out->scalar<int64_t>()() = CorruptCounts::Get().Count(ctx->input(0).scalar<tstring>()());
  }
};

// The fetch loop's host table (see TfeedHostStats in ops.cc); empty before the loop starts.
class TfeedHostStatsOp : public tensorflow::OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    std::string error;
    Fetcher* fetcher = Fetcher::Get(&error);
    OP_REQUIRES(ctx, fetcher != nullptr, tensorflow::errors::FailedPrecondition(error));
    const std::vector<HostRow> rows = fetcher->HostRows();
    const int64_t n = static_cast<int64_t>(rows.size());
    Tensor *hosts, *counts, *state;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {n}, &hosts));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, {n, 6}, &counts));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, {n, 3}, &state));
    auto c = counts->matrix<int64_t>();
    auto s = state->matrix<float>();
    for (int64_t i = 0; i < n; ++i) {
      const HostRow& r = rows[i];
      hosts->vec<tstring>()(i) = r.host;
      const int64_t values[] = {r.requests, r.images, r.failures, r.throttles, r.queued, r.in_flight};
      for (int j = 0; j < 6; ++j) c(i, j) = values[j];
      s(i, 0) = static_cast<float>(r.window);
      s(i, 1) = static_cast<float>(r.paced_rps);
      s(i, 2) = static_cast<float>(r.paused_s);
    }
  }
};

}  // namespace

REGISTER_KERNEL_BUILDER(Name("TfeedHostStats").Device(tensorflow::DEVICE_CPU), TfeedHostStatsOp);
REGISTER_KERNEL_BUILDER(Name("TfeedFetch").Device(tensorflow::DEVICE_CPU), TfeedFetchOp);
REGISTER_KERNEL_BUILDER(Name("TfeedFetchPooled").Device(tensorflow::DEVICE_CPU), TfeedFetchPooledOp);
REGISTER_KERNEL_BUILDER(Name("TfeedCurlVersion").Device(tensorflow::DEVICE_CPU), TfeedCurlVersionOp);
REGISTER_KERNEL_BUILDER(Name("TfeedCacheCorrupt").Device(tensorflow::DEVICE_CPU), TfeedCacheCorruptOp);

}  // namespace fetch
}  // namespace tfeed

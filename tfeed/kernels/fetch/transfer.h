// What the fetcher holds: one kernel invocation (a Batch), one URL of it (a
// Transfer), and for TfeedFetchPooled the calls sharing results (Call, Lot).

#ifndef TFEED_KERNELS_FETCH_TRANSFER_H_
#define TFEED_KERNELS_FETCH_TRANSFER_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "curl_loader.h"
#include "limiter.h"
#include "options.h"
#include "tensorflow/core/platform/tstring.h"

namespace tensorflow {
class OpKernelContext;
}  // namespace tensorflow

namespace tfeed {
namespace fetch {

using Clock = std::chrono::steady_clock;
using tensorflow::tstring;

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
inline Clock::duration FromSeconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// The kernel call a Batch or Call answers: its context, done callback and
// cancellation hook.  The TensorFlow side is in kernels.cc, so the loop's
// files need no TensorFlow framework headers.
struct Waiter {
  tensorflow::OpKernelContext* ctx = nullptr;
  std::function<void()> done;
  bool watched = false;  // a cancellation callback was registered under token
  int64_t token = 0;
  bool cancelled = false;
};

// Registers on_cancel with the call's cancellation manager (if it has one);
// marks the waiter cancelled when the call already is.  kernels.cc.
void WatchCancel(Waiter* waiter, std::function<void()> on_cancel);

// Deregisters the hook and, if the waiter was cancelled, fails the call with
// Cancelled(message).  The caller then runs done.  kernels.cc.
void EndWait(Waiter* waiter, const char* message);

struct Batch;

enum class State { kQueued, kActive, kWaiting, kDone };

struct Transfer {
  Batch* batch = nullptr;
  int64_t out = 0;   // index into the batch's outputs (unused in a pooled batch)
  int64_t label = 0;  // carried to the output row of a pooled batch
  int64_t slot = 0;  // index into the batch's transfers
  std::string url;
  std::string cache_path;  // where a success is stored; "" without a cache
  State state = State::kQueued;
  CURL* easy = nullptr;
  size_t active_pos = 0;
  tstring body;
  int attempts = 0;
  int sheds = 0;  // times its host shed it while answering others in between (kShedsPerUrl at most)
  int64_t answered_mark = -1;  // the host's answers when it was last shed
  struct Host* host = nullptr;  // set when admitted through the host table (hosts.h)
  LimiterTicket ticket;
  Clock::time_point deadline, last_activity, attempt_began;
  bool connected = false, too_large = false, status_checked = false, discard = false, read_timed_out = false;
  bool opted_out = false;  // the current response's X-Robots-Tag opts out (respect_opt_out)
  bool multiplexed = false;  // the last attempt's answer came as an HTTP/2 stream
  char errbuf[CURL_ERROR_SIZE];
  std::string blocked;  // set when the address policy refused a connection of this attempt (its detail)
};

struct Batch {
  uint64_t id = 0;
  uint64_t lot = 0;  // != 0: a pooled batch: its results go to its lot, not to outputs of its own
  std::shared_ptr<const Options> opt;
  std::unique_ptr<Transfer[]> transfers;
  int64_t size = 0, remaining = 0;
  int64_t parked = 0;  // body bytes of finished transfers held in its outputs until the batch ends
  tstring *bodies = nullptr, *reasons = nullptr, *details = nullptr;
  int32_t* attempts = nullptr;
  Waiter waiter;
};

// One finished URL of a lot, waiting for a call to take it.
struct Result {
  tstring body, reason, detail, url;
  int32_t attempts = 0;
  int64_t label = 0;
};

// A TfeedFetchPooled call: `size` output rows, filled in completion order by
// any results of its lot (its own URLs or those of the lot's other calls).
struct Call {
  uint64_t lot = 0;
  int64_t size = 0, filled = 0;
  tstring *bodies = nullptr, *reasons = nullptr, *details = nullptr, *urls = nullptr;
  int32_t* attempts = nullptr;
  int64_t* labels = nullptr;
  Waiter waiter;

  void Write(Result r) {
    const int64_t i = filled++;
    bodies[i] = std::move(r.body);
    reasons[i] = std::move(r.reason);
    details[i] = std::move(r.detail);
    urls[i] = std::move(r.url);
    attempts[i] = r.attempts;
    labels[i] = r.label;
  }
};

// The calls of one iterator (one lot id) share their results, so a URL that
// hangs holds back only the epoch's last call, never a whole group: every
// call returns as many rows as it brought URLs, and the lot's results number
// exactly its URLs, so each URL reaches exactly one call.
// Invariant: `ready` and `waiting` are never both non-empty.
struct Lot {
  std::deque<Result> ready;
  std::deque<std::unique_ptr<Call>> waiting;
  int64_t batches = 0;  // pooled batches with transfers not yet done
};

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_TRANSFER_H_

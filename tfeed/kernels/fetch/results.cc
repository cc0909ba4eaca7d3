// Where finished transfers go: the batch's own outputs, or (pooled) the lot's
// oldest waiting call (full calls before a short one); the cache; and the ends
// of batches, calls and lots, cancelled ones included.

#include <algorithm>

#include "cache_io.h"
#include "fetcher.h"

namespace tfeed {
namespace fetch {

void Fetcher::Complete(Transfer* t, Verdict v) {
  Batch* b = t->batch;
  if (t->state == State::kActive || t->state == State::kWaiting) {
    --in_flight_;
    admit_pending_ = true;
    TellHost(t, v.ok, Clock::now());
  }
  t->state = State::kDone;
  if (!t->cache_path.empty()) {
    if (v.ok) StoreCached(t->cache_path, t->body);
    else RememberFailure(t->cache_path, v.reason, b->opt->remember_failures_s);
  }
  if (b->lot != 0) return CompletePooled(t, v);
  if (v.ok) {
    b->parked += static_cast<int64_t>(t->body.size());
    parked_bytes_ += static_cast<int64_t>(t->body.size());
    b->bodies[t->out] = std::move(t->body);
  }
  b->reasons[t->out] = v.ok ? "" : v.reason;
  b->details[t->out] = v.detail;
  b->attempts[t->out] = t->attempts;
  t->body = tstring();
  if (--b->remaining == 0) FinishBatch(b);
}

void Fetcher::CompletePooled(Transfer* t, const Verdict& v) {
  Batch* b = t->batch;
  Result r;
  if (v.ok) r.body = std::move(t->body);
  r.reason = v.ok ? "" : v.reason;
  r.detail = v.detail;
  r.url = t->url;
  r.attempts = t->attempts;
  r.label = t->label;
  t->body = tstring();
  Deliver(b->lot, std::move(r));
  if (--b->remaining > 0) return;
  const uint64_t lot = b->lot;
  batches_.erase(b->id);
  --lots_[lot].batches;
  DropIfIdle(lot);
}

// A result of a pooled batch: to the lot's oldest waiting call among the largest,
// else kept ready.  A short call (an epoch's last group) takes results only while no
// full one waits, so the epoch's stragglers (a throttled host's URLs, given up after
// its patience) end in it and hold back no more images than it has places: taken
// oldest first, a short call that reached the loop before a full one left 24 good
// images of the full one waiting with 8 throttled URLs (tf.data's parallel map does
// not fix the order in which calls arrive).
void Fetcher::Deliver(uint64_t id, Result r) {
  Lot& lot = lots_[id];
  if (lot.waiting.empty()) {
    parked_bytes_ += static_cast<int64_t>(r.body.size());
    return lot.ready.push_back(std::move(r));
  }
  const auto target = std::max_element(lot.waiting.begin(), lot.waiting.end(),  // the first largest
                                       [](const auto& a, const auto& b) { return a->size < b->size; });
  Call* call = target->get();
  call->Write(std::move(r));
  if (call->filled < call->size) return;
  FinishCall(std::move(*target));
  lot.waiting.erase(target);
}

void Fetcher::FinishCall(std::unique_ptr<Call> call) {
  EndWait(&call->waiter, "TfeedFetchPooled cancelled");
  completer_.Post(std::move(call->waiter.done));
}

void Fetcher::DropIfIdle(uint64_t id) {
  auto it = lots_.find(id);
  if (it != lots_.end() && it->second.batches == 0 && it->second.waiting.empty() && it->second.ready.empty())
    lots_.erase(it);
}

// The iterator that owned the lot is gone: stop its transfers, end its calls.
void Fetcher::CancelLotNow(uint64_t id) {
  auto it = lots_.find(id);
  if (it == lots_.end()) return;
  std::vector<Batch*> doomed;
  for (auto& entry : batches_)
    if (entry.second->lot == id) doomed.push_back(entry.second.get());
  for (Batch* b : doomed) {
    ReleaseTransfers(b);
    batches_.erase(b->id);
  }
  for (const Result& r : it->second.ready) parked_bytes_ -= static_cast<int64_t>(r.body.size());
  for (auto& call : it->second.waiting) {
    call->waiter.cancelled = true;
    FinishCall(std::move(call));
  }
  lots_.erase(it);
}

void Fetcher::ReleaseTransfers(Batch* b) {
  for (int64_t i = 0; i < b->size; ++i) {
    Transfer* t = &b->transfers[i];
    if (t->state == State::kDone) continue;
    ReleaseEasy(t);
    if (t->state == State::kActive || t->state == State::kWaiting) {
      --in_flight_;
      if (t->host != nullptr) t->host->limiter.Finished(t->ticket);
    }
    t->host = nullptr;
    t->state = State::kDone;
  }
}

void Fetcher::CancelBatch(Batch* b) {
  if (b->lot != 0) return;  // a pooled batch ends with its lot (CancelLotNow)
  b->waiter.cancelled = true;
  ReleaseTransfers(b);
  FinishBatch(b);
}

void Fetcher::FinishBatch(Batch* b) {
  auto it = batches_.find(b->id);
  std::unique_ptr<Batch> owned = std::move(it->second);
  batches_.erase(it);
  parked_bytes_ -= b->parked;
  admit_pending_ = true;
  EndWait(&b->waiter, "TfeedFetch cancelled");
  completer_.Post(std::move(b->waiter.done));
}

}  // namespace fetch
}  // namespace tfeed

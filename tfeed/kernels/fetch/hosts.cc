#include "hosts.h"

#include <algorithm>

namespace tfeed {
namespace fetch {

Host::Host(std::string key_, const Options& opt)
    : key(std::move(key_)),
      adaptive(opt.adaptive && (key.rfind("http://", 0) == 0 || key.rfind("https://", 0) == 0)),
      limiter(key.empty() ? opt.max_in_flight : opt.connections_per_host, opt.backoff, opt.max_backoff,
              opt.host_patience, adaptive) {
  if (opt.max_rps_per_host > 0 && !key.empty()) limiter.set_min_gap(1.0 / opt.max_rps_per_host);
}

std::string HostKey(const std::string& url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return "";
  const size_t start = scheme_end + 3;
  size_t end = url.find_first_of("/?#", start);
  if (end == std::string::npos) end = url.size();
  std::string key = url.substr(0, end);
  const size_t at = key.rfind('@');  // no credentials in keys
  if (at != std::string::npos && at > scheme_end) key = key.substr(0, start) + key.substr(at + 1);
  std::transform(key.begin(), key.end(), key.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return key;
}

// Datasets that shape a host's limiter differently (caps, patience, pace) keep
// separate states for it; alike ones share it, as they share the origin.
static std::string LimiterShape(const Options& opt) {
  std::string shape;
  for (double value : {static_cast<double>(opt.connections_per_host), static_cast<double>(opt.max_in_flight),
                       opt.adaptive ? 1.0 : 0.0, opt.host_patience, opt.backoff, opt.max_backoff, opt.max_rps_per_host}) {
    shape += std::to_string(value) + ' ';
  }
  return shape;
}

Host* HostTable::Find(const std::string& url, const Options& opt, double now) {
  std::string key = HostKey(url);
  std::string entry = key + '\n' + LimiterShape(opt);
  auto it = hosts_.find(entry);
  if (it != hosts_.end()) {
    Host* host = it->second.get();
    if (host->queue.empty() && host->limiter.in_flight() == 0) host->limiter.Rested(now);
    return host;
  }
  auto host = std::make_unique<Host>(key, opt);
  Host* found = host.get();
  hosts_.emplace(std::move(entry), std::move(host));
  return found;
}

void HostTable::Put(Host* host, QueuedRef ref, bool front) {
  if (front) host->queue.push_front(ref);
  else host->queue.push_back(ref);
  if (!host->in_turns) {
    host->in_turns = true;
    turns_.push_back(host);
  }
}

Host* HostTable::NextReady(double now, QueuedRef* ref) {
  for (size_t n = turns_.size(); n > 0; --n) {
    Host* host = turns_.front();
    turns_.pop_front();
    if (host->queue.empty()) {
      host->in_turns = false;
      continue;
    }
    turns_.push_back(host);
    if (!host->limiter.CanStart(now)) continue;
    *ref = host->queue.front();
    host->queue.pop_front();
    return host;
  }
  return nullptr;
}

double HostTable::NextWakeup(double now) const {
  double next = -1;
  for (const Host* host : turns_) {
    if (host->queue.empty()) continue;
    const double at = host->limiter.ReadyAt(now);
    if (at > now && (next < 0 || at < next)) next = at;
  }
  return next;
}

void HostTable::GiveUpThrottled(double now, std::vector<QueuedRef>* given_up) {
  for (Host* host : turns_) {
    if (host->queue.empty() || !host->limiter.GivenUp(now)) continue;
    given_up->insert(given_up->end(), host->queue.begin(), host->queue.end());
    host->queue.clear();
  }
}

void HostTable::Publish(double now) {
  std::vector<HostRow> rows;
  rows.reserve(hosts_.size());
  for (const auto& entry : hosts_) {
    const Host& h = *entry.second;
    const double gap = h.limiter.gap();
    // The entry (host, newline, limiter shape): one host's states for datasets with other caps stay apart.
    rows.push_back(HostRow{entry.first, h.requests, h.images, h.failures,
                           h.limiter.throttles(), static_cast<int64_t>(h.queue.size()), h.limiter.in_flight(),
                           h.limiter.window(), gap > 0 ? 1 / gap : 0.0,
                           std::max(0.0, h.limiter.paused_until() - now)});
  }
  std::lock_guard<std::mutex> lock(rows_mu_);
  rows_.swap(rows);
}

std::vector<HostRow> HostTable::Rows() const {
  std::lock_guard<std::mutex> lock(rows_mu_);
  return rows_;
}

}  // namespace fetch
}  // namespace tfeed

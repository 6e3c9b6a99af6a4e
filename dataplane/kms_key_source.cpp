#include "dataplane/log.hpp"
#include "dataplane/kms_key_source.hpp"

#include "dataplane/app.hpp"
#include "keyplane/hostport.hpp"

#include <rte_cycles.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <stdexcept>
#include <thread>

namespace keycast::dp {

using std::chrono::milliseconds;

namespace {
int64_t ms_until(MonoClock::time_point t, MonoClock::time_point now) {
  return std::chrono::duration_cast<milliseconds>(t - now).count();
}
const char* role_name(bool sender) { return sender ? "keycast-send" : "keycast-recv"; }
}  // namespace

KmsOptions kms_options(const std::vector<std::string>& kms, const std::string& tls_cert,
                       const std::string& tls_key, const std::string& tls_ca, const std::string& tls_crl,
                       const std::string& key_file, uint32_t channel, bool sender) {
  KmsOptions o;
  for (const auto& item : kms)
    for (auto& hp : kp::split_list(item)) {
      if (hp.rfind(':') == std::string::npos)
        throw UsageError("--kms: '" + hp + "' is not HOST:PORT");
      o.servers.push_back(hp);
    }
  if (o.servers.empty()) throw UsageError("--kms: no HOST:PORT given");
  if (!key_file.empty()) throw UsageError("--key-file and --kms are exclusive: pick one key source");
  if (tls_cert.empty()) throw UsageError("--tls-cert is required with --kms");
  if (tls_key.empty()) throw UsageError("--tls-key is required with --kms");
  if (tls_ca.empty()) throw UsageError("--tls-ca is required with --kms");
  o.tls.cert = tls_cert;
  o.tls.key = tls_key;
  o.tls.ca = tls_ca;
  o.tls.crl = tls_crl;
  o.channel = channel;
  o.sender = sender;
  return o;
}

std::shared_ptr<kp::Client> make_kms_client(const KmsOptions& o) {
  kp::ClientOptions co;
  co.servers = o.servers;
  co.tls = o.tls;
  co.require_master = o.sender;  // senders make and report keys: only the master takes them
  return std::make_shared<kp::Client>(co);
}

KmsKeySource::KmsKeySource(KmsOptions o) : KmsKeySource(o, make_kms_client(o)) {}

KmsKeySource::KmsKeySource(KmsOptions o, std::shared_ptr<kp::Client> client)
    : o_(std::move(o)), client_(std::move(client)) {
  lifetime_ms_ = o_.lifetime_ms;
}

KmsKeySource::~KmsKeySource() = default;

int64_t KmsKeySource::p1() const { return o_.p1_ms > 0 ? o_.p1_ms : std::max<int64_t>(lifetime_ms_ / 3, 1); }
int64_t KmsKeySource::p2() const { return o_.p2_ms > 0 ? o_.p2_ms : std::max<int64_t>(lifetime_ms_ / 6, 1); }

int64_t p2_spread_offset(int64_t p2, int64_t spread_ms, uint64_t draw) {
  int64_t spread = spread_ms < 0 ? p2 / 4 : spread_ms;
  // The fetch stays ahead of the switch whatever the options say.
  spread = std::clamp<int64_t>(spread, 0, std::max<int64_t>(p2 - 1, 0));
  return spread == 0 ? 0 : int64_t(draw % uint64_t(spread + 1));
}

int64_t retry_gap_ms(int64_t left_ms, int64_t interval_ms) {
  return left_ms > 0 ? std::clamp<int64_t>(left_ms / 4, std::min<int64_t>(10, interval_ms), interval_ms) : interval_ms;
}

void KmsKeySource::draw_p2_offset() { p2_offset_ = o_.sender ? 0 : p2_spread_offset(p2(), o_.p2_spread_ms, rng_()); }

void KmsKeySource::Inbox::post(Reply r) {
  {
    std::lock_guard<std::mutex> lock(mu);
    replies.push_back(std::move(r));
  }
  cv.notify_all();
}

kp::Callback KmsKeySource::enqueue(int tag, EpochUsage u) {
  return [inbox = inbox_, tag, u](kp::Result r) { inbox->post(Reply{tag, std::move(r), u}); };
}

// The key server will not serve this channel to this certificate: asking
// again cannot change that (an operator's grant would need a restart), so
// the channel is reported once and left without keys.
bool KmsKeySource::refuse_if_denied(const kp::Result& r) {
  if (r.error != kp::ErrorCode::ChannelDenied && r.error != kp::ErrorCode::NotAuthorised &&
      r.error != kp::ErrorCode::UnknownChannel)
    return false;
  if (!refused_)
    KC_LOG(WARNING, kms, "%s: channel %u refused by the key server: %s (%s); not asked again\n",
                 role_name(o_.sender), o_.channel, std::string(kp::error_name(r.error)).c_str(),
                 r.message.c_str());
  refused_ = true;
  return true;
}

// Installs a key the KMS handed out, anchored on the moment its reply was
// read. Roles follow from the end times: the key that ends first (and has not
// ended) is current, the one ending after it is next. A key already held gets
// its end time refreshed: every reply carries the KMS's view, so an admin
// rotation that shortened the current key reaches every holder.
void KmsKeySource::install(KeyControl& ctl, const kp::WireKey& k,
                           MonoClock::time_point received_at, bool& changed) {
  if (k.channel != o_.channel || k.spi == 0) return;
  if (k.lifetime_ms > 0 && !o_.sender_origin) lifetime_ms_ = k.lifetime_ms;
  KeyRecord rec = k.to_record(received_at);
  const auto now = MonoClock::now();
  if (ctl.holds(k.spi)) {
    ends_[k.spi] = rec.expires_at;
    if (k.spi == ctl.current_spi()) cur_end_ = rec.expires_at;
    if (k.spi == ctl.next_spi()) next_end_ = rec.expires_at;
    return;
  }
  if (rec.expires_at + milliseconds(o_.grace_ms) <= now) return;  // over, grace included
  if (o_.sender && rec.expires_at <= now) return;
  ctl.add(rec);
  ends_[k.spi] = rec.expires_at;
  changed = true;
  if (ctl.current_spi() == 0) {
    // First key(s): current is the earliest that has not ended.
    uint32_t c = 0;
    for (auto& [spi, end] : ends_)
      if (end > now && (c == 0 || end < ends_[c])) c = spi;
    if (c == 0) c = k.spi;
    ctl.set_current(c);
    cur_end_ = ends_[c];
    draw_p2_offset();
  }
  if (rec.expires_at < cur_end_ && k.spi != ctl.current_spi()) {
    // Older than current (a previous key, or a packet from a late sender):
    // held for the grace period only.
    retiring_.push_back({k.spi, std::max(rec.expires_at, now) + milliseconds(o_.grace_ms)});
    return;
  }
  if (k.spi != ctl.current_spi() && (ctl.next_spi() == 0 || rec.expires_at < next_end_)) {
    ctl.set_next(k.spi);
    next_end_ = rec.expires_at;
  }
}

// KMS keys live on the KMS's clock: the caller's start time does not move them.
void KmsKeySource::start(KeyControl& ctl, MonoClock::time_point /*start*/) {
  begin_start(ctl);
  finish_start(ctl, MonoClock::now() + o_.start_timeout);
}

void KmsKeySource::begin_start(KeyControl& ctl) {
  ctl.set_first_seq(static_key_first_seq());
  ++fetches;
  if (o_.sender && o_.sender_origin) {
    kp::WireKey w;
    w.channel = o_.channel;
    w.spi = 0;  // the KMS assigns a never-used SPI
    w.material = KeyMaterial::generate(o_.suite);
    w.remaining_ms = lifetime_ms_;
    w.lifetime_ms = lifetime_ms_;
    w.slot = kp::Slot::Current;
    client_->upload(w, enqueue(kStart));
  } else if (o_.sender) {
    client_->generate(o_.channel, kp::Which::Both, enqueue(kStart));
  } else {
    // A receiver also takes the previous key while it is in its grace period:
    // one that starts just after a switch still deciphers what the sender put
    // on the wire under the old key.
    client_->fetch(o_.channel, kp::Which::All, enqueue(kStart));
  }
}

void KmsKeySource::finish_start(KeyControl& ctl, MonoClock::time_point deadline) {
  // The start reply; anything else that arrived meanwhile stays queued for poll().
  std::optional<kp::Result> got;
  {
    Inbox& in = *inbox_;
    std::unique_lock<std::mutex> lock(in.mu);
    auto take = [&] {
      for (auto it = in.replies.begin(); it != in.replies.end(); ++it)
        if (it->tag == kStart) {
          got = std::move(it->r);
          in.replies.erase(it);
          return true;
        }
      return false;
    };
    if (!in.cv.wait_until(lock, deadline, take))
      throw std::runtime_error("--kms: no reply from any key server within " +
                               std::to_string(o_.start_timeout.count()) + " ms (channel " +
                               std::to_string(o_.channel) + ")");
  }
  kp::Result& res = *got;
  start_answered_ = res.received_at;
  if (!res.ok()) {
    count_error(res);
    if (!o_.sender) {
      if (refuse_if_denied(res)) return;
      // A receiver can start without keys: it fetches on the first packet.
      KC_LOG(WARNING, kms, "%s: KMS: channel %u: %s (%s); will fetch on demand\n", role_name(false),
                   o_.channel, std::string(kp::error_name(res.error)).c_str(), res.message.c_str());
      return;
    }
    throw std::runtime_error("--kms: channel " + std::to_string(o_.channel) + ": " +
                             std::string(kp::error_name(res.error)) + ": " + res.message);
  }
  ++fetch_ok;
  bool changed = false;
  // Current and next first: install() takes the earliest unended key as
  // current, and a previous key only once there is a current to retire it behind.
  for (const auto& k : res.keys)
    if (k.slot != kp::Slot::Previous) install(ctl, k, res.received_at, changed);
  for (const auto& k : res.keys)
    if (k.slot == kp::Slot::Previous) install(ctl, k, res.received_at, changed);
  if (o_.sender && ctl.current_spi() == 0)
    throw std::runtime_error("--kms: the key server returned no current key for channel " +
                             std::to_string(o_.channel));
  KC_LOG(INFO, kms, "%s: KMS %s: channel %u current SPI %u (%lld ms left), next SPI %u, previous SPI %u\n",
               role_name(o_.sender), res.server.c_str(), o_.channel, ctl.current_spi(),
               static_cast<long long>(ms_until(cur_end_, MonoClock::now())), ctl.next_spi(),
               retiring_.empty() ? 0u : retiring_.back().spi);
  ctl.publish();
}

void KmsKeySource::submit_next(KeyControl& ctl, MonoClock::time_point now) {
  if (next_in_flight_ || now < next_retry_) return;
  next_in_flight_ = true;
  next_asked_ = now;
  next_retry_ = now + milliseconds(retry_gap_ms(ctl.current_spi() ? ms_until(cur_end_, now) : 0,
                                                std::max<int64_t>(o_.fetch_min_interval_ms, 50)));
  ++fetches;
  // Named after the key held as current: a key server that has switched
  // already answers with its current key, the one this host lacks.
  if (!o_.sender) {
    client_->fetch_next(o_.channel, ctl.current_spi(), enqueue(kNext));
  } else if (!o_.sender_origin) {
    client_->generate_next(o_.channel, ctl.current_spi(), enqueue(kNext));
  } else {
    kp::WireKey w;
    w.channel = o_.channel;
    w.spi = 0;
    w.material = KeyMaterial::generate(o_.suite);
    w.remaining_ms = std::max<int64_t>(ms_until(cur_end_, now), 0) + lifetime_ms_;
    w.lifetime_ms = lifetime_ms_;
    w.slot = kp::Slot::Next;
    client_->upload(w, enqueue(kNext));
  }
}

void KmsKeySource::switch_to_next(KeyControl& ctl, MonoClock::time_point now) {
  const uint32_t old = ctl.current_spi();
  const uint32_t nxt = ctl.next_spi();
  if (!nxt) return;
  const uint32_t old_prev = ctl.previous_spi();
  ctl.set_current(nxt);
  ends_.erase(old_prev);
  cur_end_ = next_end_;
  next_end_ = {};
  draw_p2_offset();
  ctl.clear_notice();
  notice_set_ = false;
  notice_possible_ = false;
  warned_late_ = false;
  if (o_.sender) {
    if (old) {
      finished_.push_back(ctl.slot(old));
      ctl.remove(old);  // a sender never needs the previous key again
      ends_.erase(old);
    }
  } else {
    if (old_prev && old_prev != nxt) ctl.remove(old_prev);
    if (old) retiring_.push_back({old, now + milliseconds(o_.grace_ms)});
  }
}

void KmsKeySource::handle(KeyControl& ctl, Reply& rep, MonoClock::time_point now) {
  kp::Result& r = rep.r;
  if (rep.tag == kUsage) {
    usage_answered(rep);
    if (!r.ok() && !warned_usage_) {
      // Once: the next checkpoint (or the re-send of a final one) follows
      // within an interval whatever the cause.
      warned_usage_ = true;
      KC_LOG(WARNING, kms, "%s: channel %u: usage checkpoint failed: %s (%s); re-sent every interval\n",
                   role_name(true), o_.channel, std::string(kp::error_name(r.error)).c_str(),
                   r.message.c_str());
    }
    return;
  }
  if (rep.tag == kPush) return apply_push(ctl, r, now);
  if (rep.tag == kNext) {
    next_in_flight_ = false;
    next_answered_ = r.received_at;
    next_error_ = r.error;
  }
  if (!r.ok()) {
    count_error(r);
    if (!o_.sender && refuse_if_denied(r)) return;
    // "no next key yet" is routine just before the KMS makes it; retry soon.
    if (r.error != kp::ErrorCode::NoNextKey && r.error != kp::ErrorCode::NotFound)
      KC_LOG(WARNING, kms, "%s: KMS request failed: %s (%s)\n", role_name(o_.sender),
                   std::string(kp::error_name(r.error)).c_str(), r.message.c_str());
    return;
  }
  ++fetch_ok;
  bool changed = false;
  for (const auto& k : r.keys) install(ctl, k, r.received_at, changed);
  (void)now;
  if (changed) ctl.publish();
}

std::deque<KmsKeySource::Reply> KmsKeySource::take_replies() {
  std::deque<Reply> got;
  std::lock_guard<std::mutex> lock(inbox_->mu);
  got.swap(inbox_->replies);
  return got;
}

void KmsKeySource::usage_answered(const Reply& rep) {
  auto it = usage_.find(rep.usage.spi);
  if (rep.r.ok()) {
    ++usage_acked;
    if (it == usage_.end()) return;
    UsageMark& m = it->second;
    m.acked = std::max(m.acked, rep.usage.bytes);
    if (m.in_flight == rep.usage.bytes) m.in_flight = kNone;
    if (m.final && m.acked >= m.sent.bytes) usage_.erase(it);
    return;
  }
  ++usage_failed;
  if (it != usage_.end() && it->second.in_flight == rep.usage.bytes) it->second.in_flight = kNone;
}

void KmsKeySource::count_only(const Reply& rep) {
  if (rep.tag == kUsage)
    usage_answered(rep);
  else if (rep.r.ok())
    ++fetch_ok;
  else
    count_error(rep.r);
}

void KmsKeySource::count_error(const kp::Result& r) {
  ++fetch_errors;
  ++errors_by_code[r.error];
}

void KmsKeySource::poll(KeyControl& ctl, MonoClock::time_point now) {
  for (auto& rep : take_replies()) handle(ctl, rep, now);
  if (refused_) return;

  bool changed = false;
  if (ctl.current_spi() == 0) {
    // Receiver that started without keys: keep asking.
    if (!o_.sender) submit_next(ctl, now);
    return;
  }
  const int64_t left = ms_until(cur_end_, now);
  const bool have_next = ctl.next_spi() != 0;
  // P1 (sender) / P2 (receiver): get the next key ahead of the switch.
  if (!have_next && (o_.sender || o_.p2_ms >= 0) && left <= (o_.sender ? p1() : p2_due()))
    submit_next(ctl, now);

  // A notice is as early as the next key: one that came late shortens it. Up to a tenth short
  // is on time (control may run a few polls late); a key first seen with less than its lead
  // left (at start) could not have been announced in time and is not counted.
  const int64_t lead = o_.sender ? o_.notice_lead_ms : 0;
  const int64_t short_below = lead - lead / 10;
  if (lead > 0 && left > short_below) notice_possible_ = true;
  if (lead > 0 && have_next && !notice_set_ && left <= lead && left > 0) {
    ctl.set_notice(ctl.next_spi(),
                   rte_get_tsc_cycles() + uint64_t(left) * (rte_get_tsc_hz() / 1000));
    notice_set_ = true;
    if (left < short_below && notice_possible_) short_notice(ctl.next_spi(), left);
    changed = true;
  }
  if (left <= 0) {
    if (have_next) {
      if (lead > 0 && !notice_set_ && notice_possible_) short_notice(ctl.next_spi(), 0);
      switch_to_next(ctl, now);
      changed = true;
    } else if (o_.sender && !warned_late_) {
      // Without a next key the sender keeps the current one: stopping
      // delivery would lose data, and the receivers still hold this key.
      ++late_switches;
      warned_late_ = true;
      KC_LOG(WARNING, kms, "keycast-send: WARNING: current key SPI %u expired and no next key "
                   "yet (KMS unreachable?): still using it\n", ctl.current_spi());
    } else if (!o_.sender && !warned_late_) {
      // The sender may have switched already: its packets name the new SPI and
      // on_event() fetches it, but those that arrive before the answer are lost.
      ++keys_late;
      warned_late_ = true;
      KC_LOG(WARNING, kms, "keycast-recv: channel %u: current key SPI %u ended with no next key held "
                           "(last asked %lld ms before the switch, answered %lld ms before: %s)\n",
             o_.channel, ctl.current_spi(), static_cast<long long>(ms_until(cur_end_, next_asked_)),
             static_cast<long long>(ms_until(cur_end_, next_answered_)),
             std::string(kp::error_name(next_error_)).c_str());
    }
  }
  for (auto it = retiring_.begin(); it != retiring_.end();) {
    if (now >= it->at) {
      if (ctl.holds(it->spi) && it->spi != ctl.current_spi() && it->spi != ctl.next_spi()) {
        ctl.remove(it->spi);  // grace period over
        ends_.erase(it->spi);
        changed = true;
      }
      it = retiring_.erase(it);
    } else {
      ++it;
    }
  }
  if (changed) ctl.publish();
}

void KmsKeySource::short_notice(uint32_t next_spi, int64_t lead_ms) {
  ++short_notices;
  KC_LOG(WARNING, kms, "keycast-send: channel %u: the switch to SPI %u was announced %lld ms ahead, "
                       "not %lld: the next key came late (asked %lld ms before the switch, answered "
                       "%lld ms before)\n",
         o_.channel, next_spi, static_cast<long long>(lead_ms), static_cast<long long>(o_.notice_lead_ms),
         static_cast<long long>(ms_until(cur_end_, next_asked_)),
         static_cast<long long>(ms_until(cur_end_, next_answered_)));
}

void KmsKeySource::on_event(KeyControl& ctl, const ControlEvent& e) {
  if (o_.sender || refused_ || e.spi == 0 || ctl.holds(e.spi)) return;
  const auto now = MonoClock::now();
  // Rate limit: one fetch per SPI per interval, however many packets or notices name it; for
  // a notice, sooner as its switch nears.
  const bool notice = e.type == EventType::Notice;
  auto& fetched = notice ? last_notice_fetch_ : last_packet_fetch_;
  auto& last = fetched[e.spi];
  const int64_t gap = notice ? retry_gap_ms(e.ms_to_switch, o_.fetch_min_interval_ms) : o_.fetch_min_interval_ms;
  if (last != MonoClock::time_point{} && now - last < milliseconds(gap)) return;
  last = now;
  if (fetched.size() > 4096) fetched.clear();  // forged SPIs cannot grow it
  if (e.type == EventType::UnknownSpi)
    KC_LOG(NOTICE, kms, "keycast-recv: channel %u: packets under SPI %u, not held (current %u, %lld ms "
                        "left; next %u): asking for it\n",
           o_.channel, e.spi, ctl.current_spi(), static_cast<long long>(ms_until(cur_end_, now)),
           ctl.next_spi());
  ++event_fetches;
  ++fetches;
  client_->fetch_spi(o_.channel, e.spi, enqueue(kBySpi));
}

void KmsKeySource::on_push(kp::Message m) {
  kp::Result r;
  r.received_at = MonoClock::now();
  r.remaining_ms = m.remaining_ms;
  r.keys = m.keys;
  r.reply = std::move(m);
  inbox_->post(Reply{kPush, std::move(r), {}});
}

// A client lost the channel (eviction): its next key is dropped here too,
// never used; the current key ends when the master says (within its evict
// time) and the switch goes to the fresh key the push carries (kms-origin)
// or that this sender makes and uploads now (sender-origin). The in-band
// notice then names the fresh key, so entitled receivers fetch it in time.
void KmsKeySource::apply_push(KeyControl& ctl, const kp::Result& r, MonoClock::time_point now) {
  if (!o_.sender || refused_ || ctl.current_spi() == 0) return;
  ++evictions;
  if (const uint32_t n = ctl.next_spi()) {
    ctl.remove(n);
    ends_.erase(n);
    ctl.clear_next();
    next_end_ = {};
  }
  ctl.clear_notice();
  notice_set_ = false;
  bool changed = true;
  for (const auto& k : r.keys) install(ctl, k, r.received_at, changed);
  KC_LOG(NOTICE, kms, "%s: channel %u: key server: %s: switching to a fresh key in %lld ms\n",
               role_name(true), o_.channel, r.reply.text.c_str(),
               static_cast<long long>(ms_until(cur_end_, now)));
  if (o_.sender_origin) {
    next_in_flight_ = false;
    next_retry_ = {};
    submit_next(ctl, now);
  }
  ctl.publish();
}

void KmsKeySource::send_checkpoint(UsageMark& m) {
  ++usage_reports;
  m.in_flight = m.sent.bytes;
  client_->report_checkpoint(o_.channel, m.sent.spi, m.sent.bytes, m.sent.packets, enqueue(kUsage, m.sent));
}

std::optional<kp::UsageEntry> KmsKeySource::checkpoint_due(const EpochUsage& u) {
  if (u.packets == 0) return std::nullopt;
  UsageMark& m = usage_[u.spi];
  if (m.final || m.in_flight != kNone || u.bytes <= m.sent.bytes) return std::nullopt;
  m.sent = u;
  m.in_flight = u.bytes;
  ++usage_reports;
  return kp::UsageEntry{o_.channel, u.spi, u.bytes, u.packets};
}

void KmsKeySource::checkpoint_answered(const kp::Result& r, const EpochUsage& u) {
  kp::Result mine;
  mine.error = r.error;
  mine.message = r.message;
  mine.received_at = r.received_at;
  const auto& refused = r.reply.channel_list;
  if (r.ok() && std::find(refused.begin(), refused.end(), o_.channel) != refused.end()) {
    mine.error = kp::ErrorCode::ChannelDenied;
    mine.message = "usage of channel " + std::to_string(o_.channel) + " refused by the key server";
  }
  inbox_->post(Reply{kUsage, std::move(mine), u});
}

void KmsKeySource::report_usage(const EpochUsage& u) {
  UsageMark& m = usage_[u.spi];
  m.final = true;
  if (u.bytes > m.sent.bytes || m.sent.packets == 0) m.sent = u;
  if (m.acked >= m.sent.bytes && m.sent.packets != 0 && m.in_flight == kNone) {
    usage_.erase(u.spi);  // the last checkpoint already said it all
    return;
  }
  // Sent even if an earlier checkpoint is still on its way: the final
  // figures must not wait for its answer, and the master keeps the maximum.
  send_checkpoint(m);
}

void KmsKeySource::resend_usage() {
  for (auto& [spi, m] : usage_)
    if (m.final && m.in_flight == kNone && m.acked < m.sent.bytes) send_checkpoint(m);
}

bool KmsKeySource::wait_usage(MonoClock::time_point until) {
  for (;;) {
    for (const auto& rep : take_replies()) count_only(rep);
    if (usage_acked + usage_failed >= usage_reports || MonoClock::now() >= until) break;
    std::this_thread::sleep_for(milliseconds(5));
  }
  bool all = true;
  for (auto& [spi, m] : usage_) all &= m.acked >= m.sent.bytes;
  return all;
}

void KmsKeySource::settle(std::chrono::milliseconds timeout) { settle_until(MonoClock::now() + timeout); }

void KmsKeySource::settle_until(MonoClock::time_point until) {
  for (;;) {
    for (const auto& rep : take_replies()) count_only(rep);
    if (unanswered() == 0 || MonoClock::now() >= until) return;
    std::this_thread::sleep_for(milliseconds(5));
  }
}

std::vector<std::shared_ptr<KeySlot>> KmsKeySource::take_finished_epochs() {
  std::vector<std::shared_ptr<KeySlot>> out;
  out.swap(finished_);
  return out;
}

}  // namespace keycast::dp

// keycast-send: DPDK delivery server. The main lcore runs control (keys,
// stats, stop); every other EAL lcore is a worker that generates (or ingests)
// delivery data, enciphers it with the current key and multicasts it.
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/aead.hpp"
#include "common/control_msg.hpp"
#include "common/esp.hpp"
#include "common/key_record.hpp"
#include "dataplane/app.hpp"
#include "dataplane/key_source.hpp"
#include "dataplane/key_table.hpp"
#include "dataplane/kms_key_source.hpp"
#include "dataplane/pacer.hpp"
#include "dataplane/pattern.hpp"
#include "dataplane/stats.hpp"

namespace po = boost::program_options;
using namespace keycast;
using namespace keycast::dp;

namespace {

constexpr unsigned kMaxBurst = 64;

struct SendOptions {
  uint16_t port = 0;
  GroupAddr group{};
  uint32_t source = 0;
  uint32_t channel = 1;
  std::string suite;
  std::string key_file;
  uint32_t rotate_ms = 0;
  uint32_t notice_lead_ms = 200;
  uint32_t notice_interval_ms = 50;
  uint32_t payload_size = 512;
  uint64_t rate = 0;
  int ingest_port = -1;
  uint64_t count = 0;
  double duration = 0;
  double stats_interval = 1;
  std::string stats_json;
  uint32_t idle_sleep_us = 0;
  uint32_t burst = 32;
  uint32_t ttl = 16;
  uint16_t src_port = 5000;
  uint32_t start_delay_ms = 0;
  bool use_kms = false;
  KmsOptions kms;
};

// Keys a worker's data packets went out under, in the order it first used
// them (an SPI is never reused); at most this many are kept.
constexpr unsigned kMaxSpisUsed = 1024;

struct alignas(64) SendWorkerStats {
  Counter packets, bytes, wire_bytes, notices, tx_dropped, alloc_fail, ingest_rx, ingest_bad;
  // Written by the worker only, read after it stopped: the final spi_list is
  // what was sent, not what the control thread saw (it may see a switch after
  // the last packet, or miss one in the first moments of sending).
  uint32_t spis = 0;
  bool spis_full = false;  // more keys than kMaxSpisUsed: the control's view is used
  uint32_t spi_used[kMaxSpisUsed];
  uint64_t spi_first_tsc[kMaxSpisUsed];
};

struct Shared {
  SendOptions opt;
  KeyTableHolder* holder = nullptr;
  rte_mempool* pool = nullptr;
  esp::Template tmpl{};
  alignas(64) std::atomic<uint64_t> next_index{0};  // generator packet index, reserved per burst
  std::atomic<uint64_t> start_tsc{0};
  std::atomic<unsigned> running{0};
  std::atomic<bool> failed{false};  // a worker stopped on an error
  std::vector<std::unique_ptr<SendWorkerStats>> stats;
};

struct WorkerArg {
  Shared* sh;
  unsigned id;       // worker index = TX queue = RCU reader id
  unsigned nworkers;
};

// Transmits all n packets (retrying while the queue is full); on stop frees
// what is left. Returns how many were sent.
uint16_t tx_all(uint16_t port, uint16_t q, rte_mbuf** pkts, uint16_t n, SendWorkerStats& st) {
  uint16_t sent = 0;
  unsigned spins = 0;
  while (sent < n) {
    sent += rte_eth_tx_burst(port, q, pkts + sent, n - sent);
    if (sent < n) {
      if (g_stop.load(std::memory_order_relaxed) && ++spins > 1000) break;
      rte_pause();
    }
  }
  if (sent < n) {
    st.tx_dropped.add(n - sent);
    rte_pktmbuf_free_bulk(pkts + sent, n - sent);
  }
  return sent;
}

class SendWorker {
 public:
  SendWorker(Shared& sh, unsigned id, unsigned nworkers)
      : sh_(sh), id_(id), q_(static_cast<uint16_t>(id)), sole_worker_(nworkers == 1), st_(*sh.stats[id]),
        backoff_(sh.opt.idle_sleep_us) {
    const uint64_t hz = rte_get_tsc_hz();
    pacer_ = Pacer(Pacer::share(sh.opt.rate, nworkers, id), hz, sh.opt.burst, rte_get_tsc_cycles());
    notice_every_ = hz / 1000 * sh.opt.notice_interval_ms;
    // Generator plaintext: the ciphertext region of a frame built once (UDP
    // header, pattern for index 0, ESP trailer); per packet only the index changes.
    if (sh.opt.ingest_port < 0) {
      const uint32_t plen = sh.opt.payload_size;
      std::vector<uint8_t> frame(esp::frame_len(plen) + 8);
      pattern_fill(frame.data() + esp::kPayloadOffset, plen, 0);
      AeadOp op{};
      if (esp::prepare(sh.tmpl, 0, 0, esp::kNextUdp, frame.data(), esp::kUdpLen + plen, frame.size(),
                       aad_[0], op) == 0 || op.len > sizeof plain_[0])
        throw std::runtime_error("payload size does not fit a frame");
      for (auto& pl : plain_) std::memcpy(pl, frame.data() + esp::kCipherOffset, op.len);
      plain_len_ = op.len;
    }
  }

  void run() {
    KeyTableHolder& h = *sh_.holder;  // registered by control before launch
    // Wait for the start time (lets a test attach TAPs to a bridge first).
    while (!g_stop.load(std::memory_order_relaxed) &&
           rte_get_tsc_cycles() < sh_.start_tsc.load(std::memory_order_relaxed)) {
      h.quiescent(id_);
      rte_delay_us_sleep(1000);
    }
    pacer_ = Pacer(pacer_.rate(), rte_get_tsc_hz(), sh_.opt.burst, rte_get_tsc_cycles());
    const bool ingest = sh_.opt.ingest_port >= 0;
    if (ingest && id_ != 0) {  // the ingest port has one RX queue, polled by worker 0
      h.unregister_reader(id_);
      return;
    }
    while (!g_stop.load(std::memory_order_relaxed)) {
      h.quiescent(id_);
      const KeyTable* t = h.acquire();
      if (id_ == 0) maybe_notice(t);
      bool done = false;
      const unsigned n = ingest ? ingest_burst(t, done) : generate_burst(t, done);
      if (done) break;
      if (n == 0) idle();
      else backoff_.reset();
    }
    h.unregister_reader(id_);
  }

 private:
  void idle() {
    if (backoff_.should_sleep()) {
      uint32_t us = backoff_.sleep_us();
      if (!pacer_.unpaced()) {
        const uint64_t wait = pacer_.ticks_until_next(rte_get_tsc_cycles());
        const uint64_t wait_us = wait * 1000000 / rte_get_tsc_hz();
        if (wait_us < us) us = static_cast<uint32_t>(wait_us);
      }
      if (us) {
        sh_.holder->offline(id_);
        rte_delay_us_sleep(us);
        sh_.holder->online(id_);
        return;
      }
    }
    rte_pause();
  }

  unsigned generate_burst(const KeyTable* t, bool& done) {
    KeySlot* key = t->at(0).current;
    if (!key) return 0;
    uint32_t want = sh_.opt.burst;
    want = pacer_.take(rte_get_tsc_cycles(), want);
    if (want == 0) return 0;
    rte_mbuf* pkts[kMaxBurst];
    if (rte_pktmbuf_alloc_bulk(sh_.pool, pkts, want) != 0) {
      st_.alloc_fail.add();
      return 0;
    }
    uint32_t n = want;
    const uint64_t first = take_indices(want);
    if (sh_.opt.count) {
      if (first >= sh_.opt.count) {
        rte_pktmbuf_free_bulk(pkts, want);
        done = true;
        return 0;
      }
      if (first + n > sh_.opt.count) {
        const uint32_t keep = static_cast<uint32_t>(sh_.opt.count - first);
        rte_pktmbuf_free_bulk(pkts + keep, n - keep);
        n = keep;
      }
    }
    const uint64_t seq0 = key->reserve(id_, n);
    const uint32_t plen = sh_.opt.payload_size;
    uint64_t wire = 0;
    // Headers and AADs of the whole burst first: their stores have drained
    // to L1 before the seals load them (a wide load over a narrower store
    // still in the store buffer stalls on forwarding).
    for (uint32_t i = 0; i < n; ++i) {
      uint8_t* f = rte_pktmbuf_mtod(pkts[i], uint8_t*);
      const uint16_t cap = static_cast<uint16_t>(rte_pktmbuf_tailroom(pkts[i]));
      // Outer headers only: the UDP header and trailer are in plain_.
      const std::size_t len = esp::prepare_outer(sh_.tmpl, key->spi, seq0 + i, f, plain_len_, cap,
                                                 aad_[i], ops_[i]);
      pkts[i]->data_len = static_cast<uint16_t>(len);
      pkts[i]->pkt_len = static_cast<uint32_t>(len);
      wire += len;
    }
    // The plaintext (UDP header, pattern, trailer) is the same for every
    // packet but the pattern's 16-byte index: kept once per worker and
    // enciphered out of place straight into the frame (no fill pass). Two
    // copies, so packet i+1's index is written while packet i is sealed, for
    // the same store-forwarding reason.
    pattern_set_index(plain_[0] + esp::kUdpLen, first);
    for (uint32_t i = 0; i < n; ++i) {
      if (i + 1 < n) pattern_set_index(plain_[(i + 1) & 1] + esp::kUdpLen, first + i + 1);
      aead_.seal_from(key->key, ops_[i], plain_[i & 1]);
    }
    const uint16_t sent = tx_all(sh_.opt.port, q_, pkts, static_cast<uint16_t>(n), st_);
    st_.packets.add(sent);
    st_.bytes.add(uint64_t(sent) * plen);
    key->count_sent(id_, sent, uint64_t(sent) * plen);
    st_.wire_bytes.add(sent == n ? wire : wire * sent / n);
    if (key->spi != last_spi_ && sent) note_key(key->spi);
    return n;
  }

  // The generator's packet indices are global (the receiver checks them for
  // loss and order), so workers share one counter; a lone worker owns it and
  // needs no locked add (which would wait for the store buffer to drain).
  uint64_t take_indices(uint32_t n) noexcept {
    if (sole_worker_) {
      const uint64_t first = sh_.next_index.load(std::memory_order_relaxed);
      sh_.next_index.store(first + n, std::memory_order_relaxed);
      return first;
    }
    return sh_.next_index.fetch_add(n, std::memory_order_relaxed);
  }

  // Plaintext IPv4/UDP frames from --ingest-port: enciphered in place (the
  // UDP header and payload stay where they are; headers are prepended into
  // the headroom and the trailer appended).
  unsigned ingest_burst(const KeyTable* t, bool& done) {
    rte_mbuf* in[kMaxBurst];
    uint16_t want = static_cast<uint16_t>(sh_.opt.burst);
    if (sh_.opt.count) {  // --count: stop after that many enciphered frames
      const uint64_t sent = st_.packets.get() + st_.tx_dropped.get() + st_.ingest_bad.get();
      if (sent >= sh_.opt.count) {
        done = true;
        return 0;
      }
      want = static_cast<uint16_t>(std::min<uint64_t>(want, sh_.opt.count - sent));
    }
    want = static_cast<uint16_t>(pacer_.take(rte_get_tsc_cycles(), want));
    if (want == 0) return 0;
    const uint16_t got =
        rte_eth_rx_burst(static_cast<uint16_t>(sh_.opt.ingest_port), 0, in, want);
    if (got < want && !pacer_.unpaced()) pacer_.refund(want - got);
    if (got == 0) return 0;
    st_.ingest_rx.add(got);
    KeySlot* key = t->at(0).current;
    rte_mbuf* out[kMaxBurst];
    uint16_t n = 0;
    uint64_t payload_bytes = 0, wire = 0;
    for (uint16_t i = 0; i < got; ++i) {
      rte_mbuf* m = in[i];
      const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
      bool ok = key && rte_pktmbuf_is_contiguous(m) && m->data_len >= 14 + 20 + 8 &&
                f[12] == 0x08 && f[13] == 0x00 && (f[14] >> 4) == 4;
      uint32_t ihl = 0, udp_len = 0;
      if (ok) {
        ihl = (f[14] & 0x0f) * 4u;
        ok = ihl >= 20 && f[14 + 9] == 17 && m->data_len >= 14 + ihl + 8 &&
             ((f[14 + 6] << 8 | f[14 + 7]) & 0x3fff) == 0;
      }
      if (ok) {
        udp_len = uint32_t(f[14 + ihl + 4]) << 8 | f[14 + ihl + 5];
        ok = udp_len >= 8 && 14 + ihl + udp_len <= m->data_len;
      }
      if (ok) {
        // Move the frame start so the UDP header lands at kCipherOffset.
        const int delta = int(esp::kCipherOffset) - int(14 + ihl);
        if (delta > 0)
          ok = rte_pktmbuf_prepend(m, static_cast<uint16_t>(delta)) != nullptr;
        else if (delta < 0)
          ok = rte_pktmbuf_adj(m, static_cast<uint16_t>(-delta)) != nullptr;
      }
      if (ok) {
        const uint32_t keep = esp::kCipherOffset + udp_len;  // drop Ethernet padding
        rte_pktmbuf_trim(m, static_cast<uint16_t>(m->data_len - keep));
        ok = rte_pktmbuf_append(m, static_cast<uint16_t>(esp::trailer_len(udp_len))) != nullptr;
      }
      if (!ok) {
        st_.ingest_bad.add();
        rte_pktmbuf_free(m);
        continue;
      }
      out[n] = m;
      payload_bytes += udp_len - 8;
      ++n;
    }
    if (n == 0) return got;
    const uint64_t seq0 = key->reserve(id_, n);
    for (uint16_t i = 0; i < n; ++i) {
      rte_mbuf* m = out[i];
      uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
      // The inner length is the UDP length field, still intact in place.
      const uint32_t udp_len = uint32_t(f[esp::kCipherOffset + 4]) << 8 | f[esp::kCipherOffset + 5];
      const std::size_t len = esp::prepare(sh_.tmpl, key->spi, seq0 + i, esp::kNextUdp, f, udp_len,
                                           m->data_len, aad_[i], ops_[i]);
      m->data_len = static_cast<uint16_t>(len);
      m->pkt_len = static_cast<uint32_t>(len);
      wire += len;
    }
    aead_.seal_burst(key->key, ops_, n);
    const uint16_t sent = tx_all(sh_.opt.port, q_, out, n, st_);
    const uint64_t sent_bytes = sent == n ? payload_bytes : payload_bytes * sent / n;
    st_.packets.add(sent);
    st_.bytes.add(sent_bytes);
    key->count_sent(id_, sent, sent_bytes);
    st_.wire_bytes.add(sent == n ? wire : wire * sent / n);
    if (key->spi != last_spi_ && sent) note_key(key->spi);
    return got;
  }

  // Once per key, not per packet: the bursts' key changes only at a switch.
  void note_key(uint32_t spi) noexcept {
    last_spi_ = spi;
    if (st_.spis < kMaxSpisUsed) {
      st_.spi_used[st_.spis] = spi;
      st_.spi_first_tsc[st_.spis] = rte_get_tsc_cycles();
      ++st_.spis;
    } else {
      st_.spis_full = true;
    }
  }

  // Worker 0 multicasts the pending key change previous notice when it first
  // sees it, then every --notice-interval-ms until the switch.
  void maybe_notice(const KeyTable* t) {
    const ChannelKeys& ck = t->at(0);
    if (!ck.notice.generation || !ck.current) return;
    const uint64_t now = rte_get_tsc_cycles();
    if (now >= ck.notice.switch_tsc) return;
    if (ck.notice.generation == last_notice_gen_ && now - last_notice_tsc_ < notice_every_) return;
    last_notice_gen_ = ck.notice.generation;
    last_notice_tsc_ = now;
    rte_mbuf* m = rte_pktmbuf_alloc(sh_.pool);
    if (!m) {
      st_.alloc_fail.add();
      return;
    }
    KeyChangeNotice nt;
    nt.channel = ck.channel;
    nt.next_spi = ck.notice.next_spi;
    nt.ms_to_switch = static_cast<uint32_t>((ck.notice.switch_tsc - now) / (rte_get_tsc_hz() / 1000));
    uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
    const std::size_t cap = rte_pktmbuf_tailroom(m);
    const std::size_t inner = encode_notice(nt, f + esp::kCipherOffset, cap - esp::kCipherOffset);
    KeySlot* key = ck.current;
    const std::size_t len = esp::prepare(sh_.tmpl, key->spi, key->reserve(id_, 1), esp::kNextControl, f,
                                         inner, cap, aad_[0], ops_[0]);
    if (!len) {
      rte_pktmbuf_free(m);
      return;
    }
    aead_.seal(key->key, ops_[0]);
    m->data_len = static_cast<uint16_t>(len);
    m->pkt_len = static_cast<uint32_t>(len);
    if (tx_all(sh_.opt.port, q_, &m, 1, st_) == 1) st_.notices.add();
  }

  Shared& sh_;
  unsigned id_;
  uint16_t q_;
  bool sole_worker_;
  SendWorkerStats& st_;
  IdleBackoff backoff_;
  Pacer pacer_;
  Aead aead_;
  uint64_t notice_every_ = 0, last_notice_gen_ = 0, last_notice_tsc_ = 0;
  uint32_t last_spi_ = 0;  // the key of this worker's last data burst
  AeadOp ops_[kMaxBurst];
  uint8_t aad_[kMaxBurst][esp::kAadLen];
  // Generator plaintext (two copies, see generate_burst) and its length: the
  // enciphered region of a generated frame, UDP header and trailer included.
  alignas(64) uint8_t plain_[2][RTE_MBUF_DEFAULT_DATAROOM];
  std::size_t plain_len_ = 0;
};

int worker_main(void* p) {
  auto* a = static_cast<WorkerArg*>(p);
  try {
    auto w = std::make_unique<SendWorker>(*a->sh, a->id, a->nworkers);
    w->run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keycast-send: worker %u: %s\n", a->id, e.what());
    a->sh->holder->unregister_reader(a->id);  // never hold up reclamation
    a->sh->failed.store(true);
    g_stop.store(true);
  }
  a->sh->running.fetch_sub(1);
  return 0;
}

SendOptions parse_options(int argc, char** argv) {
  SendOptions o;
  std::string group = "239.1.1.1:5000", source = "10.0.0.1";
  std::vector<std::string> kms;
  std::string tls_cert, tls_key, tls_ca, tls_crl, key_origin;
  po::options_description d("keycast-send options (after EAL args and --)");
  d.add_options()
      ("help,h", "this help")
      ("port", po::value<uint16_t>(&o.port)->default_value(0), "TX port")
      ("group", po::value<std::string>(&group)->default_value(group), "destination group A.B.C.D:PORT")
      ("source", po::value<std::string>(&source)->default_value(source), "IPv4 source address")
      ("src-port", po::value<uint16_t>(&o.src_port)->default_value(5000), "inner UDP source port")
      ("ttl", po::value<uint32_t>(&o.ttl)->default_value(16), "IPv4 TTL")
      ("channel", po::value<uint32_t>(&o.channel)->default_value(1), "channel id")
      ("suite", po::value<std::string>(&o.suite), "aes128gcm|aes256gcm (checked against the keys)")
      ("key-file", po::value<std::string>(&o.key_file), "static keys, one per line: SPI HEXKEY (labs only)")
      ("rotate-ms", po::value<uint32_t>(&o.rotate_ms)->default_value(0), "move to the next key-file line every MS")
      ("notice-lead-ms", po::value<uint32_t>(&o.notice_lead_ms)->default_value(200), "send the key change previous notice this long before a switch (0: none)")
      ("notice-interval-ms", po::value<uint32_t>(&o.notice_interval_ms)->default_value(50), "repeat the notice this often until the switch")
      ("kms", po::value<std::vector<std::string>>(&kms)->composing(), "HOST:PORT[,HOST:PORT...] key management servers")
      ("tls-cert", po::value<std::string>(&tls_cert), "client certificate (with --kms)")
      ("tls-key", po::value<std::string>(&tls_key), "client key (with --kms)")
      ("tls-ca", po::value<std::string>(&tls_ca), "CA (with --kms)")
      ("tls-crl", po::value<std::string>(&tls_crl), "CA's PEM CRL: refuse a revoked key server (with --kms)")
      ("key-origin", po::value<std::string>(&key_origin)->default_value("kms"), "kms|sender (with --kms): who makes the keys")
      ("lifetime-ms", po::value<int64_t>(&o.kms.lifetime_ms)->default_value(60000), "--key-origin sender: lifetime of each key made here")
      ("p1-ms", po::value<int64_t>(&o.kms.p1_ms)->default_value(0), "obtain the next key this long before the switch (0: a third of the lifetime)")
      ("payload-size", po::value<uint32_t>(&o.payload_size)->default_value(512), "generator UDP payload bytes (>= 16)")
      ("rate", po::value<uint64_t>(&o.rate)->default_value(0), "packets per second, 0 = as fast as possible")
      ("ingest-port", po::value<int>(&o.ingest_port)->default_value(-1), "encipher plaintext IPv4/UDP frames from this port instead of generating")
      ("count", po::value<uint64_t>(&o.count)->default_value(0), "stop after N generated packets (0 = no limit)")
      ("duration", po::value<double>(&o.duration)->default_value(0), "stop after S seconds (0 = no limit)")
      ("stats-interval", po::value<double>(&o.stats_interval)->default_value(1), "periodic stats every S seconds (0 = off)")
      ("stats-json", po::value<std::string>(&o.stats_json), "write final figures as JSON to PATH")
      ("idle-sleep-us", po::value<uint32_t>(&o.idle_sleep_us)->default_value(0), "sleep up to US when idle (0 = busy poll)")
      ("burst", po::value<uint32_t>(&o.burst)->default_value(32), "packets per burst (1..64)")
      ("start-delay-ms", po::value<uint32_t>(&o.start_delay_ms)->default_value(0), "wait MS after port start before sending");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(d).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: keycast-send [EAL args] -- [options]\n" << d;
      std::exit(0);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  o.group = parse_group(group);
  o.source = parse_ipv4(source, "--source");
  if (!o.suite.empty() && !parse_suite(o.suite))
    throw UsageError("--suite: '" + o.suite + "' is not aes128gcm or aes256gcm");
  if (!kms.empty()) {
    const KmsOptions defaults = o.kms;
    o.kms = kms_options(kms, tls_cert, tls_key, tls_ca, tls_crl, o.key_file, o.channel, true);
    o.kms.lifetime_ms = defaults.lifetime_ms;
    o.kms.p1_ms = defaults.p1_ms;
    o.kms.notice_lead_ms = o.notice_lead_ms;
    if (key_origin != "kms" && key_origin != "sender")
      throw UsageError("--key-origin: '" + key_origin + "' is not kms or sender");
    o.kms.sender_origin = key_origin == "sender";
    if (!o.suite.empty()) o.kms.suite = *parse_suite(o.suite);
    if (o.kms.lifetime_ms < 100) throw UsageError("--lifetime-ms: must be >= 100");
    if (o.kms.p1_ms < 0 || o.kms.p1_ms >= o.kms.lifetime_ms)
      throw UsageError("--p1-ms: must be in 0..lifetime");
    o.use_kms = true;
  } else if (vm.count("tls-cert") || vm.count("tls-key") || vm.count("tls-ca") || vm.count("tls-crl")) {
    throw UsageError("--tls-cert/--tls-key/--tls-ca/--tls-crl need --kms");
  }
  if (o.key_file.empty() && !o.use_kms) throw UsageError("one of --key-file or --kms is required");
  if (o.payload_size < kPatternMin || esp::frame_len(o.payload_size) > RTE_MBUF_DEFAULT_DATAROOM)
    throw UsageError("--payload-size: must be in 16.." +
                     std::to_string(esp::max_payload(RTE_MBUF_DEFAULT_DATAROOM - esp::kEthLen)));
  if (o.burst == 0 || o.burst > kMaxBurst) throw UsageError("--burst: must be in 1..64");
  if (o.ttl == 0 || o.ttl > 255) throw UsageError("--ttl: must be in 1..255");
  if (o.duration < 0) throw UsageError("--duration: must be >= 0");
  if (o.stats_interval < 0) throw UsageError("--stats-interval: must be >= 0");
  if (o.rotate_ms && o.notice_lead_ms >= o.rotate_ms) o.notice_lead_ms = o.rotate_ms / 2;
  return o;
}

Figures sender_figures(Shared& sh, double duration, uint64_t switches,
                       const std::vector<uint64_t>& spis, uint32_t spi_now) {
  uint64_t pk = 0, by = 0, wb = 0, no = 0, td = 0, af = 0, ir = 0, ib = 0;
  for (auto& s : sh.stats) {
    pk += s->packets.get();
    by += s->bytes.get();
    wb += s->wire_bytes.get();
    no += s->notices.get();
    td += s->tx_dropped.get();
    af += s->alloc_fail.get();
    ir += s->ingest_rx.get();
    ib += s->ingest_bad.get();
  }
  Figures f;
  f.push_back(Figure::integer("packets_sent", pk));
  f.push_back(Figure::integer("bytes_sent", by));
  f.push_back(Figure::integer("wire_bytes", wb));
  f.push_back(Figure::real("duration_s", duration));
  f.push_back(Figure::integer("key_switches", switches));
  f.push_back(Figure::integer("spis_used", spis.size()));
  f.push_back(Figure::ints("spi_list", spis));
  f.push_back(Figure::integer("spi_current", spi_now));
  f.push_back(Figure::integer("notices_sent", no));
  f.push_back(Figure::integer("tx_dropped", td));
  f.push_back(Figure::integer("alloc_fail", af));
  f.push_back(Figure::integer("ingest_rx", ir));
  f.push_back(Figure::integer("ingest_bad", ib));
  f.push_back(Figure::real("pps", duration > 0 ? pk / duration : 0));
  f.push_back(Figure::real("gbps", duration > 0 ? wb * 8 / duration / 1e9 : 0));
  f.push_back(Figure::integer("workers", sh.stats.size()));
  return f;
}

int run(int argc, char** argv) {
  SendOptions opt = parse_options(argc, argv);
  check_port(opt.port, "--port");
  if (opt.ingest_port >= 0) check_port(static_cast<uint16_t>(opt.ingest_port), "--ingest-port");

  std::vector<KeyRecord> keys;
  if (!opt.use_kms) keys = load_static_keys(opt.key_file, opt.channel, opt.suite, "keycast-send");

  const auto workers = worker_lcores();
  if (workers.empty()) throw UsageError("EAL: need at least 2 lcores (main = control, others = workers), e.g. -l 0,1");
  const unsigned nw = static_cast<unsigned>(workers.size());

  Shared sh;
  sh.opt = opt;
  sh.pool = make_pool("send_pool", 8192 * nw + 4096);
  port_start(PortSetup{opt.port, 1, static_cast<uint16_t>(nw), 1024, 1024, sh.pool});
  if (opt.ingest_port >= 0 && opt.ingest_port != opt.port)
    port_start(PortSetup{static_cast<uint16_t>(opt.ingest_port), 1, 1, 1024, 1024, sh.pool});

  esp::Flow flow;
  rte_ether_addr mac{};
  if (rte_eth_macaddr_get(opt.port, &mac) == 0) std::memcpy(flow.src_mac, mac.addr_bytes, 6);
  flow.src_ip = opt.source;
  flow.group_ip = opt.group.ip;
  flow.src_port = opt.src_port;
  flow.dst_port = opt.group.port;
  flow.ttl = static_cast<uint8_t>(opt.ttl);
  sh.tmpl = esp::make_template(flow);

  KeyTableHolder holder(nw);
  sh.holder = &holder;
  SlotParams slot_params;
  slot_params.send_workers = nw;
  KeyControl ctl(holder, opt.channel, slot_params);
  std::unique_ptr<KeySource> source_owner;
  KmsKeySource* kms = nullptr;
  if (opt.use_kms) {
    auto k = std::make_unique<KmsKeySource>(opt.kms);
    kms = k.get();
    source_owner = std::move(k);
  } else {
    source_owner = std::make_unique<StaticKeySource>(keys, StaticKeySource::Role::Sender,
                                                     opt.rotate_ms, opt.notice_lead_ms);
  }
  KeySource& source = *source_owner;
  // Usage per finished key epoch (billing): read once no worker can still
  // be adding to the slot's counters, i.e. after an RCU grace period.
  uint64_t usage_packets = 0, usage_bytes = 0;
  auto report_finished = [&](bool final_report) {
    if (!kms) return;
    auto fin = kms->take_finished_epochs();
    if (fin.empty() && !final_report) return;
    holder.synchronize();
    for (auto& s : fin) {
      if (!s) continue;
      EpochUsage u{s->spi, s->sent_bytes(), s->sent_packets()};
      usage_packets += u.packets;
      usage_bytes += u.bytes;
      if (u.packets) kms->report_usage(u);
    }
    if (final_report) {
      EpochUsage u{0, 0, 0};
      if (auto cur = ctl.slot(ctl.current_spi())) {
        u = EpochUsage{cur->spi, cur->sent_bytes(), cur->sent_packets()};
        usage_packets += u.packets;
        usage_bytes += u.bytes;
      }
      if (!kms->report_final(u, std::chrono::milliseconds(5000)))
        std::fprintf(stderr, "keycast-send: WARNING: %lu of %lu usage reports not acknowledged\n",
                     static_cast<unsigned long>(kms->usage_reports - kms->usage_acked),
                     static_cast<unsigned long>(kms->usage_reports));
      kms->settle(std::chrono::milliseconds(1000));  // so kms_ok/kms_errors are final
    }
  };
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t t_launch = rte_get_tsc_cycles();
  const uint64_t t_start = t_launch + hz / 1000 * opt.start_delay_ms;
  sh.start_tsc = t_start;
  for (unsigned i = 0; i < nw; ++i) sh.stats.push_back(std::make_unique<SendWorkerStats>());

  std::vector<uint64_t> spis;
  uint64_t switches = 0;
  uint32_t spi_now = 0;
  std::mutex fig_mu;  // spis/switches: written by control, read by the telemetry thread
  auto note_spi = [&]() {
    const uint32_t s = ctl.current_spi();
    if (s == spi_now) return;
    std::lock_guard<std::mutex> lock(fig_mu);
    if (spi_now != 0) {
      ++switches;
      std::fprintf(stderr, "keycast-send: key switch %lu: SPI %u -> %u\n",
                   static_cast<unsigned long>(switches), spi_now, s);
    }
    spi_now = s;
    spis.push_back(s);
  };

  telemetry_register("/keycast/stats", [&]() {
    const double d = tsc_seconds(rte_get_tsc_cycles() - t_start);
    std::lock_guard<std::mutex> lock(fig_mu);
    return sender_figures(sh, d > 0 ? d : 0, switches, spis, spi_now);
  }, "keycast-send counters. No parameters");

  // Key lifetimes count from the start of sending.
  source.start(ctl, MonoClock::now() + std::chrono::milliseconds(opt.start_delay_ms));
  if (!kms) note_spi();  // KMS keys may still change before sending starts

  std::vector<WorkerArg> args(nw);
  sh.running = nw;
  for (unsigned i = 0; i < nw; ++i) holder.register_reader(i);
  for (unsigned i = 0; i < nw; ++i) {
    args[i] = WorkerArg{&sh, i, nw};
    if (int rc = rte_eal_remote_launch(worker_main, &args[i], workers[i]); rc != 0)
      throw std::runtime_error("cannot launch worker on lcore " + std::to_string(workers[i]));
  }

  uint64_t last_stats = t_start, last_pk = 0, last_wb = 0;
  const uint64_t stats_every = static_cast<uint64_t>(opt.stats_interval * hz);
  const uint64_t stop_at = opt.duration > 0 ? t_start + static_cast<uint64_t>(opt.duration * hz) : 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    const uint64_t now = rte_get_tsc_cycles();
    // Static keys count their lifetimes from the start of sending; KMS keys
    // live on the KMS's clock, so they are kept current during the start
    // delay too (never start sending under a key that has already ended).
    if (now >= t_start || kms) {
      source.poll(ctl, MonoClock::now());
      if (now >= t_start) note_spi();
      report_finished(false);
    }
    holder.reclaim();
    if (stop_at && now >= stop_at) break;
    if (sh.running.load() == 0) break;  // --count reached
    if (stats_every && now - last_stats >= stats_every && now >= t_start) {
      auto f = sender_figures(sh, 0, switches, spis, spi_now);
      const uint64_t pk = f[0].i, wb = f[2].i;
      const double dt = tsc_seconds(now - last_stats);
      std::fprintf(stderr,
                   "keycast-send: t=%.1fs sent=%lu pps=%s Gbps=%.3f spi=%u switches=%lu "
                   "notices=%lu tx_dropped=%lu alloc_fail=%lu\n",
                   tsc_seconds(now - t_start), static_cast<unsigned long>(pk),
                   human_rate((pk - last_pk) / dt).c_str(), (wb - last_wb) * 8 / dt / 1e9, spi_now,
                   static_cast<unsigned long>(switches), static_cast<unsigned long>(f[8].i),
                   static_cast<unsigned long>(f[9].i), static_cast<unsigned long>(f[10].i));
      last_stats = now;
      last_pk = pk;
      last_wb = wb;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  g_stop.store(true);
  telemetry_detach("/keycast/stats");
  rte_eal_mp_wait_lcore();
  const uint64_t t_end = rte_get_tsc_cycles();
  const double duration = t_end > t_start ? tsc_seconds(t_end - t_start) : 0;
  holder.synchronize();
  report_finished(true);
  // The final key_switches and spi_list describe the stream: the keys the
  // workers' data packets went out under, merged in order of first use (a
  // run through more keys than the workers keep falls back to the control's
  // view, exact but for the first and last moments of sending).
  if (std::none_of(sh.stats.begin(), sh.stats.end(), [](auto& s) { return s->spis_full; })) {
    std::lock_guard<std::mutex> lock(fig_mu);
    std::vector<std::pair<uint64_t, uint32_t>> used;
    for (auto& s : sh.stats)
      for (uint32_t i = 0; i < s->spis; ++i) used.emplace_back(s->spi_first_tsc[i], s->spi_used[i]);
    std::sort(used.begin(), used.end());
    spis.clear();
    for (auto& [tsc, spi] : used)
      if (std::find(spis.begin(), spis.end(), spi) == spis.end()) spis.push_back(spi);
    switches = spis.empty() ? 0 : spis.size() - 1;
  }

  auto figs = sender_figures(sh, duration, switches, spis, spi_now);
  if (kms) {
    figs.push_back(Figure::integer("usage_reports", kms->usage_reports));
    figs.push_back(Figure::integer("usage_acked", kms->usage_acked));
    figs.push_back(Figure::integer("usage_packets", usage_packets));
    figs.push_back(Figure::integer("usage_bytes", usage_bytes));
    figs.push_back(Figure::integer("kms_requests", kms->fetches));
    figs.push_back(Figure::integer("kms_ok", kms->fetch_ok));
    figs.push_back(Figure::integer("kms_errors", kms->fetch_errors));
    figs.push_back(Figure::integer("kms_unanswered", kms->unanswered()));
    figs.push_back(Figure::integer("late_switches", kms->late_switches));
  }
  std::fprintf(stderr,
               "keycast-send: done: packets_sent=%lu bytes_sent=%lu duration_s=%.3f "
               "key_switches=%lu spis_used=%zu pps=%s\n",
               static_cast<unsigned long>(figs[0].i), static_cast<unsigned long>(figs[1].i),
               duration, static_cast<unsigned long>(switches), spis.size(),
               human_rate(duration > 0 ? figs[0].i / duration : 0).c_str());
  if (!opt.stats_json.empty()) write_file(opt.stats_json, figures_json(figs));
  port_stop(opt.port);
  if (opt.ingest_port >= 0 && opt.ingest_port != opt.port)
    port_stop(static_cast<uint16_t>(opt.ingest_port));
  return sh.failed.load() ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) { return keycast::dp::app_main("keycast-send", argc, argv, run); }

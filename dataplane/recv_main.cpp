// keycast-recv: DPDK client terminal. The main lcore runs control (keys,
// events from workers, stats, stop). Each worker lcore polls one RX queue of
// --port: parse, key lookup (lock-free table), anti-replay check, decipher in
// place, replay window update, deliver.
//
// Queues: one RX queue per worker (RSS when there are several). Replay windows
// are per SPI *and per queue*, each written by one worker only: RSS hashes on
// the IP addresses, so one sender's flow to one group always lands on one
// queue and its window sees every packet of that flow.
#include <pcap/pcap.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <sys/time.h>

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
#include <vector>

#include "common/aead.hpp"
#include "common/control_msg.hpp"
#include "common/drop_reason.hpp"
#include "common/esp.hpp"
#include "common/key_record.hpp"
#include "dataplane/app.hpp"
#include "dataplane/control_events.hpp"
#include "dataplane/key_source.hpp"
#include "dataplane/kms_key_source.hpp"
#include "dataplane/key_table.hpp"
#include "dataplane/pattern.hpp"
#include "dataplane/stats.hpp"

namespace po = boost::program_options;
using namespace keycast;
using namespace keycast::dp;

namespace {

constexpr unsigned kMaxBurst = 64;
// How many packets ahead of its decipherment a frame is fetched: enough to cover a DRAM miss
// (~100 ns) with small packets, few enough that the burst's frames still fit in L1/L2.
constexpr uint16_t kAhead = 4;
constexpr unsigned kMaxSpisSeen = 1024;
constexpr unsigned kNDrop = static_cast<unsigned>(Drop::kCount);

enum class Deliver { Verify, Null, Pcap, Port };

struct RecvOptions {
  uint16_t port = 0;
  GroupAddr group{};
  uint32_t channel = 1;
  std::string suite;
  std::string key_file;
  Deliver deliver = Deliver::Null;
  std::string deliver_pcap;
  uint16_t deliver_port = 0;
  uint32_t replay_window = 4096;
  uint64_t count = 0;
  uint64_t expect = 0;
  double duration = 0;
  double idle_exit = 0;
  double stats_interval = 1;
  std::string stats_json;
  uint32_t idle_sleep_us = 0;
  uint32_t burst = 32;
  uint32_t mbufs = 0;  // mbuf pool size (0: 8192 per worker + 4096)
  bool any_group = false;
  bool key_window = false;
  uint32_t grace_ms = 2000;
  bool use_kms = false;
  KmsOptions kms;
  bool verify_from_first = false;
};

struct alignas(64) RecvWorkerStats {
  Counter rx, packets_ok, bytes_ok, notices, deliver_fail, key_switches, spis_seen;
  Counter corrupted;
  Counter drops[kNDrop];
  Counter first_rx_tsc, last_rx_tsc;
  // TSC cycles from the start of each non-empty poll to the end of its
  // processing: the worker's cost per packet whatever the input rate (DPDK's
  // "busy cycles"; empty polls are not counted).
  Counter busy_tsc;
  uint32_t spi_list[kMaxSpisSeen];  // read after the worker stopped
};

struct Shared {
  RecvOptions opt;
  KeyTableHolder* holder = nullptr;
  ControlEvents* events = nullptr;
  std::vector<std::unique_ptr<RecvWorkerStats>> stats;
  std::vector<std::unique_ptr<DeliveryTracker>> trackers;
  std::atomic<unsigned> running{0};
  std::atomic<bool> failed{false};  // a worker stopped on an error
  const StaticKeySource* source = nullptr;  // final figures only
  const KmsKeySource* kms = nullptr;        // final figures only
};

struct WorkerArg {
  Shared* sh;
  unsigned id;
};

class RecvWorker {
 public:
  RecvWorker(Shared& sh, unsigned id)
      : sh_(sh), id_(id), q_(static_cast<uint16_t>(id)), st_(*sh.stats[id]),
        tracker_(*sh.trackers[id]), backoff_(sh.opt.idle_sleep_us) {
    report_every_ = rte_get_tsc_hz() / 100;  // unknown-SPI events: at most 100/s per worker
    if (sh.opt.deliver == Deliver::Pcap) {
      std::string path = sh.opt.deliver_pcap;
      if (id_ > 0) path += ".w" + std::to_string(id_);
      pcap_ = pcap_open_dead(DLT_EN10MB, 65535);
      dumper_ = pcap_ ? pcap_dump_open(pcap_, path.c_str()) : nullptr;
      if (!dumper_) throw std::runtime_error("--deliver pcap:" + path + ": cannot open");
    }
  }
  ~RecvWorker() {
    if (dumper_) pcap_dump_close(dumper_);
    if (pcap_) pcap_close(pcap_);
  }

  // One burst is kept in hand while the next is received: the next burst's mbuf headers and first
  // frames are fetched while this one is deciphered, so no burst starts by waiting on memory.
  // When the queue is empty the burst in hand is processed at once (no added latency when idle).
  void run() {
    KeyTableHolder& h = *sh_.holder;  // registered by control before launch
    rte_mbuf* bufs[2][kMaxBurst];
    rte_mbuf** cur = bufs[0];
    rte_mbuf** nxt = bufs[1];
    uint16_t ncur = 0;
    while (!g_stop.load(std::memory_order_relaxed)) {
      h.quiescent(id_);
      const uint64_t t0 = rte_get_tsc_cycles();
      const uint16_t n = rte_eth_rx_burst(sh_.opt.port, q_, nxt, sh_.opt.burst);
      if (n == 0 && ncur == 0) {
        if (backoff_.should_sleep()) {
          h.offline(id_);
          rte_delay_us_sleep(backoff_.sleep_us());
          h.online(id_);
        } else {
          rte_pause();
        }
        continue;
      }
      backoff_.reset();
      if (n) {
        for (uint16_t i = 0; i < n && i < 2 * kAhead; ++i) prefetch_header(nxt[i]);
        st_.rx.add(n);
        if (!st_.first_rx_tsc.get()) st_.first_rx_tsc.set(t0);
        st_.last_rx_tsc.set(t0);
      }
      if (ncur) process(h.acquire(), cur, ncur, nxt, n);
      std::swap(cur, nxt);
      ncur = n;
      st_.busy_tsc.add(rte_get_tsc_cycles() - t0);
    }
    // Drain what is in hand and already queued so the final figures include it.
    if (ncur) process(h.acquire(), cur, ncur, nullptr, 0);
    for (int i = 0; i < 8; ++i) {
      h.quiescent(id_);
      const uint16_t n = rte_eth_rx_burst(sh_.opt.port, q_, cur, sh_.opt.burst);
      if (!n) break;
      st_.rx.add(n);
      process(h.acquire(), cur, n, nullptr, 0);
    }
    if (dumper_) pcap_dump_flush(dumper_);
    h.unregister_reader(id_);
  }

 private:
  void drop(rte_mbuf* m, Drop why) {
    st_.drops[static_cast<unsigned>(why)].add();
    release(m);
  }
  // Frees at the end of the burst, in one call (the mempool put is per burst, not per packet).
  void release(rte_mbuf* m) { free_[nfree_++] = m; }
  // Mbuf fast free, as a PMD does under RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE: what a worker consumes
  // came from its RX queue direct, unshared and in one segment, so the burst goes back to its
  // pool's lcore cache in one put. rte_pktmbuf_free_bulk re-derives that per mbuf (41 instructions
  // a packet, against about 22 here with the put). Checked, not assumed: any other mbuf takes the general path.
  // Only first-line fields are read: a one-segment mbuf's next is NULL by the mbuf invariant.
  static void free_burst(rte_mbuf** ms, uint16_t n) {
    rte_mempool* const mp = ms[0]->pool;
    bool fast = true;
    for (uint16_t i = 0; i < n; ++i) {
      const rte_mbuf* m = ms[i];
      fast &= (m->pool == mp) & (rte_mbuf_refcnt_read(m) == 1) & RTE_MBUF_DIRECT(m) &
              (m->nb_segs == 1);
    }
    if (fast)
      rte_mempool_put_bulk(mp, reinterpret_cast<void**>(ms), n);
    else
      rte_pktmbuf_free_bulk(ms, n);
  }

  // The mbuf header's first cache line: all the receiver reads (buffer, lengths, segments,
  // refcount, pool). The second holds next and TX fields; next is NULL in a one-segment mbuf
  // (an mbuf invariant), so neither the parse nor free_burst needs that line, and not fetching
  // it leaves one more miss buffer for the frames.
  static void prefetch_header(const rte_mbuf* m) { rte_prefetch0(m); }
  // Every line of the frame: GCM reads all of it, the ICV last.
  static void prefetch_frame(const rte_mbuf* m) {
    const char* f = rte_pktmbuf_mtod(m, const char*);
    const char* end = f + m->data_len;
    for (const char* l = RTE_PTR_ALIGN_FLOOR(f, RTE_CACHE_LINE_SIZE); l < end; l += RTE_CACHE_LINE_SIZE)
      rte_prefetch0(l);
  }

  void post_unknown(uint32_t spi) {
    const uint64_t now = rte_get_tsc_cycles();
    if (spi == last_unknown_ && now - last_unknown_tsc_ < report_every_) return;
    last_unknown_ = spi;
    last_unknown_tsc_ = now;
    sh_.events->post(ControlEvent{EventType::UnknownSpi, sh_.opt.channel, spi, 0});
  }

  void note_spi(uint32_t spi) {
    if (spi == last_ok_spi_) return;
    const uint32_t seen = static_cast<uint32_t>(st_.spis_seen.get());
    bool known = false;
    for (uint32_t i = 0; i < seen && !known; ++i) known = st_.spi_list[i] == spi;
    if (!known) {
      if (seen < kMaxSpisSeen) {
        st_.spi_list[seen] = spi;
        st_.spis_seen.set(seen + 1);
      }
      if (last_ok_spi_ != 0) st_.key_switches.add();
    }
    last_ok_spi_ = spi;
  }

  // next: the burst received after this one (its headers already requested), whose first frames
  // are fetched once this burst's own are in flight.
  void process(const KeyTable* t, rte_mbuf** pkts, uint16_t n, rte_mbuf* const* next, uint16_t nnext) {
    rte_mbuf* out[kMaxBurst];
    uint16_t nout = 0;
    nfree_ = 0;
    // Read once per burst: the parse and the crypto store through byte pointers, which may alias
    // anything, so options read in the loop would be reloaded for every packet. Delivered
    // packets are counted per burst for the same reason (drops, rare, per packet).
    const bool check_group = !sh_.opt.any_group;
    const uint32_t group_ip = sh_.opt.group.ip;
    const uint16_t group_port = sh_.opt.group.port;
    const Deliver deliver = sh_.opt.deliver;
    uint64_t ok = 0, ok_bytes = 0;
    // The frames arrive in memory this core has not touched (a NIC's DMA leaves them in DRAM or,
    // with DDIO, in the LLC): without prefetching, each packet would wait for its misses in turn.
    // Headers 2*kAhead and frames kAhead packets before their turn (as l3fwd). For a burst that
    // run() had in hand these first requests were already made (re-requesting a line in flight
    // costs an instruction); they matter for the first burst after idle and for the drain.
    for (uint16_t i = 0; i < n && i < 2 * kAhead; ++i) prefetch_header(pkts[i]);
    for (uint16_t i = 0; i < n && i < kAhead; ++i) prefetch_frame(pkts[i]);
    for (uint16_t i = 0; i < n; ++i) {
      rte_mbuf* m = pkts[i];
      if (i + 2 * kAhead < n) prefetch_header(pkts[i + 2 * kAhead]);
      if (i + kAhead < n)
        prefetch_frame(pkts[i + kAhead]);
      else if (i + kAhead - n < nnext)
        prefetch_frame(next[i + kAhead - n]);
      if (!rte_pktmbuf_is_contiguous(m) && rte_pktmbuf_linearize(m) != 0) {
        drop(m, Drop::Truncated);
        continue;
      }
      uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
      esp::Parsed p;
      Drop d = esp::parse(f, m->data_len, p);
      if (d != Drop::None) {
        drop(m, d);
        continue;
      }
      if (check_group && p.dst_ip != group_ip) {
        drop(m, Drop::WrongGroup);
        continue;
      }
      KeySlot* key = t ? cache_.lookup(*t, p.spi) : nullptr;
      if (!key) {
        post_unknown(p.spi);
        drop(m, Drop::UnknownSpi);
        continue;
      }
      ReplayWindow& win = key->replay[q_].window;
      if (!win.check(p.seq)) {  // before paying for the crypto
        drop(m, Drop::Replay);
        continue;
      }
      if (!aead_.open(key->key, esp::open_op(p))) {
        drop(m, Drop::AuthFail);
        continue;
      }
      if (!win.update(p.seq)) {
        drop(m, Drop::Replay);
        continue;
      }
      esp::Opened o;
      d = esp::finish(p, o);
      if (d != Drop::None) {
        drop(m, d);
        continue;
      }
      if (o.next_header == esp::kNextControl) {
        KeyChangeNotice nt;
        if (decode_notice(o.inner, o.inner_len, nt) != ControlError::Ok) {
          drop(m, Drop::BadControl);
          continue;
        }
        st_.notices.add();
        sh_.events->post(ControlEvent{EventType::Notice, nt.channel, nt.next_spi, nt.ms_to_switch});
        release(m);
        continue;
      }
      if (check_group && o.dst_port != group_port) {
        drop(m, Drop::WrongGroup);
        continue;
      }
      ++ok;
      ok_bytes += o.payload_len;
      note_spi(p.spi);
      switch (deliver) {
        case Deliver::Verify: {
          uint64_t idx = 0;
          if (pattern_check(o.payload, o.payload_len, idx) == PatternResult::Ok)
            tracker_.record(idx);
          else
            st_.corrupted.add();
          release(m);
          break;
        }
        case Deliver::Null:
          release(m);
          break;
        case Deliver::Pcap:
        case Deliver::Port:
          to_plain(m, p, o);
          if (deliver == Deliver::Pcap) {
            pcap_pkthdr hdr{};
            gettimeofday(&hdr.ts, nullptr);
            hdr.caplen = hdr.len = m->data_len;
            pcap_dump(reinterpret_cast<u_char*>(dumper_), &hdr, rte_pktmbuf_mtod(m, u_char*));
            release(m);
          } else {
            out[nout++] = m;
          }
          break;
      }
    }
    st_.packets_ok.add(ok);
    st_.bytes_ok.add(ok_bytes);
    if (nout) {
      const uint16_t sent = rte_eth_tx_burst(sh_.opt.deliver_port, q_, out, nout);
      if (sent < nout) {
        st_.deliver_fail.add(nout - sent);
        rte_pktmbuf_free_bulk(out + sent, nout - sent);
      }
    }
    if (nfree_) free_burst(free_, nfree_);
  }

  // Turns the deciphered ESP frame into the plaintext Ethernet/IPv4/UDP frame
  // in place: the L2/L3 headers move forward over the ESP header and IV.
  static void to_plain(rte_mbuf* m, const esp::Parsed& p, const esp::Opened& o) {
    uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
    const std::size_t l23 = static_cast<std::size_t>(o.inner - f) - esp::kEspHdrLen - kIvLen;
    const uint16_t shift = esp::kEspHdrLen + kIvLen;
    std::memmove(f + shift, f, l23);
    rte_pktmbuf_adj(m, shift);
    f = rte_pktmbuf_mtod(m, uint8_t*);
    uint8_t* ip = f + p.ip_offset;
    const std::size_t ihl = (ip[0] & 0x0f) * 4u;
    const uint16_t total = static_cast<uint16_t>(ihl + o.inner_len);
    ip[2] = static_cast<uint8_t>(total >> 8);
    ip[3] = static_cast<uint8_t>(total);
    ip[9] = 17;
    ip[10] = ip[11] = 0;
    uint32_t sum = 0;
    for (std::size_t k = 0; k < ihl; k += 2) sum += uint32_t(ip[k]) << 8 | ip[k + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    sum = ~sum & 0xffff;
    ip[10] = static_cast<uint8_t>(sum >> 8);
    ip[11] = static_cast<uint8_t>(sum);
    rte_pktmbuf_trim(m, static_cast<uint16_t>(m->data_len - (p.ip_offset + total)));
  }

  Shared& sh_;
  unsigned id_;
  uint16_t q_;
  RecvWorkerStats& st_;
  DeliveryTracker& tracker_;
  IdleBackoff backoff_;
  Aead aead_;
  SpiCache cache_;  // last SPI lookup
  rte_mbuf* free_[kMaxBurst];
  uint16_t nfree_ = 0;
  uint32_t last_ok_spi_ = 0;
  uint32_t last_unknown_ = 0;
  uint64_t last_unknown_tsc_ = 0, report_every_ = 0;
  pcap_t* pcap_ = nullptr;
  pcap_dumper_t* dumper_ = nullptr;
};

int worker_main(void* p) {
  auto* a = static_cast<WorkerArg*>(p);
  try {
    auto w = std::make_unique<RecvWorker>(*a->sh, a->id);
    w->run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keycast-recv: worker %u: %s\n", a->id, e.what());
    a->sh->holder->unregister_reader(a->id);  // never hold up reclamation
    a->sh->failed.store(true);
    g_stop.store(true);
  }
  a->sh->running.fetch_sub(1);
  return 0;
}

RecvOptions parse_options(int argc, char** argv) {
  RecvOptions o;
  std::string group = "239.1.1.1:5000", deliver = "null";
  std::vector<std::string> kms;
  std::string tls_cert, tls_key, tls_ca, tls_crl;
  uint32_t rotate_ms = 0;
  po::options_description d("keycast-recv options (after EAL args and --)");
  d.add_options()
      ("help,h", "this help")
      ("port", po::value<uint16_t>(&o.port)->default_value(0), "RX port")
      ("group", po::value<std::string>(&group)->default_value(group), "group A.B.C.D:PORT to accept")
      ("any-group", po::bool_switch(&o.any_group), "accept every destination (no group/port check)")
      ("channel", po::value<uint32_t>(&o.channel)->default_value(1), "channel id")
      ("suite", po::value<std::string>(&o.suite), "aes128gcm|aes256gcm (checked against the keys)")
      ("key-file", po::value<std::string>(&o.key_file), "static keys, one per line: SPI HEXKEY (labs only)")
      ("rotate-ms", po::value<uint32_t>(&rotate_ms)->default_value(0), "accepted for symmetry with the sender (not needed by the receiver)")
      ("key-window", po::bool_switch(&o.key_window), "hold only previous/current/next key-file keys, installing the next on a notice or an unknown SPI (as a KMS client does)")
      ("grace-ms", po::value<uint32_t>(&o.grace_ms)->default_value(2000), "--key-window, --kms: keep the previous key this long after a switch")
      ("p2-ms", po::value<int64_t>(&o.kms.p2_ms)->default_value(0), "--kms: fetch the next key this long before the switch (0: a sixth of the lifetime, -1: never, only on the notice or an unknown SPI)")
      ("kms", po::value<std::vector<std::string>>(&kms)->composing(), "HOST:PORT[,HOST:PORT...] key management servers")
      ("tls-cert", po::value<std::string>(&tls_cert), "client certificate (with --kms)")
      ("tls-key", po::value<std::string>(&tls_key), "client key (with --kms)")
      ("tls-ca", po::value<std::string>(&tls_ca), "CA (with --kms)")
      ("tls-crl", po::value<std::string>(&tls_crl), "CA's PEM CRL: refuse a revoked key server (with --kms)")
      ("deliver", po::value<std::string>(&deliver)->default_value(deliver), "verify|null|pcap:PATH|port:N")
      ("expect", po::value<uint64_t>(&o.expect)->default_value(0), "verify: packets 0..N-1 are expected (tail losses count as lost)")
      ("verify-from-first", po::bool_switch(&o.verify_from_first), "verify: count losses from the first packet received (a receiver that joins mid-stream)")
      ("replay-window", po::value<uint32_t>(&o.replay_window)->default_value(4096), "anti-replay window, packets")
      ("count", po::value<uint64_t>(&o.count)->default_value(0), "stop after N delivered packets (0 = no limit)")
      ("duration", po::value<double>(&o.duration)->default_value(0), "stop after S seconds (0 = no limit)")
      ("idle-exit", po::value<double>(&o.idle_exit)->default_value(0), "stop after S seconds without a received packet (0 = never)")
      ("stats-interval", po::value<double>(&o.stats_interval)->default_value(1), "periodic stats every S seconds (0 = off)")
      ("stats-json", po::value<std::string>(&o.stats_json), "write final figures as JSON to PATH")
      ("idle-sleep-us", po::value<uint32_t>(&o.idle_sleep_us)->default_value(0), "sleep US when idle (0 = busy poll)")
      ("burst", po::value<uint32_t>(&o.burst)->default_value(32), "packets per RX burst (1..64)")
      ("mbufs", po::value<uint32_t>(&o.mbufs)->default_value(0), "mbuf pool size (0: 8192 per worker + 4096; a net_pcap infinite_rx capture needs one per frame)");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(d).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: keycast-recv [EAL args] -- [options]\n" << d;
      std::exit(0);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  o.group = parse_group(group);
  if (!kms.empty()) {
    const int64_t p2 = o.kms.p2_ms;
    o.kms = kms_options(kms, tls_cert, tls_key, tls_ca, tls_crl, o.key_file, o.channel, false);
    if (p2 < -1) throw UsageError("--p2-ms: must be >= -1");
    o.kms.p2_ms = p2;
    o.kms.grace_ms = o.grace_ms;
    o.use_kms = true;
  } else if (vm.count("tls-cert") || vm.count("tls-key") || vm.count("tls-ca") || vm.count("tls-crl")) {
    throw UsageError("--tls-cert/--tls-key/--tls-ca/--tls-crl need --kms");
  }
  if (o.key_file.empty() && !o.use_kms) throw UsageError("one of --key-file or --kms is required");
  if (!o.suite.empty() && !parse_suite(o.suite))
    throw UsageError("--suite: '" + o.suite + "' is not aes128gcm or aes256gcm");
  if (deliver == "verify") o.deliver = Deliver::Verify;
  else if (deliver == "null") o.deliver = Deliver::Null;
  else if (deliver.rfind("pcap:", 0) == 0 && deliver.size() > 5) {
    o.deliver = Deliver::Pcap;
    o.deliver_pcap = deliver.substr(5);
  } else if (deliver.rfind("port:", 0) == 0 && deliver.size() > 5) {
    o.deliver = Deliver::Port;
    char* end = nullptr;
    unsigned long v = std::strtoul(deliver.c_str() + 5, &end, 10);
    if (*end || v > 65535) throw UsageError("--deliver: bad port in '" + deliver + "'");
    o.deliver_port = static_cast<uint16_t>(v);
  } else {
    throw UsageError("--deliver: '" + deliver + "' is not verify, null, pcap:PATH or port:N");
  }
  if (o.replay_window < 1 || o.replay_window > (1u << 20))
    throw UsageError("--replay-window: must be in 1..1048576");
  if (o.burst == 0 || o.burst > kMaxBurst) throw UsageError("--burst: must be in 1..64");
  if (o.duration < 0 || o.idle_exit < 0 || o.stats_interval < 0)
    throw UsageError("--duration, --idle-exit, --stats-interval: must be >= 0");
  return o;
}

struct Totals {
  uint64_t rx = 0, ok = 0, bytes = 0, notices = 0, deliver_fail = 0, switches = 0, corrupted = 0;
  uint64_t drops[kNDrop] = {};
  uint64_t malformed = 0, last_rx_tsc = 0, first_rx_tsc = 0, busy_tsc = 0;
};

Totals totals(Shared& sh) {
  Totals t;
  for (auto& s : sh.stats) {
    t.rx += s->rx.get();
    t.ok += s->packets_ok.get();
    t.bytes += s->bytes_ok.get();
    t.notices += s->notices.get();
    t.deliver_fail += s->deliver_fail.get();
    t.switches = std::max(t.switches, s->key_switches.get());  // queues see the same switches
    t.corrupted += s->corrupted.get();
    t.busy_tsc += s->busy_tsc.get();
    t.last_rx_tsc = std::max(t.last_rx_tsc, s->last_rx_tsc.get());
    if (const uint64_t f = s->first_rx_tsc.get(); f && (!t.first_rx_tsc || f < t.first_rx_tsc))
      t.first_rx_tsc = f;
    for (unsigned r = 0; r < kNDrop; ++r) t.drops[r] += s->drops[r].get();
  }
  for (unsigned r = 0; r < kNDrop; ++r)
    if (drop_is_malformed(static_cast<Drop>(r))) t.malformed += t.drops[r];
  return t;
}

std::string drops_line(const Totals& t) {
  std::string s;
  for (unsigned r = 1; r < kNDrop; ++r)
    if (t.drops[r]) s += " " + std::string(drop_name(static_cast<Drop>(r))) + "=" + std::to_string(t.drops[r]);
  return s.empty() ? " none" : s;
}

Figures receiver_figures(Shared& sh, double duration, bool final_figs) {
  Totals t = totals(sh);
  uint64_t lost = 0, dup = 0, late = 0;
  std::vector<uint64_t> spis;
  if (final_figs) {
    for (auto& tr : sh.trackers) {
      lost += tr->lost;
      dup += tr->duplicated;
      late += tr->late;
    }
    for (auto& s : sh.stats)
      for (uint64_t i = 0; i < s->spis_seen.get(); ++i)
        if (std::find(spis.begin(), spis.end(), s->spi_list[i]) == spis.end())
          spis.push_back(s->spi_list[i]);
  }
  uint64_t spis_seen = final_figs ? spis.size() : 0;
  if (!final_figs)
    for (auto& s : sh.stats) spis_seen = std::max(spis_seen, s->spis_seen.get());
  Figures f;
  f.push_back(Figure::integer("packets_ok", t.ok));
  f.push_back(Figure::integer("bytes_ok", t.bytes));
  f.push_back(Figure::integer("auth_fail", t.drops[static_cast<unsigned>(Drop::AuthFail)]));
  f.push_back(Figure::integer("unknown_spi", t.drops[static_cast<unsigned>(Drop::UnknownSpi)]));
  f.push_back(Figure::integer("replay", t.drops[static_cast<unsigned>(Drop::Replay)]));
  f.push_back(Figure::integer("malformed", t.malformed));
  f.push_back(Figure::integer("lost", lost));
  f.push_back(Figure::integer("duplicated", dup));
  f.push_back(Figure::integer("corrupted", t.corrupted));
  f.push_back(Figure::integer("late", late));
  f.push_back(Figure::integer("key_switches", t.switches));
  f.push_back(Figure::integer("spis_seen", spis_seen));
  if (final_figs) f.push_back(Figure::ints("spi_list", spis));
  f.push_back(Figure::integer("rx_packets", t.rx));
  f.push_back(Figure::integer("notices", t.notices));
  f.push_back(Figure::integer("deliver_failed", t.deliver_fail));
  f.push_back(Figure::integer("events_dropped", sh.events->dropped()));
  if (final_figs && sh.source) {
    f.push_back(Figure::integer("unknown_spi_events", sh.source->unknown_spi_events));
    f.push_back(Figure::integer("notice_events", sh.source->notice_events));
    f.push_back(Figure::integer("keys_fetched", sh.source->fetched));
  }
  if (final_figs && sh.kms) {
    f.push_back(Figure::integer("kms_requests", sh.kms->fetches));
    f.push_back(Figure::integer("kms_ok", sh.kms->fetch_ok));
    f.push_back(Figure::integer("kms_errors", sh.kms->fetch_errors));
    f.push_back(Figure::integer("kms_unanswered", sh.kms->unanswered()));
    f.push_back(Figure::integer("kms_event_fetches", sh.kms->event_fetches));
  }
  f.push_back(Figure::real("duration_s", duration));
  f.push_back(Figure::real("pps", duration > 0 ? t.ok / duration : 0));
  // From the first to the last received burst: the rate while traffic flowed.
  const double active = t.last_rx_tsc > t.first_rx_tsc ? tsc_seconds(t.last_rx_tsc - t.first_rx_tsc) : 0;
  f.push_back(Figure::real("active_s", active));
  f.push_back(Figure::real("active_pps", active > 0 ? t.ok / active : 0));
  f.push_back(Figure::real("busy_s", tsc_seconds(t.busy_tsc)));
  f.push_back(Figure::real("busy_cycles_per_packet", t.rx ? double(t.busy_tsc) / double(t.rx) : 0));
  for (unsigned r = 1; r < kNDrop; ++r)
    f.push_back(Figure::integer("drops." + std::string(drop_name(static_cast<Drop>(r))), t.drops[r]));
  return f;
}

int run(int argc, char** argv) {
  RecvOptions opt = parse_options(argc, argv);
  check_port(opt.port, "--port");
  if (opt.deliver == Deliver::Port) check_port(opt.deliver_port, "--deliver port:");

  std::vector<KeyRecord> keys;
  if (!opt.use_kms) keys = load_static_keys(opt.key_file, opt.channel, opt.suite, "keycast-recv");

  const auto workers = worker_lcores();
  if (workers.empty()) throw UsageError("EAL: need at least 2 lcores (main = control, others = workers), e.g. -l 0,1");
  const unsigned nw = static_cast<unsigned>(workers.size());
  if (opt.deliver == Deliver::Verify && nw > 1)
    std::fprintf(stderr, "keycast-recv: note: --deliver verify counts per RX queue; exact when one "
                         "queue carries the stream (RSS keeps a flow on one queue)\n");

  Shared sh;
  sh.opt = opt;
  rte_mempool* pool = make_pool("recv_pool", opt.mbufs ? opt.mbufs : 8192 * nw + 4096);
  port_start(PortSetup{opt.port, static_cast<uint16_t>(nw), static_cast<uint16_t>(nw), 1024, 1024, pool});
  if (opt.deliver == Deliver::Port && opt.deliver_port != opt.port)
    port_start(PortSetup{opt.deliver_port, 1, static_cast<uint16_t>(nw), 1024, 1024, pool});

  KeyTableHolder holder(nw);
  ControlEvents events(1024);
  sh.holder = &holder;
  sh.events = &events;
  KeyControl ctl(holder, opt.channel, SlotParams{nw, opt.replay_window, 1});
  std::unique_ptr<KeySource> source_owner;
  KmsKeySource* kms_source = nullptr;
  if (opt.use_kms) {
    auto k = std::make_unique<KmsKeySource>(opt.kms);
    sh.kms = kms_source = k.get();
    source_owner = std::move(k);
  } else {
    auto st = std::make_unique<StaticKeySource>(keys, StaticKeySource::Role::Receiver, 0, 0,
                                                opt.key_window, opt.grace_ms);
    sh.source = st.get();
    source_owner = std::move(st);
  }
  KeySource& source = *source_owner;
  source.start(ctl, MonoClock::now());
  for (unsigned i = 0; i < nw; ++i) {
    sh.stats.push_back(std::make_unique<RecvWorkerStats>());
    // With --expect the whole range fits in the bitmap (up to 2^26 packets,
    // 8 MB), so any reordering is counted exactly; otherwise a 2^20 window.
    uint32_t bits = 1u << 20;
    while (opt.expect > bits && bits < (1u << 26)) bits <<= 1;
    sh.trackers.push_back(std::make_unique<DeliveryTracker>(bits));
    sh.trackers.back()->from_first = opt.verify_from_first;
  }

  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t t_start = rte_get_tsc_cycles();
  telemetry_register("/keycast/stats", [&]() {
    return receiver_figures(sh, tsc_seconds(rte_get_tsc_cycles() - t_start), false);
  }, "keycast-recv counters. No parameters");

  std::vector<WorkerArg> args(nw);
  sh.running = nw;
  for (unsigned i = 0; i < nw; ++i) holder.register_reader(i);
  for (unsigned i = 0; i < nw; ++i) {
    args[i] = WorkerArg{&sh, i};
    if (int rc = rte_eal_remote_launch(worker_main, &args[i], workers[i]); rc != 0)
      throw std::runtime_error("cannot launch worker on lcore " + std::to_string(workers[i]));
  }

  uint64_t last_stats = t_start, last_ok = 0, last_bytes = 0;
  const uint64_t stats_every = static_cast<uint64_t>(opt.stats_interval * hz);
  const uint64_t stop_at = opt.duration > 0 ? t_start + static_cast<uint64_t>(opt.duration * hz) : 0;
  const uint64_t idle_ticks = static_cast<uint64_t>(opt.idle_exit * hz);
  ControlEvent ev[64];
  while (!g_stop.load(std::memory_order_relaxed)) {
    const uint64_t now = rte_get_tsc_cycles();
    for (unsigned n; (n = events.drain(ev, 64)) > 0;)
      for (unsigned i = 0; i < n; ++i) source.on_event(ctl, ev[i]);
    source.poll(ctl, MonoClock::now());
    holder.reclaim();
    if (stop_at && now >= stop_at) break;
    if (sh.running.load() == 0) break;
    Totals t = totals(sh);
    if (opt.count && t.ok >= opt.count) break;
    if (idle_ticks) {
      const uint64_t last = t.last_rx_tsc ? t.last_rx_tsc : t_start;
      if (now > last && now - last >= idle_ticks) {
        std::fprintf(stderr, "keycast-recv: idle for %.1fs, stopping\n", opt.idle_exit);
        break;
      }
    }
    if (stats_every && now - last_stats >= stats_every) {
      const double dt = tsc_seconds(now - last_stats);
      std::fprintf(stderr,
                   "keycast-recv: t=%.1fs ok=%lu pps=%s Gbps=%.3f spi=%u notices=%lu drops:%s\n",
                   tsc_seconds(now - t_start), static_cast<unsigned long>(t.ok),
                   human_rate((t.ok - last_ok) / dt).c_str(), (t.bytes - last_bytes) * 8 / dt / 1e9,
                   ctl.current_spi(), static_cast<unsigned long>(t.notices), drops_line(t).c_str());
      last_stats = now;
      last_ok = t.ok;
      last_bytes = t.bytes;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  g_stop.store(true);
  telemetry_detach("/keycast/stats");
  rte_eal_mp_wait_lcore();
  // The workers' last events: the static source counts them; a KMS source is
  // not given them, as they could only make billed requests for keys that no
  // packet will use now. Answers to requests still on their way decide what
  // the key server billed: wait a little for them so kms_ok matches the bill.
  if (kms_source)
    kms_source->settle(std::chrono::milliseconds(1000));
  else
    for (unsigned n; (n = events.drain(ev, 64)) > 0;)
      for (unsigned i = 0; i < n; ++i) source.on_event(ctl, ev[i]);
  const double duration = tsc_seconds(rte_get_tsc_cycles() - t_start);
  holder.synchronize();
  // --expect applies to the queue that carried the stream (the first one
  // that received anything, else queue 0).
  std::size_t carrier = 0;
  for (std::size_t i = 0; i < sh.trackers.size(); ++i)
    if (sh.trackers[i]->received) {
      carrier = i;
      break;
    }
  for (std::size_t i = 0; i < sh.trackers.size(); ++i)
    sh.trackers[i]->finish(i == carrier ? opt.expect : 0);

  auto figs = receiver_figures(sh, duration, true);
  Totals t = totals(sh);
  std::fprintf(stderr,
               "keycast-recv: done: packets_ok=%lu bytes_ok=%lu lost=%lu duplicated=%lu "
               "corrupted=%lu key_switches=%lu spis_seen=%lu drops:%s\n",
               static_cast<unsigned long>(figs[0].i), static_cast<unsigned long>(figs[1].i),
               static_cast<unsigned long>(figs[6].i), static_cast<unsigned long>(figs[7].i),
               static_cast<unsigned long>(figs[8].i), static_cast<unsigned long>(figs[10].i),
               static_cast<unsigned long>(figs[11].i), drops_line(t).c_str());
  if (!opt.stats_json.empty()) write_file(opt.stats_json, figures_json(figs));
  port_stop(opt.port);
  if (opt.deliver == Deliver::Port && opt.deliver_port != opt.port) port_stop(opt.deliver_port);
  return sh.failed.load() ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) { return keycast::dp::app_main("keycast-recv", argc, argv, run); }

#include "dataplane/tx_worker.hpp"

#include <rte_cycles.h>
#include <rte_ethdev.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "common/control_msg.hpp"
#include "dataplane/pattern.hpp"

namespace keycast::dp {

namespace {

// Tags the packets for the port's VLAN, if any, and transmits all n
// (retrying while the queue is full); on stop frees what is left. Returns how
// many were sent.
uint16_t tx_all(const TxConfig& cfg, uint16_t q, rte_mbuf** pkts, uint16_t n, SendWorkerStats& st) {
  const uint16_t port = cfg.port;
  if (cfg.vlan.on) {
    const uint16_t kept = vlan_tag_burst(pkts, n, cfg.vlan);
    st.tx_dropped.add(n - kept);
    n = kept;
  }
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

// Bursts a worker makes between two table loads (quiescent states): enough to
// visit many channels per load, few enough that a key switch reaches every
// channel within a few bursts' time.
constexpr unsigned kBurstsPerRound = 16;

}  // namespace

SendWorker::SendWorker(TxShared& sh, unsigned id, unsigned nworkers)
    : sh_(sh), id_(id), pool_(id < sh.worker_pools.size() ? sh.worker_pools[id] : sh.pool),
      q_(static_cast<uint16_t>(id)), sole_worker_(nworkers == 1),
      st_(*sh.stats[id]), backoff_(sh.cfg.idle_sleep_us) {
  const uint64_t hz = rte_get_tsc_hz();
  const std::size_t nch = sh.cfg.channels.size();
  for (const auto& c : sh.cfg.channels)
    pacers_.emplace_back(Pacer::share(c.rate, nworkers, id), hz, sh.cfg.burst, rte_get_tsc_cycles());
  done_.assign(nch, 0);
  last_notice_gen_.assign(nch, 0);
  last_notice_tsc_.assign(nch, 0);
  notice_every_ = hz / 1000 * sh.cfg.notice_interval_ms;
  // Generator plaintext: the ciphertext region of a frame built once per
  // payload size (UDP header, pattern for index 0, ESP trailer); per packet
  // only the index changes, per burst the UDP ports (the channel's).
  if (sh.cfg.ingest_port < 0)
    for (uint32_t plen : sh.cfg.payload_sizes) {
      auto pl = std::make_unique<Plain>();
      std::vector<uint8_t> frame(esp::frame_len(plen) + 8);
      pattern_fill(frame.data() + esp::kPayloadOffset, plen, 0);
      AeadOp op{};
      uint8_t aad[esp::kAadLen];
      if (esp::prepare(sh.cfg.channels[0].tmpl, 0, 0, esp::kNextUdp, frame.data(), esp::kUdpLen + plen,
                       frame.size(), aad, op) == 0 ||
          op.len > sizeof pl->b[0])
        throw std::runtime_error("payload size does not fit a frame");
      for (auto& b : pl->b) std::memcpy(b, frame.data() + esp::kCipherOffset, op.len);
      pl->len = op.len;
      plain_.push_back(std::move(pl));
    }
}

void SendWorker::run() {
  KeyTableHolder& h = *sh_.holder;  // registered by control before launch
  // Wait for the start time (lets a test attach TAPs to a bridge first).
  while (!g_stop.load(std::memory_order_relaxed) &&
         rte_get_tsc_cycles() < sh_.start_tsc.load(std::memory_order_relaxed)) {
    h.quiescent(id_);
    rte_delay_us_sleep(1000);
  }
  for (auto& p : pacers_) p = Pacer(p.rate(), rte_get_tsc_hz(), sh_.cfg.burst, rte_get_tsc_cycles());
  const bool ingest = sh_.cfg.ingest_port >= 0;
  if (ingest && id_ != 0) {  // the ingest port has one RX queue, polled by worker 0
    h.unregister_reader(id_);
    return;
  }
  const uint32_t nch = static_cast<uint32_t>(sh_.cfg.channels.size());
  const unsigned round = std::min<unsigned>(nch, kBurstsPerRound);
  bool done = false;
  while (!done && !g_stop.load(std::memory_order_relaxed)) {
    h.quiescent(id_);
    const KeyTable* t = h.acquire();
    if (id_ == 0 && !t->noticing.empty()) notices(t);
    unsigned n = 0;
    if (ingest) {
      n = ingest_burst(t, done);
    } else {
      for (unsigned b = 0; b < round && !done; ++b) {
        const uint32_t ci = rr_;
        rr_ = rr_ + 1 == nch ? 0 : rr_ + 1;
        if (done_[ci]) continue;
        bool ch_done = false;
        n += generate_burst(t, ci, ch_done);
        if (ch_done) {
          done_[ci] = 1;
          done = ++ndone_ == nch;
        }
      }
    }
    if (done) break;
    if (n == 0) idle();
    else backoff_.reset();
  }
  h.unregister_reader(id_);
}

void SendWorker::idle() {
  if (backoff_.should_sleep()) {
    uint32_t us = backoff_.sleep_us();
    const uint64_t hz = rte_get_tsc_hz();
    const uint64_t now = rte_get_tsc_cycles();
    for (auto& p : pacers_) {
      if (p.unpaced()) continue;
      const uint64_t wait_us = p.ticks_until_next(now) * 1000000 / hz;
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

// The indices are global over the workers, so they share one counter per
// channel; a lone worker owns it and needs no locked add (which would wait
// for the store buffer to drain).
uint64_t SendWorker::take_indices(uint32_t ci, uint32_t n) noexcept {
  std::atomic<uint64_t>& next = sh_.next_index[ci].next;
  if (sole_worker_) {
    const uint64_t first = next.load(std::memory_order_relaxed);
    next.store(first + n, std::memory_order_relaxed);
    return first;
  }
  return next.fetch_add(n, std::memory_order_relaxed);
}

unsigned SendWorker::generate_burst(const KeyTable* t, uint32_t ci, bool& done) {
  KeySlot* key = t->at(ci).current;
  if (!key) return 0;
  const TxChannel& ch = sh_.cfg.channels[ci];
  uint32_t want = pacers_[ci].take(rte_get_tsc_cycles(), sh_.cfg.burst);
  if (want == 0) return 0;
  rte_mbuf* pkts[kMaxBurst];
  if (rte_pktmbuf_alloc_bulk(pool_, pkts, want) != 0) {
    st_.alloc_fail.add();
    return 0;
  }
  uint32_t n = want;
  const uint64_t first = take_indices(ci, want);
  if (sh_.cfg.count) {
    if (first >= sh_.cfg.count) {
      rte_pktmbuf_free_bulk(pkts, want);
      done = true;
      return 0;
    }
    if (first + n > sh_.cfg.count) {
      const uint32_t keep = static_cast<uint32_t>(sh_.cfg.count - first);
      rte_pktmbuf_free_bulk(pkts + keep, n - keep);
      n = keep;
    }
  }
  Plain& pl = *plain_[ch.plain_slot];
  const uint64_t seq0 = key->reserve(id_, n);
  const uint32_t plen = ch.payload_size;
  uint64_t wire = 0;
  // Headers and AADs of the whole burst first: their stores have drained
  // to L1 before the seals load them (a wide load over a narrower store
  // still in the store buffer stalls on forwarding).
  for (uint32_t i = 0; i < n; ++i) {
    uint8_t* f = rte_pktmbuf_mtod(pkts[i], uint8_t*);
    const uint16_t cap = static_cast<uint16_t>(rte_pktmbuf_tailroom(pkts[i]));
    // Outer headers only: the UDP header and trailer are in the plaintext.
    const std::size_t len = esp::prepare_outer(ch.tmpl, key->spi, seq0 + i, f, pl.len, cap,
                                               aad_[i], ops_[i]);
    pkts[i]->data_len = static_cast<uint16_t>(len);
    pkts[i]->pkt_len = static_cast<uint32_t>(len);
    wire += len;
  }
  // The plaintext (UDP header, pattern, trailer) is the same for every
  // packet of a payload size but the UDP ports and the pattern's 16-byte
  // index: kept once per worker and enciphered out of place straight into
  // the frame (no fill pass). Two copies, so packet i+1's index is written
  // while packet i is sealed, for the same store-forwarding reason.
  for (auto& b : pl.b) {
    std::memcpy(b, &ch.tmpl.src_port_be, 2);
    std::memcpy(b + 2, &ch.tmpl.dst_port_be, 2);
  }
  pattern_set_index(pl.b[0] + esp::kUdpLen, first);
  for (uint32_t i = 0; i < n; ++i) {
    if (i + 1 < n) pattern_set_index(pl.b[(i + 1) & 1] + esp::kUdpLen, first + i + 1);
    aead_.seal_from(key->key, ops_[i], pl.b[i & 1]);
  }
  const uint16_t sent = tx_all(sh_.cfg, q_, pkts, static_cast<uint16_t>(n), st_);
  count_sent(ci, key, n, sent, uint64_t(n) * plen, wire);
  return n;
}

// n packets of channel ci went to the TX queue, sent of them went out;
// payload and wire are the bytes of all n.
void SendWorker::count_sent(uint32_t ci, KeySlot* key, uint16_t n, uint16_t sent, uint64_t payload,
                            uint64_t wire) noexcept {
  if (sh_.cfg.vlan.on) wire += uint64_t(kVlanHdrLen) * n;
  const uint64_t bytes = sent == n ? payload : payload * sent / n;
  st_.packets.add(sent);
  st_.bytes.add(bytes);
  TxChannelStats& cs = st_.chan[ci];
  cs.packets.add(sent);
  cs.bytes.add(bytes);
  key->count_sent(id_, sent, bytes);
  st_.wire_bytes.add(sent == n ? wire : wire * sent / n);
  if (key->spi != cs.last_spi && sent) note_key(ci, key->spi);
}

// Plaintext IPv4/UDP frames from --ingest-port: the destination group:port
// picks the channel; each is enciphered in place (the UDP header and payload
// stay where they are, byte for byte; headers are prepended into the
// headroom and the trailer appended). A burst is sealed one channel at a time.
unsigned SendWorker::ingest_burst(const KeyTable* t, bool& done) {
  rte_mbuf* in[kMaxBurst];
  uint16_t want = static_cast<uint16_t>(sh_.cfg.burst);
  if (sh_.cfg.count) {  // --count: stop after that many ingested frames
    const uint64_t seen = st_.packets.get() + st_.tx_dropped.get() + st_.ingest_bad.get() +
                          st_.ingest_no_channel.get();
    if (seen >= sh_.cfg.count) {
      done = true;
      return 0;
    }
    want = static_cast<uint16_t>(std::min<uint64_t>(want, sh_.cfg.count - seen));
  }
  Pacer& pacer = pacers_[0];
  want = static_cast<uint16_t>(pacer.take(rte_get_tsc_cycles(), want));
  if (want == 0) return 0;
  const uint16_t got = rte_eth_rx_burst(static_cast<uint16_t>(sh_.cfg.ingest_port), 0, in, want);
  if (got < want && !pacer.unpaced()) pacer.refund(want - got);
  if (got == 0) return 0;
  st_.ingest_rx.add(got);
  rte_mbuf* ok[kMaxBurst];
  uint32_t chan[kMaxBurst];
  uint16_t nok = 0;
  for (uint16_t i = 0; i < got; ++i) {
    rte_mbuf* m = in[i];
    esp::Datagram d{};
    // A feed may arrive tagged (an encoder on a VLAN): the tag goes, the
    // datagram's group:port picks the channel whatever VLAN it came on.
    if (m->data_len >= RTE_ETHER_HDR_LEN + kVlanHdrLen) rte_vlan_strip(m);
    if (!rte_pktmbuf_is_contiguous(m) ||
        !esp::parse_datagram(rte_pktmbuf_mtod(m, const uint8_t*), m->data_len, d)) {
      st_.ingest_bad.add();
      rte_pktmbuf_free(m);
      continue;
    }
    const uint32_t ci = sh_.cfg.groups.find(d.dst_ip);
    if (ci == GroupIndex::kNone || sh_.cfg.channels[ci].group_port != d.dst_port ||
        !t->at(ci).current) {
      st_.ingest_no_channel.add();
      rte_pktmbuf_free(m);
      continue;
    }
    // Move the frame start so the UDP header lands at kCipherOffset, drop
    // Ethernet padding, make room for the trailer.
    const int delta = int(esp::kCipherOffset) - int(d.udp_offset);
    bool fits = delta > 0 ? rte_pktmbuf_prepend(m, static_cast<uint16_t>(delta)) != nullptr
                          : delta < 0 ? rte_pktmbuf_adj(m, static_cast<uint16_t>(-delta)) != nullptr
                                      : true;
    if (fits) {
      rte_pktmbuf_trim(m, static_cast<uint16_t>(m->data_len - (esp::kCipherOffset + d.udp_len)));
      fits = rte_pktmbuf_append(m, static_cast<uint16_t>(esp::trailer_len(d.udp_len))) != nullptr;
    }
    if (fits)  // it will leave from the channel's source: keep its checksum valid
      esp::udp_checksum_new_source(rte_pktmbuf_mtod(m, uint8_t*) + esp::kCipherOffset, d.src_ip,
                                   esp::template_source(sh_.cfg.channels[ci].tmpl));
    if (!fits) {
      st_.ingest_bad.add();
      rte_pktmbuf_free(m);
      continue;
    }
    ok[nok] = m;
    chan[nok] = ci;
    ++nok;
  }
  // One channel at a time, in order of first appearance: a datagram stream's
  // order is kept within its channel.
  rte_mbuf* out[kMaxBurst];
  for (uint16_t start = 0; start < nok;) {
    const uint32_t ci = chan[start];
    uint16_t n = 0;
    uint16_t rest = 0;
    for (uint16_t i = start; i < nok; ++i) {
      if (chan[i] == ci) {
        out[n++] = ok[i];
      } else {
        ok[start + rest] = ok[i];  // keep the others, in order, for the next pass
        chan[start + rest] = chan[i];
        ++rest;
      }
    }
    nok = static_cast<uint16_t>(start + rest);
    seal_and_send(ci, t->at(ci).current, out, n);
  }
  return got;
}

// Ingest: n frames of channel ci, each with its UDP datagram at kCipherOffset.
unsigned SendWorker::seal_and_send(uint32_t ci, KeySlot* key, rte_mbuf** out, uint16_t n) {
  const TxChannel& ch = sh_.cfg.channels[ci];
  const uint64_t seq0 = key->reserve(id_, n);
  uint64_t wire = 0, payload = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = out[i];
    uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
    // The inner length is the UDP length field, still intact in place.
    const uint32_t udp_len = uint32_t(f[esp::kCipherOffset + 4]) << 8 | f[esp::kCipherOffset + 5];
    const std::size_t len = esp::prepare_datagram(ch.tmpl, key->spi, seq0 + i, f, udp_len,
                                                  m->data_len, aad_[i], ops_[i]);
    m->data_len = static_cast<uint16_t>(len);
    m->pkt_len = static_cast<uint32_t>(len);
    wire += len;
    payload += udp_len - esp::kUdpLen;
  }
  aead_.seal_burst(key->key, ops_, n);
  const uint16_t sent = tx_all(sh_.cfg, q_, out, n, st_);
  count_sent(ci, key, n, sent, payload, wire);
  return sent;
}

// Once per key, not per packet: a channel's bursts change key only at a switch.
void SendWorker::note_key(uint32_t ci, uint32_t spi) noexcept {
  TxChannelStats& cs = st_.chan[ci];
  cs.last_spi = spi;
  if (cs.spis < kMaxSpisUsed) {
    cs.spi_used[cs.spis] = spi;
    cs.spi_first_tsc[cs.spis] = rte_get_tsc_cycles();
    ++cs.spis;
  } else {
    cs.spis_full = true;
  }
}

// Worker 0 multicasts each channel's pending key change previous notice when
// it first sees it, then every --notice-interval-ms until the switch.
void SendWorker::notices(const KeyTable* t) {
  const uint64_t now = rte_get_tsc_cycles();
  for (uint32_t ci : t->noticing) {
    const ChannelKeys& ck = t->at(ci);
    if (!ck.current || now >= ck.notice.switch_tsc) continue;
    if (ck.notice.generation == last_notice_gen_[ci] && now - last_notice_tsc_[ci] < notice_every_)
      continue;
    last_notice_gen_[ci] = ck.notice.generation;
    last_notice_tsc_[ci] = now;
    send_notice(t, ci);
  }
}

void SendWorker::send_notice(const KeyTable* t, uint32_t ci) {
  const ChannelKeys& ck = t->at(ci);
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  if (!m) {
    st_.alloc_fail.add();
    return;
  }
  const uint64_t now = rte_get_tsc_cycles();
  KeyChangeNotice nt;
  nt.channel = ck.channel;
  nt.next_spi = ck.notice.next_spi;
  nt.ms_to_switch = static_cast<uint32_t>((ck.notice.switch_tsc - now) / (rte_get_tsc_hz() / 1000));
  uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
  const std::size_t cap = rte_pktmbuf_tailroom(m);
  const std::size_t inner = encode_notice(nt, f + esp::kCipherOffset, cap - esp::kCipherOffset);
  KeySlot* key = ck.current;
  const std::size_t len = esp::prepare(sh_.cfg.channels[ci].tmpl, key->spi, key->reserve(id_, 1),
                                       esp::kNextControl, f, inner, cap, aad_[0], ops_[0]);
  if (!len) {
    rte_pktmbuf_free(m);
    return;
  }
  aead_.seal(key->key, ops_[0]);
  m->data_len = static_cast<uint16_t>(len);
  m->pkt_len = static_cast<uint32_t>(len);
  if (tx_all(sh_.cfg, q_, &m, 1, st_) == 1) st_.notices.add();
}

int tx_worker_main(void* arg) {
  auto* a = static_cast<TxWorkerArg*>(arg);
  return worker_entry("keycast-send", a->id, *a->sh, [a] {
    auto w = std::make_unique<SendWorker>(*a->sh, a->id, a->nworkers);
    w->run();
  });
}

}  // namespace keycast::dp

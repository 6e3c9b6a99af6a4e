#include "dataplane/rx_worker.hpp"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_prefetch.h>
#include <sys/time.h>

#include <cstdio>
#include <stdexcept>

#include "common/control_msg.hpp"
#include "common/igmp.hpp"

namespace keycast::dp {

namespace {

// How many packets ahead of its decipherment a frame is fetched: enough to cover a DRAM miss
// (~100 ns) with small packets, few enough that the burst's frames still fit in L1/L2.
constexpr uint16_t kAhead = 4;

// Mbuf fast free, as a PMD does under RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE: what a worker consumes
// came from its RX queue direct, unshared and in one segment, so the burst goes back to its
// pool's lcore cache in one put. rte_pktmbuf_free_bulk re-derives that per mbuf (41 instructions
// a packet, against about 22 here with the put). Checked, not assumed: any other mbuf takes the general path.
// Only first-line fields are read: a one-segment mbuf's next is NULL by the mbuf invariant.
void free_burst(rte_mbuf** ms, uint16_t n) {
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
void prefetch_header(const rte_mbuf* m) { rte_prefetch0(m); }
// Every line of the frame: GCM reads all of it, the ICV last.
void prefetch_frame(const rte_mbuf* m) {
  const char* f = rte_pktmbuf_mtod(m, const char*);
  const char* end = f + m->data_len;
  for (const char* l = RTE_PTR_ALIGN_FLOOR(f, RTE_CACHE_LINE_SIZE); l < end; l += RTE_CACHE_LINE_SIZE)
    rte_prefetch0(l);
}

// (tag, SPI) of a frame, read where an untagged ESP frame without IPv4 options has them (what
// senders send), before the frame is parsed: only to fetch its key's lines ahead of its turn, so
// a frame of any other form costs a wasted prefetch, never a wrong result.
// Returns tag << 32 | SPI, or kNoKey.
constexpr uint64_t kNoKey = ~uint64_t(0);
[[gnu::always_inline]] inline uint64_t peek_key(const rte_mbuf* m, bool check_group, uint32_t any_tag) {
  if (!m || m->data_len < esp::kEthLen + esp::kIpv4Len + 4) return kNoKey;
  const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
  const uint32_t tag = check_group ? esp::detail::get32(f + esp::kEthLen + 16) : any_tag;
  return uint64_t(tag) << 32 | esp::detail::get32(f + esp::kEthLen + esp::kIpv4Len);
}

void to_plain(rte_mbuf* m, const esp::Parsed& p, const esp::Opened& o) {
  std::size_t len = 0;
  const std::size_t shift = esp::to_plain(rte_pktmbuf_mtod(m, uint8_t*), p, o, len);
  rte_pktmbuf_adj(m, static_cast<uint16_t>(shift));
  rte_pktmbuf_trim(m, static_cast<uint16_t>(m->data_len - len));
}

}  // namespace

RecvWorker::RecvWorker(RxShared& sh, unsigned id)
    : sh_(sh), id_(id), q_(static_cast<uint16_t>(id)), st_(*sh.stats[id]),
      backoff_(sh.cfg.idle_sleep_us) {
  report_every_ = rte_get_tsc_hz() / 100;  // unknown-SPI events: at most 100/s per worker
  if (sh.cfg.deliver == Deliver::Pcap) {
    std::string path = sh.cfg.deliver_pcap;
    if (id_ > 0) path += ".w" + std::to_string(id_);
    pcap_ = pcap_open_dead(DLT_EN10MB, 65535);
    dumper_ = pcap_ ? pcap_dump_open(pcap_, path.c_str()) : nullptr;
    if (!dumper_) throw std::runtime_error("--deliver pcap:" + path + ": cannot open");
  }
}

RecvWorker::~RecvWorker() {
  if (dumper_) pcap_dump_close(dumper_);
  if (pcap_) pcap_close(pcap_);
}

// One burst is kept in hand while the next is received: the next burst's mbuf headers and first
// frames are fetched while this one is deciphered, so no burst starts by waiting on memory.
// When the queue is empty the burst in hand is processed at once (no added latency when idle).
void RecvWorker::run() {
  KeyTableHolder& h = *sh_.holder;  // registered by control before launch
  const uint16_t port = sh_.cfg.port;
  const uint16_t burst = static_cast<uint16_t>(sh_.cfg.burst);
  rte_mbuf* bufs[2][kMaxBurst];
  rte_mbuf** cur = bufs[0];
  rte_mbuf** nxt = bufs[1];
  uint16_t ncur = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    h.quiescent(id_);
    const uint64_t t0 = rte_get_tsc_cycles();
    const uint16_t n = rte_eth_rx_burst(port, q_, nxt, burst);
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
    const uint16_t n = rte_eth_rx_burst(port, q_, cur, burst);
    if (!n) break;
    st_.rx.add(n);
    process(h.acquire(), cur, n, nullptr, 0);
  }
  if (dumper_) pcap_dump_flush(dumper_);
  h.unregister_reader(id_);
}

void RecvWorker::post_unknown(uint32_t ci, uint32_t spi) {
  const uint64_t now = rte_get_tsc_cycles();
  if (spi == last_unknown_ && ci == last_unknown_chan_ && now - last_unknown_tsc_ < report_every_)
    return;
  last_unknown_ = spi;
  last_unknown_chan_ = ci;
  last_unknown_tsc_ = now;
  sh_.events->post(ControlEvent{EventType::UnknownSpi, ci, spi, 0});
}

// Once per key and worker (the key slot's per-queue flag), not per packet: records the SPI in
// the channel's list and counts a key switch for each SPI after the channel's first.
void RecvWorker::note_spi(uint32_t ci, uint32_t spi) {
  RxChannelStats& c = st_.chan[ci];
  if (spi == c.last_spi) return;
  const uint32_t seen = static_cast<uint32_t>(c.spis_seen.get());
  bool known = false;
  for (uint32_t i = 0; i < seen && i < kMaxSpisPerChannel && !known; ++i) known = c.spi_list[i] == spi;
  if (!known) {
    if (seen < kMaxSpisPerChannel) c.spi_list[seen] = spi;
    c.spis_seen.set(seen + 1);
    if (c.last_spi != 0) c.key_switches.add();
  }
  c.last_spi = spi;
}

void RecvWorker::process(const KeyTable* t, rte_mbuf** pkts, uint16_t n, rte_mbuf* const* next,
                         uint16_t nnext) {
  rte_mbuf* out[kMaxBurst];
  uint16_t nout = 0;
  nfree_ = 0;
  // Read once per burst: the parse and the crypto store through byte pointers, which may alias
  // anything, so options read in the loop would be reloaded for every packet. The totals
  // of delivered packets are counted per burst for the same reason (drops, rare, per packet).
  const bool check_group = !sh_.cfg.any_group;
  const RxChannel* const chans = sh_.cfg.channels.data();
  const uint32_t any_tag = chans[0].group_ip;
  const Deliver deliver = sh_.cfg.deliver;
  const VlanConfig vlan = sh_.cfg.vlan;
  const bool vlan_port = vlan.on;
  uint64_t ok = 0, ok_bytes = 0;
  // The frames arrive in memory this core has not touched (a NIC's DMA leaves them in DRAM or,
  // with DDIO, in the LLC): without prefetching, each packet would wait for its misses in turn.
  // Headers 2*kAhead and frames kAhead packets before their turn (as l3fwd). For a burst that
  // run() had in hand these first requests were already made (re-requesting a line in flight
  // costs an instruction); they matter for the first burst after idle and for the drain.
  for (uint16_t i = 0; i < n && i < 2 * kAhead; ++i) prefetch_header(pkts[i]);
  for (uint16_t i = 0; i < n && i < kAhead; ++i) prefetch_frame(pkts[i]);
  // With many channels interleaved every packet may need another key whose lines (index entry,
  // slot, schedule, window, the channel's counters) have left the cache; read in turn they are
  // a chain of dependent misses. They are fetched ahead in stages, each from what the stage
  // before brought in: the index entry three packets ahead (its place from the frame, fetched
  // a packet earlier); the slot's first line and the key's schedule two ahead (the slot's
  // address is in the entry, the schedule lies in the slot); this queue's window and the
  // channel's counters one ahead (their addresses are in the slot's first line). A run of
  // packets under one key (a burst of one channel's) fetches once.
  // One channel's few keys stay cached: only a receiver of several channels looks ahead.
  const KeyTable* const look = t && t->channels.size() > 1 ? t : nullptr;
  constexpr unsigned kRing = 4;  // packets i .. i + 3, by j % kRing
  // This burst and the next in one array, then nullptr: the stages index it without asking
  // which burst a packet is in.
  const rte_mbuf* all[2 * kMaxBurst + kRing];
  if (look) {
    // Copied in loops: next is nullptr when there is no next burst, which memcpy may not be given.
    for (uint16_t j = 0; j < n; ++j) all[j] = pkts[j];
    for (uint16_t j = 0; j < nnext; ++j) all[n + j] = next[j];
    for (unsigned j = n + nnext; j < n + nnext + kRing; ++j) all[j] = nullptr;
  }
  auto ahead = [&all](uint16_t j) { return all[j]; };
  uint64_t keys[kRing] = {kNoKey, kNoKey, kNoKey, kNoKey};
  KeySlot* slots[kRing] = {};
  auto fetch_index = [&](uint16_t j) {
    const uint64_t k = peek_key(ahead(j), check_group, any_tag);
    if (k != kNoKey && k != keys[(j + kRing - 1) % kRing]) look->prefetch(uint32_t(k >> 32), uint32_t(k));
    keys[j % kRing] = k;
  };
  auto fetch_slot = [&](uint16_t j) {
    const uint64_t k = keys[j % kRing];
    KeySlot* s = nullptr;
    if (j > 0 && k == keys[(j - 1) % kRing]) {
      s = slots[(j - 1) % kRing];
    } else if (k != kNoKey && (s = look->find(uint32_t(k >> 32), uint32_t(k)))) {
      rte_prefetch0(s);
      aead_.prefetch(s->key, ahead(j)->data_len);
    }
    slots[j % kRing] = s;
  };
  auto fetch_window = [&](uint16_t j) {
    const KeySlot* s = slots[j % kRing];
    if (s && (j == 0 || s != slots[(j - 1) % kRing])) {
      rte_prefetch0(&s->replay[q_]);
      rte_prefetch0(&st_.chan[s->chan_index]);
    }
  };
  if (look) {
    for (uint16_t j = 0; j < kRing - 1; ++j) fetch_index(j);
    for (uint16_t j = 0; j < kRing - 2; ++j) fetch_slot(j);
    fetch_window(0);
  }
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    if (i + 2 * kAhead < n) prefetch_header(pkts[i + 2 * kAhead]);
    if (i + kAhead < n)
      prefetch_frame(pkts[i + kAhead]);
    else if (i + kAhead - n < nnext)
      prefetch_frame(next[i + kAhead - n]);
    // The slot found ahead for this packet (or nullptr) and the key it was found under: the
    // lookup below takes it instead of searching the index again.
    KeySlot* here = nullptr;
    uint64_t here_key = kNoKey;
    if (look) {
      here = slots[i % kRing];
      here_key = keys[i % kRing];
      fetch_index(static_cast<uint16_t>(i + 3));
      fetch_slot(static_cast<uint16_t>(i + 2));
      fetch_window(static_cast<uint16_t>(i + 1));
    }
    Drop d;
    if (!rte_pktmbuf_is_contiguous(m) && rte_pktmbuf_linearize(m) != 0) {
      drop(m, Drop::Truncated);
      continue;
    }
    // On a VLAN port every frame's tag is checked and removed first; on an
    // untagged port only a frame the parse refuses as not IPv4 can be tagged.
    if (vlan_port && (d = vlan_accept(m, vlan)) != Drop::None) {
      drop(m, d);
      continue;
    }
    uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
    esp::Parsed p;
    d = esp::parse(f, m->data_len, p);
    if (d == Drop::NotIpv4 && !vlan_port && vlan_tagged(f, m->data_len)) {
      // A tag on an untagged port: only a priority tag (VID 0) is ours, and it goes.
      d = vlan_accept(m, vlan);
      if (d == Drop::None) {
        f = rte_pktmbuf_mtod(m, uint8_t*);
        d = esp::parse(f, m->data_len, p);
      }
    }
    if (d != Drop::None) {
      // IPv4 but not ESP: an IGMP query is for control to answer (the
      // ring is checked before the byte: neither costs an ESP packet anything).
      if (d == Drop::NotEsp && sh_.igmp && f[esp::kEthLen + 9] == igmp::kProtoIgmp) {
        if (rte_ring_mp_enqueue(sh_.igmp, m) == 0) {
          st_.igmp_rx.add();
        } else {
          st_.igmp_ring_full.add();
          rte_pktmbuf_free(m);
        }
        continue;
      }
      drop(m, d);
      continue;
    }
    // The group names the channel (each has its own SPI space): one lookup
    // finds the key of this channel. A miss is either a group no channel has
    // or a key this channel does not hold (yet).
    const uint32_t tag = check_group ? p.dst_ip : any_tag;
    KeySlot* key = here && here_key == (uint64_t(tag) << 32 | p.spi) ? here
                   : t                                               ? cache_.lookup(*t, tag, p.spi)
                                                                     : nullptr;
    if (!key) {
      const uint32_t ci = check_group ? sh_.cfg.groups.find(tag) : 0;
      if (ci == GroupIndex::kNone) {
        drop(m, Drop::WrongGroup);
        continue;
      }
      post_unknown(ci, p.spi);
      drop(m, Drop::UnknownSpi);
      continue;
    }
    const uint32_t ci = key->chan_index;
    KeySlot::PerQueue& pq = key->replay[q_];
    ReplayWindow& win = pq.window;
    if (!win.check(p.seq)) {  // before paying for the crypto
      drop(m, Drop::Replay);
      continue;
    }
    win.prefetch(p.seq);
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
      // Routed by the channel whose key authenticated it, not by its body.
      sh_.events->post(ControlEvent{EventType::Notice, ci, nt.next_spi, nt.ms_to_switch});
      release(m);
      continue;
    }
    if (check_group && o.dst_port != chans[ci].port) {
      drop(m, Drop::WrongGroup);
      continue;
    }
    ++ok;
    ok_bytes += o.payload_len;
    // On the channel's line, fetched a packet ahead: a run of one channel's packets would save
    // little, and keeping one costs a test and a store each packet when channels interleave.
    RxChannelStats& cs = st_.chan[ci];
    cs.packets_ok.add();
    cs.bytes_ok.add(o.payload_len);
    if (!pq.noted) [[unlikely]] {  // once per key and worker, not per change of key
      note_spi(ci, p.spi);
      pq.noted = true;
    }
    switch (deliver) {
      case Deliver::Verify: {
        uint64_t idx = 0;
        if (pattern_check(o.payload, o.payload_len, idx) == PatternResult::Ok)
          st_.chan[ci].tracker->record(idx);
        else
          st_.chan[ci].corrupted.add();
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
  if (nout && sh_.cfg.deliver_vlan.on) {
    const uint16_t kept = vlan_tag_burst(out, nout, sh_.cfg.deliver_vlan);
    st_.deliver_fail.add(nout - kept);
    nout = kept;
  }
  if (nout) {
    const uint16_t sent = rte_eth_tx_burst(sh_.cfg.deliver_port, q_, out, nout);
    if (sent < nout) {
      st_.deliver_fail.add(nout - sent);
      rte_pktmbuf_free_bulk(out + sent, nout - sent);
    }
  }
  if (nfree_) free_burst(free_, nfree_);
}

int rx_worker_main(void* arg) {
  auto* a = static_cast<RxWorkerArg*>(arg);
  return worker_entry("keycast-recv", a->id, *a->sh, [a] {
    auto w = std::make_unique<RecvWorker>(*a->sh, a->id);  // large: not on the lcore's stack
    w->run();
  });
}

}  // namespace keycast::dp

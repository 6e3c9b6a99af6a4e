// Benchmark input device, loaded with LD_PRELOAD into an unchanged DPDK application
// (keycast-recv, ipsec-secgw): after the application's rte_eal_init it adds one more ethdev
// whose RX hands out, once each and without a copy, the frames of a capture preloaded into
// mbufs - what a NIC that has already written N frames into host memory gives its driver.
//
// Why: net_pcap (infinite_rx) copies every frame on the polling core; over a capture large
// enough to hold only distinct packets (the receiver's replay window is on) that copy reads
// DRAM and costs more than the decipherment, so it measured the device, not the receiver.
// Both applications see exactly the same device, so their figures compare.
//
// Environment:
//   KC_REPLAY_PCAP  capture to preload (required; without it the shim does nothing)
//   KC_REPLAY_OUT   JSON written once the pass is over (packets, TSC cycles, thread CPU ns)
//   KC_REPLAY_FLUSH 1 (default): flush the frames from the CPU caches after loading, so the
//                   pass starts as after a DMA that bypassed them; 0: leave them
//   KC_REPLAY_MBUF  distinct (default): every frame has its own mbuf, header and data both
//                   cold - no driver recycles mbufs like that, so it is the worst case;
//                   recycle: what a NIC driver does - the RX path hands out the oldest mbufs
//                   of a 1024-entry posted ring and refills it from a small pool (its per-lcore
//                   mempool cache: what the application freed, so a header comes back after a
//                   ring's worth of packets, in L2), points each at the next frame's buffer
//                   (cold, as DMA without DDIO leaves it) and fills in length and port from a
//                   per-frame descriptor array (cold too, read in order, as a NIC's ring).
//                   That work runs in the RX callback on the polling thread, so it is timed, as a
//                   PMD's is.
//                   llc: recycle, with the frames written by a "NIC" thread on another CPU into
//                   the posted mbufs' own buffers shortly before the RX path takes them (up to a
//                   ring's worth ahead), as a NIC with DDIO leaves them: in the last-level cache,
//                   not DRAM. The thread runs on CPU KC_REPLAY_NIC_CPU (default 0, the control
//                   lcore's); polls that find nothing while frames remain are counted
//                   (nic_waits) - a pass with many measured the NIC thread, not the application.
// The new port gets the next free port id (after the --vdev ports), one RX and one TX queue
// (TX goes to a sink ring nobody reads). The pass is timed on the polling thread, from its first
// non-empty RX to its first empty RX after the last frame (the application has finished with
// every frame by then): TSC cycles and the thread's CPU time, so a descheduled worker is seen.
#include <dlfcn.h>
#include <pcap/pcap.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <time.h>

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <emmintrin.h>
#include <thread>
#include <vector>

namespace {

struct Pass {
  uint64_t total = 0;   // frames preloaded
  uint64_t handed = 0;  // frames given to the application so far
  uint64_t tsc0 = 0, tsc1 = 0;
  uint64_t cpu0 = 0, cpu1 = 0;
  bool done = false;
  const char* out = nullptr;
  const char* mode = "distinct";
  uint64_t nic_waits = 0;  // llc: polls that found no frame written yet, mid-pass
};
Pass g_pass;

// recycle mode: one descriptor per preloaded frame (its buffer), in capture order.
struct Slot {
  void* addr;
  rte_iova_t iova;
  uint16_t buf_len, data_off, len;
};
Slot* g_slots = nullptr;
rte_mempool* g_hdrs = nullptr;  // the recycled mbuf headers

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

void write_result() {
  const double cycles = double(g_pass.tsc1 - g_pass.tsc0);
  const double hz = double(rte_get_tsc_hz());
  const double cpu_s = double(g_pass.cpu1 - g_pass.cpu0) / 1e9;
  std::fprintf(stderr, "kc_replay: %llu frames in %.0f TSC cycles (%.1f per frame), thread on CPU %.4f s\n",
               (unsigned long long)g_pass.total, cycles, cycles / double(g_pass.total), cpu_s);
  if (!g_pass.out) return;
  FILE* f = std::fopen(g_pass.out, "w");
  if (!f) {
    std::fprintf(stderr, "kc_replay: cannot write %s\n", g_pass.out);
    return;
  }
  std::fprintf(f,
               "{\"packets\": %llu, \"tsc_cycles\": %.0f, \"tsc_hz\": %.0f, \"wall_s\": %.6f, "
               "\"cpu_s\": %.6f, \"cycles_per_pkt_tsc\": %.2f, \"cycles_per_pkt_cpu\": %.2f, "
               "\"mbuf\": \"%s\", \"nic_waits\": %llu}\n",
               (unsigned long long)g_pass.total, cycles, hz, cycles / hz, cpu_s,
               cycles / double(g_pass.total), cpu_s * hz / double(g_pass.total), g_pass.mode,
               (unsigned long long)g_pass.nic_waits);
  std::fclose(f);
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "kc_replay: %s\n", what);
  std::exit(1);
}

void pass_end() {
  g_pass.tsc1 = rte_rdtsc();
  g_pass.cpu1 = thread_cpu_ns();
  g_pass.done = true;
  write_result();  // once per run, after the pass: the only system calls this shim makes on the worker
}

// recycle and llc modes, at the start of every RX: starts the clock on the first, ends the pass
// once every frame has been handed out. Returns how many frames are left to hand out.
uint64_t pass_left() {
  if (g_pass.done) return 0;
  const uint64_t left = g_pass.total - g_pass.handed;
  if (left == 0) {
    pass_end();
    return 0;
  }
  if (g_pass.handed == 0) {
    g_pass.tsc0 = rte_rdtsc();
    g_pass.cpu0 = thread_cpu_ns();
  }
  return left;
}

// Fresh mbufs to post in place of the k handed out. The pool holds far more than the ring and the
// application's bursts in flight; running out means the application keeps mbufs, which would
// stall a real port as well.
void refill(rte_mbuf** fresh, uint16_t k) {
  if (rte_pktmbuf_alloc_bulk(g_hdrs, fresh, k) != 0) fail("recycle pool exhausted: the application holds its mbufs");
}

// recycle mode, after every rx_burst of the replay port (whose ring stays empty): a driver's RX
// with a full ring. The mbufs handed out are the oldest of the ring's posted ones, and as many
// fresh ones are taken from the mempool (the per-lcore cache: what the application just freed) and
// posted in their place, so a header waits a ring's worth of packets between refill and RX, as in
// a real driver (in L2 by then, not L1).
constexpr unsigned kRingSize = 1024;  // keycast-recv's and ipsec-secgw's RX descriptors per queue
rte_mbuf* g_ring[kRingSize];
unsigned g_ring_head = 0;  // oldest posted mbuf

uint16_t on_rx_recycle(uint16_t port, uint16_t, rte_mbuf* pkts[], uint16_t, uint16_t max, void*) {
  const uint64_t left = pass_left();
  if (left == 0) return 0;
  const uint16_t k = uint16_t(std::min<uint64_t>({max, left, kRingSize}));
  const Slot* s = g_slots + g_pass.handed;
  for (uint16_t i = 0; i < k; ++i) {
    rte_mbuf* m = g_ring[(g_ring_head + i) % kRingSize];
    m->buf_addr = s[i].addr;
    rte_mbuf_iova_set(m, s[i].iova);
    m->buf_len = s[i].buf_len;
    m->data_off = s[i].data_off;
    m->data_len = s[i].len;
    m->pkt_len = s[i].len;
    m->port = port;
    pkts[i] = m;
  }
  rte_mbuf* fresh[kRingSize];
  refill(fresh, k);
  for (uint16_t i = 0; i < k; ++i) g_ring[(g_ring_head + i) % kRingSize] = fresh[i];
  g_ring_head = (g_ring_head + k) % kRingSize;
  g_pass.handed += k;
  return k;
}

// llc mode: the same ring, but each descriptor is posted to the NIC thread, which writes the next
// frame into the mbuf's own buffer and marks it done; RX takes done descriptors in order.
struct Desc {
  rte_mbuf* m;
  uint16_t len;
  std::atomic<uint32_t> done;  // 0 posted, 1 written (release by the NIC thread)
};
Desc g_desc[kRingSize];
std::vector<rte_mbuf*> g_src;  // the preloaded frames, in capture order (the NIC's source)

void nic_thread(unsigned cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  for (size_t j = 0; j < g_src.size(); ++j) {
    Desc& d = g_desc[j % kRingSize];
    while (d.done.load(std::memory_order_acquire)) _mm_pause();  // the RX path has not reposted it yet
    const rte_mbuf* f = g_src[j];
    std::memcpy(rte_pktmbuf_mtod(d.m, char*), rte_pktmbuf_mtod(f, const char*), f->data_len);
    d.len = f->data_len;
    d.done.store(1, std::memory_order_release);
  }
}

uint16_t on_rx_llc(uint16_t port, uint16_t, rte_mbuf* pkts[], uint16_t, uint16_t max, void*) {
  const uint64_t left = pass_left();
  if (left == 0) return 0;
  const uint16_t want = uint16_t(std::min<uint64_t>({max, left, kRingSize}));
  uint16_t k = 0;
  while (k < want) {
    Desc& d = g_desc[(g_ring_head + k) % kRingSize];
    if (!d.done.load(std::memory_order_acquire)) break;
    rte_mbuf* m = d.m;
    m->data_off = RTE_PKTMBUF_HEADROOM;
    m->data_len = d.len;
    m->pkt_len = d.len;
    m->port = port;
    pkts[k++] = m;
  }
  if (k == 0) {
    ++g_pass.nic_waits;
    return 0;
  }
  rte_mbuf* fresh[kRingSize];
  refill(fresh, k);
  for (uint16_t i = 0; i < k; ++i) {
    Desc& d = g_desc[(g_ring_head + i) % kRingSize];
    d.m = fresh[i];
    d.done.store(0, std::memory_order_release);
  }
  g_ring_head = (g_ring_head + k) % kRingSize;
  g_pass.handed += k;
  return k;
}

// distinct mode: runs on the polling thread after every rx_burst of the replay port.
uint16_t on_rx(uint16_t, uint16_t, rte_mbuf*[], uint16_t n, uint16_t, void*) {
  if (g_pass.done) return n;
  if (n) {
    if (g_pass.handed == 0) {
      g_pass.tsc0 = rte_rdtsc();
      g_pass.cpu0 = thread_cpu_ns();
    }
    g_pass.handed += n;
  } else if (g_pass.handed == g_pass.total && g_pass.total) {
    pass_end();
  }
  return n;
}

void add_replay_port(const char* path) {
  char err[PCAP_ERRBUF_SIZE];
  pcap_t* p = pcap_open_offline(path, err);
  if (!p) fail(err);
  // Count first: the ring and the pool are sized to the capture.
  unsigned n = 0, maxlen = 0;
  pcap_pkthdr* h;
  const u_char* data;
  while (pcap_next_ex(p, &h, &data) == 1) {
    ++n;
    if (h->caplen > maxlen) maxlen = h->caplen;
  }
  pcap_close(p);
  if (n == 0) fail("KC_REPLAY_PCAP holds no frames");
  if (maxlen > RTE_MBUF_DEFAULT_DATAROOM) fail("a frame is larger than an mbuf");

  // Standard 2 KiB data room, as a NIC driver's pool: the frames' spacing in memory is a NIC's.
  rte_mempool* pool = rte_pktmbuf_pool_create("kc_replay_pool", n + 2048, 256, 0,
                                              RTE_MBUF_DEFAULT_BUF_SIZE, int(rte_socket_id()));
  if (!pool) fail("cannot create the mbuf pool (raise the EAL -m)");
  rte_ring* rx = rte_ring_create("kc_replay_rx", rte_align32pow2(n + 1), int(rte_socket_id()),
                                 RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* tx = rte_ring_create("kc_replay_tx", 1024, int(rte_socket_id()), RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (!rx || !tx) fail("cannot create the rings");

  p = pcap_open_offline(path, err);
  if (!p) fail(err);
  while (pcap_next_ex(p, &h, &data) == 1) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool);
    if (!m) fail("mbuf pool exhausted");
    char* dst = rte_pktmbuf_append(m, uint16_t(h->caplen));
    if (!dst) fail("frame does not fit an mbuf");
    std::memcpy(dst, data, h->caplen);
    if (rte_ring_enqueue(rx, m) != 0) fail("ring full");
  }
  pcap_close(p);

  const char* mode = std::getenv("KC_REPLAY_MBUF");
  const bool recycle = mode && std::strcmp(mode, "recycle") == 0;
  const bool llc = mode && std::strcmp(mode, "llc") == 0;
  if (mode && !recycle && !llc && std::strcmp(mode, "distinct") != 0)
    fail("KC_REPLAY_MBUF must be distinct, recycle or llc");
  std::vector<rte_mbuf*> frames(n);
  if (rte_ring_dequeue_bulk(rx, reinterpret_cast<void**>(frames.data()), n, nullptr) != n) fail("ring short");
  if (recycle) {
    // The preloaded mbufs now only lend their buffers; their headers are never read again.
    g_slots = static_cast<Slot*>(rte_malloc("kc_replay_slots", sizeof(Slot) * n, RTE_CACHE_LINE_SIZE));
    if (!g_slots) fail("cannot allocate the descriptors (raise the EAL -m)");
    for (unsigned i = 0; i < n; ++i)
      g_slots[i] = Slot{frames[i]->buf_addr, rte_mbuf_iova_get(frames[i]), frames[i]->buf_len,
                        frames[i]->data_off, frames[i]->data_len};
    // Headers: a driver pool's size, so the per-lcore cache recycles them; the private area is
    // what ipsec-secgw's own pools reserve for its per-packet metadata (it writes there).
    g_hdrs = rte_pktmbuf_pool_create("kc_replay_hdrs", 16383, 256, 256, 0, int(rte_socket_id()));
    if (!g_hdrs) fail("cannot create the header pool");
    if (rte_pktmbuf_alloc_bulk(g_hdrs, g_ring, kRingSize) != 0) fail("cannot fill the RX ring");
    g_pass.mode = "recycle";
  } else if (llc) {
    // The NIC writes into the posted mbufs' own 2 KiB buffers, so these headers carry data rooms.
    g_hdrs = rte_pktmbuf_pool_create("kc_replay_hdrs", 16383, 256, 256, RTE_MBUF_DEFAULT_BUF_SIZE,
                                     int(rte_socket_id()));
    if (!g_hdrs) fail("cannot create the llc pool (raise the EAL -m)");
    for (Desc& d : g_desc) {
      d.m = rte_pktmbuf_alloc(g_hdrs);
      if (!d.m) fail("cannot fill the RX ring");
    }
    g_src = frames;
    g_pass.mode = "llc";
  } else if (rte_ring_enqueue_bulk(rx, reinterpret_cast<void**>(frames.data()), n, nullptr) != n) {
    fail("ring full");
  }

  const char* flush = std::getenv("KC_REPLAY_FLUSH");
  if (!flush || std::strcmp(flush, "0") != 0) {
    // Evict every frame (mbuf header and data) and the descriptors so the pass does not start
    // with the last ones loaded still in the LLC.
    for (rte_mbuf* m : frames) {
      const auto* b = static_cast<const char*>(m->buf_addr);
      for (unsigned o = 0; o < m->buf_len; o += 64) _mm_clflush(b + o);
      _mm_clflush(m);
      _mm_clflush(reinterpret_cast<const char*>(m) + 64);
    }
    if (g_slots)
      for (size_t o = 0; o < sizeof(Slot) * n; o += 64) _mm_clflush(reinterpret_cast<const char*>(g_slots) + o);
    _mm_mfence();
  }

  const int port = rte_eth_from_rings("kc_replay", &rx, 1, &tx, 1, rte_socket_id());
  if (port < 0) fail("rte_eth_from_rings failed");
  if (!rte_eth_add_rx_callback(uint16_t(port), 0, recycle ? on_rx_recycle : llc ? on_rx_llc : on_rx, nullptr))
    fail("cannot add the RX callback");
  if (llc) {
    const char* c = std::getenv("KC_REPLAY_NIC_CPU");
    std::thread(nic_thread, c ? unsigned(std::atoi(c)) : 0u).detach();
  }
  g_pass.total = n;
  g_pass.out = std::getenv("KC_REPLAY_OUT");
  std::fprintf(stderr, "kc_replay: port %d holds %u frames of %s (up to %u bytes), %s mbufs\n", port, n, path,
               maxlen, g_pass.mode);
}

}  // namespace

extern "C" int rte_eal_init(int argc, char** argv) {
  using Fn = int (*)(int, char**);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "rte_eal_init"));
  if (!real) fail("rte_eal_init not found (is the application linked with DPDK's shared libraries?)");
  const int r = real(argc, argv);
  const char* path = std::getenv("KC_REPLAY_PCAP");
  if (r >= 0 && path && *path) add_replay_port(path);
  return r;
}

// The receiver's per-packet cost with 1, 2, 64, 256, 512 and 1,024 channels, packets interleaved one
// channel after another (every packet needs another channel's key: the worst case for
// locality), next to the floor that no receiver can beat: Intel IPsec-MB's GCM open with
// the same number of keys interleaved the same way. With many keys the floor itself pays
// for fetching each key's schedule, so "N channels / 1 channel" of the receiver is read
// against "N keys / 1 key" of the floor measured in the same run.
//
// BM_Recv drives RecvWorker::process over mbufs in bursts of 32 (EAL with --no-huge, no
// device), keys as bench/channels.sh installs them (8 per channel, the first current), the
// default replay window. Every iteration seals a fresh batch (not timed: sequence numbers must
// advance or the replay windows drop it), then times its processing. cyc_per_pkt is the mean
// over the iterations; cyc_per_pkt_best the fastest iteration's, the figure to compare on a shared
// host, where another tenant's burst lengthens some iterations and never shortens one.
//
// --once CHANNELS PAYLOAD PACKETS: one fixed pass and nothing else, for instruction and cache
// counts under valgrind --tool=callgrind --toggle-collect='*RecvWorker::process*';
// --once-floor KEYS PAYLOAD OPENS the same for the floor (--toggle-collect='*Aead::open*').
#include <benchmark/benchmark.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_mbuf.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/aead.hpp"
#include "common/esp.hpp"
#include "common/key_record.hpp"
#include "dataplane/app.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/key_table.hpp"
#include "dataplane/rx_worker.hpp"

using namespace keycast;
using namespace keycast::dp;

namespace {

rte_mempool* g_pool = nullptr;
constexpr uint16_t kBurst = 32;
constexpr uint32_t kKeysPerChannel = 8;

uint32_t group_of(uint32_t i) { return 0xef1e0000u | ((i + 1) / 256) << 8 | ((i + 1) % 256); }
uint32_t spi_of(uint32_t i, uint32_t k) { return 10000 + 8 * (i + 1) + k; }

KeyMaterial material_of(uint32_t i, uint32_t k) {
  std::string hex;
  for (int b = 0; b < 20; ++b) {
    char x[3];
    std::snprintf(x, sizeof x, "%02x", (i * 131 + k * 17 + b * 7 + 1) & 0xff);
    hex += x;
  }
  KeyMaterial m;
  if (!KeyMaterial::from_keymat(hex, m)) std::abort();
  return m;
}

// A receiver of n channels, one worker, --deliver null; and the sender side of the same keys.
struct Rig {
  KeyTableHolder holder{1};
  ControlEvents events{1024};
  KeyPublisher pub{holder};
  RxShared sh;
  std::unique_ptr<RecvWorker> w;
  std::vector<esp::Template> tmpl;
  std::vector<std::unique_ptr<AeadKey>> send_keys;  // the sender's copy of each current key
  std::vector<uint64_t> seq;
  Aead aead;
  uint32_t n;

  explicit Rig(uint32_t channels) : n(channels) {
    sh.cfg.deliver = Deliver::Null;
    std::vector<ChannelConfig> cfgs;
    for (uint32_t i = 0; i < n; ++i) {
      sh.cfg.channels.push_back(RxChannel{i + 1, group_of(i), 5000});
      ChannelConfig cc;
      cc.id = i + 1;
      cc.group = GroupAddr{group_of(i), 5000};
      cfgs.push_back(cc);
      esp::Flow f;
      f.src_ip = 0x0a000001;
      f.group_ip = group_of(i);
      f.dst_port = 5000;
      tmpl.push_back(esp::make_template(f));
      send_keys.push_back(std::make_unique<AeadKey>(material_of(i, 0)));
    }
    seq.assign(n, 1);
    sh.cfg.groups = GroupIndex(cfgs);
    sh.holder = &holder;
    sh.events = &events;
    sh.stats.push_back(std::make_unique<RecvWorkerStats>(n));
    {
      KeyPublisher::Batch batch(pub);
      for (uint32_t i = 0; i < n; ++i) {
        KeyControl& k = pub.add_channel(i + 1, group_of(i), SlotParams{1, 4096, 1, 0});
        for (uint32_t j = 0; j < kKeysPerChannel; ++j) {
          KeyRecord r;
          r.channel = i + 1;
          r.spi = spi_of(i, j);
          r.material = material_of(i, j);
          r.expires_at = MonoClock::time_point::max();
          k.add(r);
        }
        k.set_current(spi_of(i, 0));
        k.publish();
      }
    }
    holder.register_reader(0);
    w = std::make_unique<RecvWorker>(sh, 0);
  }
  ~Rig() {
    holder.unregister_reader(0);
    holder.synchronize();
  }

  // count packets, channel after channel, each of `payload` bytes, sealed under its channel's key.
  void make(std::vector<rte_mbuf*>& out, uint32_t count, uint32_t payload) {
    out.resize(count);
    if (rte_pktmbuf_alloc_bulk(g_pool, out.data(), count) != 0) std::abort();
    std::vector<uint8_t> data(payload, 0x5a);
    for (uint32_t p = 0; p < count; ++p) {
      const uint32_t c = p % n;
      rte_mbuf* m = out[p];
      uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
      const std::size_t len = esp::encap_udp(aead, *send_keys[c], tmpl[c], spi_of(c, 0), seq[c]++, data.data(),
                                             payload, f, rte_pktmbuf_tailroom(m));
      if (!len) std::abort();
      rte_pktmbuf_append(m, static_cast<uint16_t>(len));
    }
  }
  void process(std::vector<rte_mbuf*>& v) {
    const KeyTable* t = holder.acquire();
    const uint32_t size = static_cast<uint32_t>(v.size());
    for (uint32_t i = 0; i < size; i += kBurst) {
      const uint16_t k = static_cast<uint16_t>(std::min<uint32_t>(kBurst, size - i));
      const uint32_t j = i + k;
      const uint16_t kn = static_cast<uint16_t>(j < size ? std::min<uint32_t>(kBurst, size - j) : 0);
      w->process(t, v.data() + i, k, kn ? v.data() + j : nullptr, kn);
    }
    holder.quiescent(0);
  }
  uint64_t ok() const { return sh.stats[0]->packets_ok.get(); }
};

Rig& rig(uint32_t n) {
  static std::map<uint32_t, std::unique_ptr<Rig>> rigs;
  auto& r = rigs[n];
  if (!r) r = std::make_unique<Rig>(n);
  return *r;
}

// Packets per timed pass: 16 per channel with 1,024 channels, and the same count for fewer.
constexpr uint32_t kBatch = 16384;

void BM_Recv(benchmark::State& st) {
  Rig& r = rig(static_cast<uint32_t>(st.range(0)));
  const uint32_t payload = static_cast<uint32_t>(st.range(1));
  std::vector<rte_mbuf*> v;
  const uint64_t ok0 = r.ok();
  uint64_t cycles = 0, pkts = 0, best = ~uint64_t(0);
  for (auto _ : st) {
    r.make(v, kBatch, payload);
    const uint64_t t0 = rte_rdtsc_precise();
    r.process(v);
    const uint64_t dt = rte_rdtsc_precise() - t0;
    cycles += dt;
    best = std::min(best, dt);
    pkts += kBatch;
    st.SetIterationTime(double(dt) / double(rte_get_tsc_hz()));
  }
  if (r.ok() - ok0 != pkts) st.SkipWithError("not every packet was deciphered");
  st.counters["cyc_per_pkt"] = double(cycles) / double(pkts ? pkts : 1);
  st.counters["cyc_per_pkt_best"] = double(best) / kBatch;
  st.SetItemsProcessed(int64_t(pkts));
}

// The floor: IPsec-MB's GCM open alone, keys taken round robin from n schedules laid out as the
// receiver's (each in its own allocation), over kBatch distinct frames-sized buffers as the
// receiver sees them.
void BM_FloorOpenKeys(benchmark::State& st) {
  const uint32_t n = static_cast<uint32_t>(st.range(0));
  const std::size_t payload = static_cast<std::size_t>(st.range(1));
  const std::size_t clen = esp::kUdpLen + payload + esp::trailer_len(esp::kUdpLen + payload) - kIcvLen;
  std::vector<std::unique_ptr<AeadKey>> keys;
  for (uint32_t i = 0; i < n; ++i) keys.push_back(std::make_unique<AeadKey>(material_of(i, 0)));
  constexpr uint32_t kBufs = 1024;
  const std::size_t stride = (clen + 64 + 63) & ~std::size_t(63);
  std::vector<uint8_t> mem(stride * kBufs + 64, 0xab);
  uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(mem.data()) + 63) & ~uintptr_t(63));
  Aead aead;
  uint8_t aad[esp::kAadLen] = {}, tag[kIcvLen] = {};
  uint64_t cycles = 0, ops = 0, best = ~uint64_t(0);
  uint32_t k = 0, b = 0;
  for (auto _ : st) {
    const uint64_t t0 = rte_rdtsc_precise();
    for (uint32_t i = 0; i < kBatch; ++i) {
      bool ok = aead.open(*keys[k], AeadOp{base + b * stride + esp::kCipherOffset % 64, uint32_t(clen), i, aad,
                                           esp::kAadLen, tag});
      benchmark::DoNotOptimize(ok);
      if (++k == n) k = 0;
      if (++b == kBufs) b = 0;
    }
    const uint64_t dt = rte_rdtsc_precise() - t0;
    cycles += dt;
    best = std::min(best, dt);
    ops += kBatch;
    st.SetIterationTime(double(dt) / double(rte_get_tsc_hz()));
  }
  st.counters["cyc_per_pkt"] = double(cycles) / double(ops ? ops : 1);
  st.counters["cyc_per_pkt_best"] = double(best) / kBatch;
  st.SetItemsProcessed(int64_t(ops));
}

void args(benchmark::internal::Benchmark* b) {
  for (int64_t s : {64, 1400})
    for (int64_t n : {1, 2, 64, 256, 512, 1024}) b->Args({n, s});
}

}  // namespace

// Interleaved: each case runs `repetitions` times, the cases one after another per repetition,
// so slow phases of a shared host hit all of them alike.
BENCHMARK(BM_FloorOpenKeys)->Apply(args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Recv)->Apply(args)->UseManualTime()->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  const std::string prefix = "kc_brx_" + std::to_string(getpid());
  std::vector<std::string> eal = {"bench_rx_channels", "--no-huge", "-m", "1024", "--no-pci", "--file-prefix",
                                  prefix, "--log-level", "lib.eal:warning", "-l", "0"};
  std::vector<char*> av;
  for (auto& a : eal) av.push_back(a.data());
  if (rte_eal_init(static_cast<int>(av.size()), av.data()) < 0) {
    std::fprintf(stderr, "EAL init failed (needs a writable /var/run/dpdk)\n");
    return 1;
  }
  g_pool = make_pool("brx_pool", kBatch + 2048);
  int rc = 0;
  if (argc == 5 && std::strcmp(argv[1], "--once-floor") == 0) {
    // The floor's own pass for callgrind: COUNT opens, keys round robin over KEYS schedules.
    const uint32_t n = static_cast<uint32_t>(std::atoi(argv[2]));
    const std::size_t payload = static_cast<std::size_t>(std::atoi(argv[3]));
    const uint32_t count = static_cast<uint32_t>(std::atoi(argv[4]));
    const std::size_t clen = esp::kUdpLen + payload + esp::trailer_len(esp::kUdpLen + payload) - kIcvLen;
    std::vector<std::unique_ptr<AeadKey>> keys;
    for (uint32_t i = 0; i < n; ++i) keys.push_back(std::make_unique<AeadKey>(material_of(i, 0)));
    std::vector<uint8_t> buf(clen + 64, 0xab);
    uint8_t aad[esp::kAadLen] = {}, tag[kIcvLen] = {};
    Aead aead;
    unsigned bad = 0;
    for (uint32_t i = 0; i < count; ++i)
      bad += !aead.open(*keys[i % n], AeadOp{buf.data(), uint32_t(clen), i, aad, esp::kAadLen, tag});
    std::printf("floor keys %u payload %zu opens %u (tags refused, as expected: %u)\n", n, payload, count, bad);
  } else if (argc == 5 && std::strcmp(argv[1], "--once") == 0) {
    const uint32_t n = static_cast<uint32_t>(std::atoi(argv[2]));
    const uint32_t payload = static_cast<uint32_t>(std::atoi(argv[3]));
    const uint32_t count = static_cast<uint32_t>(std::atoi(argv[4]));
    Rig& r = rig(n);
    std::vector<rte_mbuf*> v;
    // Counts include the first passes, which warm what a running receiver has warm: run with
    // two counts and take the difference for the steady state.
    for (uint32_t done = 0; done < count; done += kBatch) {
      r.make(v, std::min(kBatch, count - done), payload);
      r.process(v);
    }
    std::printf("channels %u payload %u packets %u ok %llu\n", n, payload, count,
                static_cast<unsigned long long>(r.ok()));
    rc = r.ok() == count ? 0 : 1;
  } else {
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  }
  rte_eal_cleanup();
  return rc;
}

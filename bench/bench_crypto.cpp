// The AES-GCM floor (Intel IPsec-MB called directly) next to keycast's ESP
// encapsulation and decapsulation at the same payload sizes. The difference
// between the two is keycast's per-packet overhead outside the crypto.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "common/esp.hpp"

using namespace keycast;

namespace {

const KeyMaterial& material(Suite s) {
  static KeyMaterial k128 = KeyMaterial::generate(Suite::Aes128Gcm);
  static KeyMaterial k256 = KeyMaterial::generate(Suite::Aes256Gcm);
  return s == Suite::Aes256Gcm ? k256 : k128;
}

// The floor: one IPsec-MB GCM call on a buffer of the ESP ciphertext size
// for this payload (UDP header + payload + trailer), with the ESP AAD.
void BM_FloorSeal(benchmark::State& st, Suite s) {
  const std::size_t payload = st.range(0);
  const std::size_t clen = esp::kUdpLen + payload + esp::trailer_len(esp::kUdpLen + payload) - kIcvLen;
  Aead aead;
  AeadKey key(material(s));
  std::vector<uint8_t> buf(clen, 0xab);
  uint8_t aad[esp::kAadLen] = {}, tag[kIcvLen];
  uint64_t iv = 1;
  for (auto _ : st) {
    aead.seal(key, AeadOp{buf.data(), uint32_t(clen), iv++, aad, esp::kAadLen, tag});
    benchmark::DoNotOptimize(tag);
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * payload);
  st.SetItemsProcessed(st.iterations());
}

// The same call with the data where it sits in a frame: kCipherOffset (50)
// bytes after a cache-line boundary (the floor's buffer is aligned).
void BM_FloorSealFrameOffset(benchmark::State& st, Suite s) {
  const std::size_t payload = st.range(0);
  const std::size_t clen = esp::kUdpLen + payload + esp::trailer_len(esp::kUdpLen + payload) - kIcvLen;
  Aead aead;
  AeadKey key(material(s));
  alignas(64) static uint8_t frame[4096];
  uint8_t* buf = frame + esp::kCipherOffset;
  std::memset(buf, 0xab, clen);
  uint8_t aad[esp::kAadLen] = {}, tag[kIcvLen];
  uint64_t iv = 1;
  for (auto _ : st) {
    aead.seal(key, AeadOp{buf, uint32_t(clen), iv++, aad, esp::kAadLen, tag});
    benchmark::DoNotOptimize(tag);
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * payload);
  st.SetItemsProcessed(st.iterations());
}

void BM_FloorOpen(benchmark::State& st, Suite s) {
  const std::size_t payload = st.range(0);
  const std::size_t clen = esp::kUdpLen + payload + esp::trailer_len(esp::kUdpLen + payload) - kIcvLen;
  Aead aead;
  AeadKey key(material(s));
  std::vector<uint8_t> buf(clen, 0xab);
  uint8_t aad[esp::kAadLen] = {}, tag[kIcvLen] = {};
  for (auto _ : st) {
    bool ok = aead.open(key, AeadOp{buf.data(), uint32_t(clen), 1, aad, esp::kAadLen, tag});
    benchmark::DoNotOptimize(ok);
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * payload);
  st.SetItemsProcessed(st.iterations());
}

// Full ESP build: headers from the template, trailer, seal.
void BM_EspEncap(benchmark::State& st, Suite s) {
  const std::size_t payload = st.range(0);
  Aead aead;
  AeadKey key(material(s));
  esp::Flow f;
  f.src_ip = 0x0a000001;
  f.group_ip = 0xef000001;
  auto t = esp::make_template(f);
  std::vector<uint8_t> frame(esp::frame_len(payload));
  uint64_t seq = 1;
  for (auto _ : st) {
    std::size_t n = esp::encap(aead, key, t, 0x1000, seq++, esp::kNextUdp, frame.data(),
                               esp::kUdpLen + payload, frame.size());
    benchmark::DoNotOptimize(n);
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * payload);
  st.SetItemsProcessed(st.iterations());
}

// Full ESP receive: parse, verify, decipher, trailer checks. Each iteration
// restores the ciphertext first (a memcpy of the frame), reported separately
// as BM_FrameCopy so it can be subtracted.
void BM_EspDecap(benchmark::State& st, Suite s) {
  const std::size_t payload = st.range(0);
  Aead aead;
  AeadKey key(material(s));
  esp::Flow f;
  f.src_ip = 0x0a000001;
  f.group_ip = 0xef000001;
  auto t = esp::make_template(f);
  std::vector<uint8_t> pristine(esp::frame_len(payload)), frame;
  esp::encap(aead, key, t, 0x1000, 7, esp::kNextUdp, pristine.data(), esp::kUdpLen + payload,
             pristine.size());
  frame = pristine;
  for (auto _ : st) {
    std::memcpy(frame.data(), pristine.data(), frame.size());
    esp::Parsed p;
    esp::Opened o;
    Drop d = esp::parse(frame.data(), frame.size(), p);
    if (d == Drop::None) d = esp::decap(aead, key, p, o);
    if (d != Drop::None) st.SkipWithError("decap failed");
    benchmark::DoNotOptimize(o);
  }
  st.SetBytesProcessed(int64_t(st.iterations()) * payload);
  st.SetItemsProcessed(st.iterations());
}

void BM_FrameCopy(benchmark::State& st) {
  std::vector<uint8_t> a(esp::frame_len(st.range(0))), b(a.size());
  for (auto _ : st) {
    std::memcpy(b.data(), a.data(), a.size());
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int n : {64, 256, 512, 1024, 1400}) b->Arg(n);
}

}  // namespace

BENCHMARK_CAPTURE(BM_FloorSeal, aes128gcm, Suite::Aes128Gcm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_FloorSealFrameOffset, aes128gcm, Suite::Aes128Gcm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_EspEncap, aes128gcm, Suite::Aes128Gcm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_FloorOpen, aes128gcm, Suite::Aes128Gcm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_EspDecap, aes128gcm, Suite::Aes128Gcm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_FloorSeal, aes256gcm, Suite::Aes256Gcm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_EspEncap, aes256gcm, Suite::Aes256Gcm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_FloorOpen, aes256gcm, Suite::Aes256Gcm)->Apply(sizes);
BENCHMARK_CAPTURE(BM_EspDecap, aes256gcm, Suite::Aes256Gcm)->Apply(sizes);
BENCHMARK(BM_FrameCopy)->Apply(sizes);

BENCHMARK_MAIN();

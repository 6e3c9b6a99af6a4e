#include "keyplane/tls.hpp"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <ctime>
#include <sstream>
#include <stdexcept>

namespace keycast::kp {

namespace ssl = boost::asio::ssl;

namespace {

void load_common(ssl::context& ctx, const TlsFiles& f, bool need_cert) {
  SSL_CTX* c = ctx.native_handle();
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set_num_tickets(c, 0);  // no session tickets: every connection authenticates fully
  ctx.set_options(ssl::context::no_compression);
  if (f.ca.empty()) throw std::runtime_error("--tls-ca: a CA certificate file is required");
  boost::system::error_code ec;
  ctx.load_verify_file(f.ca, ec);
  if (ec) throw std::runtime_error("--tls-ca " + f.ca + ": cannot load CA (" + ec.message() + ")");
  if (!f.crl.empty()) {
    // Revocation: the peer's certificate is checked against the CA's CRL
    // (leaf only; the file must hold a CRL from the issuing CA, else every
    // peer fails with "unable to get certificate CRL"). Loaded once, at start.
    X509_STORE* store = SSL_CTX_get_cert_store(c);
    X509_LOOKUP* lu = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    if (!lu || X509_load_crl_file(lu, f.crl.c_str(), X509_FILETYPE_PEM) <= 0)
      throw std::runtime_error("--tls-crl " + f.crl + ": cannot load a PEM CRL");
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  }
  if (need_cert || !f.cert.empty()) {
    if (f.cert.empty()) throw std::runtime_error("--tls-cert: a certificate file is required");
    if (f.key.empty()) throw std::runtime_error("--tls-key: a private key file is required");
    ctx.use_certificate_chain_file(f.cert, ec);
    if (ec) throw std::runtime_error("--tls-cert " + f.cert + ": cannot load (" + ec.message() + ")");
    ctx.use_private_key_file(f.key, ssl::context::pem, ec);
    if (ec) throw std::runtime_error("--tls-key " + f.key + ": cannot load (" + ec.message() + ")");
    if (SSL_CTX_check_private_key(c) != 1)
      throw std::runtime_error("--tls-key " + f.key + ": does not match --tls-cert " + f.cert);
  }
}

}  // namespace

std::shared_ptr<ssl::context> make_server_context(const TlsFiles& f) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  load_common(*ctx, f, true);
  ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  return ctx;
}

std::shared_ptr<ssl::context> make_client_context(const TlsFiles& f) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  load_common(*ctx, f, false);
  ctx->set_verify_mode(ssl::verify_peer);
  return ctx;
}

std::string PeerInfo::channels_text() const {
  if (all_channels) return "*";
  std::ostringstream o;
  bool first = true;
  for (auto c : channels) {
    if (!first) o << ',';
    o << c;
    first = false;
  }
  return o.str();
}

std::optional<std::pair<bool, std::set<uint32_t>>> parse_channel_list(const std::string& s) {
  if (s == "*") return std::make_pair(true, std::set<uint32_t>{});
  std::set<uint32_t> out;
  std::size_t pos = 0;
  if (s.empty()) return std::make_pair(false, out);
  while (pos <= s.size()) {
    std::size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    std::string item = s.substr(pos, comma - pos);
    if (item.empty() || item.size() > 10 || item.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    unsigned long long v = std::stoull(item);
    if (v > 0xffffffffULL) return std::nullopt;
    out.insert(uint32_t(v));
    pos = comma + 1;
  }
  return std::make_pair(false, out);
}

bool peer_still_valid(SSL* ssl, SSL_CTX* ctx) {
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (peer == nullptr) return false;
  X509_STORE_CTX* x = X509_STORE_CTX_new();
  if (x == nullptr) return false;
  bool ok = X509_STORE_CTX_init(x, SSL_CTX_get_cert_store(ctx), peer, SSL_get_peer_cert_chain(ssl)) == 1 &&
            X509_verify_cert(x) == 1;
  X509_STORE_CTX_free(x);
  return ok;
}

std::optional<PeerInfo> peer_info(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert || SSL_get_verify_result(ssl) != X509_V_OK) return std::nullopt;
  PeerInfo p;
  char cn[256] = {};
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  if (n <= 0) return std::nullopt;
  p.identity.assign(cn, std::size_t(n));
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  bool have_role = false;
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      GENERAL_NAME* g = sk_GENERAL_NAME_value(names, i);
      if (g->type != GEN_URI) continue;
      const ASN1_IA5STRING* u = g->d.uniformResourceIdentifier;
      std::string uri(reinterpret_cast<const char*>(ASN1_STRING_get0_data(u)),
                      std::size_t(ASN1_STRING_length(u)));
      if (uri.rfind("keycast:role=", 0) == 0) {
        auto r = parse_role(uri.substr(13));
        if (r && !have_role) {
          p.role = *r;
          have_role = true;
        }
      } else if (uri.rfind("keycast:channels=", 0) == 0) {
        auto c = parse_channel_list(uri.substr(17));
        if (c) {
          p.all_channels = p.all_channels || c->first;
          p.channels.insert(c->second.begin(), c->second.end());
        }
      }
    }
    GENERAL_NAMES_free(names);
  }
  if (!have_role) return std::nullopt;
  return p;
}

namespace {

std::optional<int64_t> not_after(const X509* x) {
  std::tm tm{};
  const ASN1_TIME* t = x ? X509_get0_notAfter(x) : nullptr;
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace

CertExpiry cert_expiry(SSL_CTX* ctx) {
  CertExpiry e;
  e.cert = not_after(SSL_CTX_get0_certificate(ctx));
  if (X509_STORE* store = SSL_CTX_get_cert_store(ctx)) {
    STACK_OF(X509_OBJECT)* objs = X509_STORE_get0_objects(store);
    for (int i = 0; i < sk_X509_OBJECT_num(objs); ++i) {
      auto t = not_after(X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i)));
      if (t) e.ca = e.ca ? std::min(*e.ca, *t) : *t;
    }
  }
  return e;
}

}  // namespace keycast::kp

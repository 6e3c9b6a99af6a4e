// TLS 1.3 contexts with mutual authentication, and the peer identity/role
// convention (docs/keyplane.md "Certificates and roles"):
//   subject CN                      -> identity (billing key)
//   SAN URI keycast:role=ROLE        -> master|slave|sender|client|admin
//   SAN URI keycast:channels=*|1,2   -> channels the certificate allows
// The server's own ACL (--acl) may narrow the channels further.
#pragma once
#include <utility>  // before Boost.Asio: Boost 1.74 with GCC 12 C++20 needs std::exchange
#include <boost/asio/ssl/context.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "keyplane/protocol.hpp"

namespace keycast::kp {

struct TlsFiles {
  std::string cert, key, ca;  // PEM paths; cert/key may be empty for a client (tests)
  std::string crl;            // optional PEM CRL(s) of the CA: revoked peers fail the handshake
};

// Both throw std::runtime_error naming the option (--tls-cert/--tls-key/--tls-ca/--tls-crl).
std::shared_ptr<boost::asio::ssl::context> make_server_context(const TlsFiles& f);
std::shared_ptr<boost::asio::ssl::context> make_client_context(const TlsFiles& f);

struct PeerInfo {
  std::string identity;  // CN
  Role role = Role::None;
  bool all_channels = false;
  std::set<uint32_t> channels;
  bool allows(uint32_t ch) const { return all_channels || channels.count(ch) != 0; }
  std::string channels_text() const;
};

// Parses "*" or "1,2,3"; nullopt on junk.
std::optional<std::pair<bool, std::set<uint32_t>>> parse_channel_list(const std::string& s);

// Role and channels from the verified peer certificate of an established SSL.
// nullopt when there is no certificate or it has no keycast role.
std::optional<PeerInfo> peer_info(SSL* ssl);
// Whether the peer certificate (and chain) an established connection presented
// still verifies against CTX's trust store: CA, CRL when set, validity dates.
// Used after the TLS files are reloaded (a new CRL must end open sessions too).
bool peer_still_valid(SSL* ssl, SSL_CTX* ctx);

// When the certificates a context holds stop being valid (notAfter, Unix
// seconds): its own certificate, and the earliest of its trusted CA
// certificates (the chain fails when any of them ends). nullopt: none loaded.
struct CertExpiry {
  std::optional<int64_t> cert, ca;
};
CertExpiry cert_expiry(SSL_CTX* ctx);

}  // namespace keycast::kp

#!/usr/bin/env bash
# make-certs.sh DIR — a test/lab PKI for keycast: a CA and one certificate per role.
#
# Role convention (docs/keyplane.md): each leaf certificate carries, in its
# subjectAltName, URIs
#     keycast:role=<master|slave|sender|client|admin>
#     keycast:channels=<*|ID,ID,...>          (which channels it may touch)
# The subject CN is the peer's identity (billing is per CN). OU repeats the role
# for humans. Keys are EC P-256 so the whole set takes well under a second.
#
# Files: DIR/ca.crt ca.key crl.pem, and NAME.crt NAME.key for
#   master slave slave2 slave3 sender client client2 admin
# Override what the client certificates may touch with KEYCAST_CLIENT_CHANNELS
# (default "1,2") and KEYCAST_CLIENT2_CHANNELS (default "2").
#
# make-certs.sh revoke DIR NAME — revoke DIR/NAME.crt and rewrite DIR/crl.pem,
# the CA's CRL for --tls-crl (keyd takes a new CRL on SIGHUP). DIR/crl.pem
# exists from the start, revoking nothing.
set -euo pipefail

ca_db() {  # the CA's revocation database, in DIR/.ca
  mkdir -p .ca
  touch .ca/index.txt
  [[ -f .ca/crlnumber ]] || echo 01 > .ca/crlnumber
  cat > .ca/ca.cnf <<CNF
[ca]
default_ca = keycast_ca
[keycast_ca]
database = .ca/index.txt
crlnumber = .ca/crlnumber
certificate = ca.crt
private_key = ca.key
default_md = sha256
default_crl_days = 30
CNF
}
gen_crl() {
  openssl ca -batch -config .ca/ca.cnf -gencrl -out crl.pem 2>/dev/null
  chmod 644 crl.pem
}

if [[ $# -eq 3 && $1 == revoke ]]; then
  cd "$2"
  name=$3
  [[ -f "$name.crt" ]] || { echo "$0: $2/$name.crt: no such certificate" >&2; exit 2; }
  ca_db
  openssl ca -batch -config .ca/ca.cnf -revoke "$name.crt" 2>/dev/null ||
    { echo "$0: cannot revoke $name (already revoked?)" >&2; exit 1; }
  gen_crl
  echo "revoked $name; CRL $(pwd)/crl.pem (reload keyd with SIGHUP)"
  exit 0
fi
if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR | $0 revoke DIR NAME" >&2
  exit 2
fi
dir=$1
mkdir -p "$dir"
cd "$dir"
umask 077
days=825
serverside="DNS.10 = localhost
IP.1 = 127.0.0.1
IP.2 = ::1"

openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=keycast-ca" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null

leaf() {  # name role channels [extra SAN lines]
  local name=$1 role=$2 chans=$3 extra=${4:-}
  openssl ecparam -name prime256v1 -genkey -noout -out "$name.key" 2>/dev/null
  openssl req -new -key "$name.key" -subj "/CN=$name/OU=$role/O=keycast" -out "$name.csr" 2>/dev/null
  cat > "$name.ext" <<EXT
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = @alt
[alt]
URI.1 = keycast:role=$role
URI.2 = keycast:channels=$chans
$extra
EXT
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

leaf master master '*' "$serverside"
leaf slave slave '*' "$serverside"
leaf slave2 slave '*' "$serverside"
leaf slave3 slave '*' "$serverside"
leaf sender sender '*'
leaf client client "${KEYCAST_CLIENT_CHANNELS:-1,2}"
leaf client2 client "${KEYCAST_CLIENT2_CHANNELS:-2}"
leaf admin admin '*'
rm -f ca.srl
ca_db
gen_crl
chmod 644 ./*.crt
chmod 600 ./*.key
echo "keycast certificates in $(pwd): ca master slave slave2 slave3 sender client client2 admin; crl.pem"

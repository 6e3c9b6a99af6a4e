#!/usr/bin/env bash
# make-bad-certs.sh DIR — certificates that must be refused, issued by the CA
# that scripts/make-certs.sh made in DIR (ca.crt, ca.key):
#   expired.crt/key   role client, channels *, valid 2020-01-01 .. 2020-02-01
#   revoked.crt/key   role client, channels *, currently valid, revoked in crl.pem
#   crl.pem           the CA's CRL (revokes revoked.crt only)
#   crl-empty.pem     the CA's CRL revoking nothing
set -euo pipefail
dir=${1:?usage: make-bad-certs.sh DIR}
cd "$dir"
[ -f ca.crt ] && [ -f ca.key ] || { echo "make-bad-certs.sh: run make-certs.sh $dir first" >&2; exit 1; }
umask 077
ca=$(mktemp -d "$dir/.ca.XXXXXX")
trap 'rm -rf "$ca"' EXIT
: > "$ca/index.txt"
echo 1000 > "$ca/serial"
cat > "$ca/ca.cnf" <<CNF
[ca]
default_ca = kc
[kc]
database = $ca/index.txt
new_certs_dir = $ca
serial = $ca/serial
default_md = sha256
default_crl_days = 30
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
organizationalUnitName = optional
organizationName = optional
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = URI:keycast:role=client,URI:keycast:channels=*
CNF
leaf() {  # name [openssl ca date options]
  local name=$1; shift
  openssl ecparam -name prime256v1 -genkey -noout -out "$name.key" 2>/dev/null
  openssl req -new -key "$name.key" -subj "/CN=$name/OU=client/O=keycast" -out "$ca/$name.csr" 2>/dev/null
  openssl ca -batch -notext -config "$ca/ca.cnf" -extensions leaf -cert ca.crt -keyfile ca.key \
    -in "$ca/$name.csr" -out "$name.crt" "$@" 2>"$ca/err" || { cat "$ca/err" >&2; exit 1; }
}
leaf expired -startdate 20200101000000Z -enddate 20200201000000Z
leaf revoked -days 30
openssl ca -batch -config "$ca/ca.cnf" -cert ca.crt -keyfile ca.key -gencrl -out crl-empty.pem 2>/dev/null
openssl ca -batch -config "$ca/ca.cnf" -cert ca.crt -keyfile ca.key -revoke revoked.crt 2>/dev/null
openssl ca -batch -config "$ca/ca.cnf" -cert ca.crt -keyfile ca.key -gencrl -out crl.pem 2>/dev/null
chmod 644 expired.crt revoked.crt crl.pem crl-empty.pem
chmod 600 expired.key revoked.key

#!/usr/bin/env bash
# Makes throwaway certificates for TLS distribution tests with the openssl command:
#
#   integration/tls_certs.sh DIR
#
# DIR/ca.pem            a CA (its key: ca.key)
# DIR/node.pem, .key    a node certificate signed by it, for every node of a test cluster
# DIR/untrusted_ca.pem  a second CA nobody trusts
# DIR/rogue.pem, .key   a certificate signed by the untrusted CA
# DIR/ssl_dist.conf     the option file for `erl -proto_dist inet_tls -ssl_dist_optfile` and
#                       `ash-gen-server --proto-dist inet_tls --ssl-dist-optfile`: node.pem,
#                       trusting ca.pem, verify_peer both ways, client certificates required
#
# The node certificate is for 127.0.0.1 as an IP address (what rustls checks for a node named
# name@127.0.0.1) and as a DNS name (what OTP 25's ssl checks: it matches the host part of
# the node name as a DNS name), plus localhost. EC P-256 keys, valid for two days.
set -euo pipefail

dir="${1:?usage: tls_certs.sh DIR}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
cd "$dir"

ca() { # name
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1 (ash_gen_server tests)" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
}

leaf() { # name ca
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  cat >"$1.ext" <<EOF
subjectAltName=DNS:127.0.0.1,IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
EOF
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
    -out "$1.pem" -days 2 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca
ca untrusted_ca
leaf node ca
leaf rogue untrusted_ca
chmod 600 ./*.key

cat >ssl_dist.conf <<EOF
%% TLS distribution options (erl -ssl_dist_optfile, ash-gen-server --ssl-dist-optfile).
[{server, [{certfile, "$dir/node.pem"}, {keyfile, "$dir/node.key"},
           {cacertfile, "$dir/ca.pem"},
           {verify, verify_peer}, {fail_if_no_peer_cert, true},
           {secure_renegotiate, true}]},
 {client, [{certfile, "$dir/node.pem"}, {keyfile, "$dir/node.key"},
           {cacertfile, "$dir/ca.pem"},
           {verify, verify_peer},
           {secure_renegotiate, true}]}].
EOF

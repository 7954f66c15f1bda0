#!/usr/bin/env bash
# Extra seeds for fuzz_pem, made fresh (certificates and keys are never committed): a CA and a
# leaf with a SPIFFE ID, as PEM files in the work directory $1.
set -eu
d=$1
[ -e "$d/seed-leaf.pem" ] && exit 0
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -keyout "$t/ca.key" \
	-out "$t/ca.crt" -subj /CN=seed-ca -addext "subjectAltName=URI:spiffe://mesh.local" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$t/l.key" -out "$t/l.csr" \
	-subj /CN=api 2>/dev/null
printf 'subjectAltName=URI:spiffe://mesh.local/ns/default/dc/dc1/svc/api\n' >"$t/ext"
openssl x509 -req -in "$t/l.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial -days 1 \
	-extfile "$t/ext" -out "$t/l.crt" 2>/dev/null
cat "$t/l.crt" "$t/ca.crt" >"$d/seed-chain.pem"
cat "$t/l.crt" "$t/l.key" >"$d/seed-leaf.pem"

#!/usr/bin/env bash
# Writes the seed corpora (fuzz/corpus/TARGET/), which are committed: small real inputs the
# fuzzer starts from. Needs gcc, glibc's ldconfig and a built nix2gpu-init (`cargo build`).
# Every seed stays well under 100 KB; no NVIDIA file is used.
set -euo pipefail
cd "$(dirname "$0")/.."
init=${NIX2GPU_INIT_BIN:-target/debug/nix2gpu-init}
corpus=fuzz/corpus
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
rm -rf "$corpus"
mkdir -p "$corpus"/{config,elf,ldcache_decode,ldcache_roundtrip,ldcache_library,control_request,http_request,authorized_keys,accounts,notify}

# config: the fixtures and the Nix wrapper's golden outputs, YAML and JSON.
for file in fixtures/configs/valid/web-stack.{yaml,json} fixtures/configs/invalid/many-errors.yaml \
    fixtures/image/config.yaml images/tests/golden/*.json; do
    cp "$file" "$corpus/config/$(basename "$(dirname "$file")")-$(basename "$file")"
done
# Two files merged (a NUL separates them).
{ cat images/tests/golden/minimal.json; printf '\0'; cat fixtures/configs/valid/web-stack.yaml; } >"$corpus/config/merged"

# elf: the first byte picks the interpreter (bits 0-1) and the runpath (bits 2-3).
gcc -Os -s -o "$scratch/pie" fixtures/elf/hello.c
gcc -Os -s -no-pie -o "$scratch/no-pie" fixtures/elf/hello.c
gcc -Os -s -Wl,--enable-new-dtags,-rpath,/opt/lib -o "$scratch/runpath" fixtures/elf/hello.c
gcc -Os -s -Wl,--disable-new-dtags,-rpath,/opt/lib -o "$scratch/rpath" fixtures/elf/hello.c
"$init" set-interpreter --interpreter "/nix/store/$(printf '%.0sx' {1..80})/ld.so" --runpath /nix/lib \
    "$scratch/pie" --output "$scratch/appended" >/dev/null
# Tiny files too (2 KB: headers and tables, hardly any code), where most mutations hit what
# the reader and the rewriter look at.
echo 'void _start(void) { __asm__ volatile("mov $60, %eax\n xor %edi, %edi\n syscall"); }' >"$scratch/tiny.c"
tiny=(-Os -s -nostdlib -Wl,-z,noseparate-code,-z,norelro)
gcc "${tiny[@]}" -o "$scratch/tiny-note" "$scratch/tiny.c"
gcc "${tiny[@]}" -Wl,--build-id=none -o "$scratch/tiny-no-note" "$scratch/tiny.c"
gcc "${tiny[@]}" -Wl,--enable-new-dtags,-rpath,/opt/lib -o "$scratch/tiny-runpath" "$scratch/tiny.c"
seed() { { printf "\\x$1"; cat "$2"; } >"$corpus/elf/$3"; }
seed 03 "$scratch/tiny-note" tiny-note-appended
seed 08 "$scratch/tiny-no-note" tiny-no-note-runpath
seed 0e "$scratch/tiny-runpath" tiny-runpath-long
seed 00 "$scratch/pie" pie-short
seed 02 "$scratch/pie" pie-nix-loader
seed 0b "$scratch/no-pie" no-pie-long-runpath
seed 06 "$scratch/runpath" runpath-replaced
seed 0d "$scratch/rpath" rpath-converted
seed 0f "$scratch/appended" appended-grows
seed 01 /usr/bin/true true
seed 09 /lib/x86_64-linux-gnu/libdl.so.2 shared-library

# ld.so.cache: one by glibc's ldconfig, one by ours, for a directory of two small libraries.
# ldconfig runs chrooted (-r) into a root holding only them, so that the system's libraries
# stay out; this machine's own cache is a third, larger seed.
libs=$scratch/root/libs
mkdir -p "$libs" "$scratch/root/etc"
echo 'int answer(void) { return 42; }' >"$scratch/answer.c"
gcc -shared -fPIC -Os -s -Wl,-soname,libanswer.so.1 -o "$libs/libanswer.so.1.0" "$scratch/answer.c"
ln -s libanswer.so.1.0 "$libs/libanswer.so.1"
cp /lib/x86_64-linux-gnu/libdl.so.2 "$libs/"
echo /libs >"$scratch/root/etc/ld.so.conf"
ldconfig -X -r "$scratch/root"
cp "$scratch/root/etc/ld.so.cache" "$corpus/ldcache_decode/by-ldconfig"
"$init" ldcache --output "$corpus/ldcache_decode/by-nix2gpu-init" "$libs" >/dev/null
cp /etc/ld.so.cache "$corpus/ldcache_decode/debian-system"
cp "$libs/libanswer.so.1.0" "$corpus/ldcache_library/libanswer.so"
gcc -shared -fPIC -Os -s -nostdlib -Wl,-z,noseparate-code,-soname,libtiny.so.1 -o "$corpus/ldcache_library/libtiny.so" "$scratch/answer.c"
cp /lib/x86_64-linux-gnu/libdl.so.2 "$corpus/ldcache_library/libdl.so.2"
cp "$scratch/pie" "$corpus/ldcache_library/executable"
# The round trip's input is structured by `arbitrary`: any bytes are a start.
for n in 1 2 3; do head -c $((n * 256)) /dev/urandom >"$corpus/ldcache_roundtrip/random-$n"; done

# The control socket's requests.
printf '{"v":1,"cmd":"status"}\n' >"$corpus/control_request/status"
printf '{"v":1,"cmd":"logs","name":"web","lines":20,"follow":true}\n' >"$corpus/control_request/logs"
printf '{"v":1,"cmd":"restart","name":"web"}\n' >"$corpus/control_request/restart"
printf '{"v":1,"cmd":"reload","dry_run":true}\n' >"$corpus/control_request/reload"
printf '{"v":2,"cmd":"health"}\n' >"$corpus/control_request/other-version"

# The HTTP endpoint's requests.
printf 'GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n' >"$corpus/http_request/healthz"
printf 'GET /readyz HTTP/1.1\r\nHost: c\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n' >"$corpus/http_request/readyz"
printf 'GET /status?pretty=1 HTTP/1.1\r\nHost: c\r\n\r\n' >"$corpus/http_request/status"
printf 'HEAD /metrics HTTP/1.0\r\n\r\n' >"$corpus/http_request/metrics-head"
printf 'POST /status HTTP/1.1\r\nHost: c\r\nContent-Length: 5\r\n\r\nhello' >"$corpus/http_request/post"
printf 'GET /healthz HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' >"$corpus/http_request/chunked"

# authorized_keys: keys made by ssh-keygen, with and without options, and lines to skip.
cat >"$corpus/authorized_keys/keys" <<'KEYS'
ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXlZ4JTyusciyfCFySh1v/NeY236hj/vsruki9yqyRe test-ed25519
# a comment
ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOIt4/3YBi1eeGERyovdDG1EFTUGcaBSb7fy5VG6L4TXkUz2PMgIYi8k7jk6+/Vgkc5KZsnTXh3OBsB1m/OcciI= test-ecdsa
ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCzHyOMzh70rsCN41S0IMcCpA9UKdPCDfVVyT0q9c1n/aAKDHxHamdeIiDoYzKP1mJqgKVmA18bfXK/G+hUQm14Erjhvo/PPgw08uBKLkthAKpNYDgG8PnKPtlsNGBtXHwdUDH/Ap9+xKZxjlIA3g23qvkNYgXJLDem3gNTiPrtvw== test-rsa
KEYS
cat >"$corpus/authorized_keys/options" <<'KEYS'
command="sh -c \"echo a, b\"",restrict ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXlZ4JTyusciyfCFySh1v/NeY236hj/vsruki9yqyRe opts
from="127.0.0.1,10.0.0.0/8",no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPXlZ4JTyusciyfCFySh1v/NeY236hj/vsruki9yqyRe
-----BEGIN OPENSSH PRIVATE KEY-----
KEYS

# /etc/passwd and /etc/group.
cat fixtures/configs/etc/passwd fixtures/configs/etc/group >"$corpus/accounts/fixtures"
printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nvideo:x:44:alice,bob\n# comment\n' >"$corpus/accounts/debian"

# sd_notify datagrams.
printf 'READY=1\nSTATUS=serving on :8080\n' >"$corpus/notify/ready"
printf 'WATCHDOG=1' >"$corpus/notify/watchdog"
printf 'STOPPING=1\nMAINPID=42\nSTATUS=caf\xc3\xa9 \x1b[31m\n' >"$corpus/notify/stopping"
printf 'BARRIER=1\nREADY=0\n' >"$corpus/notify/barrier"
find "$corpus" -type f -exec chmod 644 {} +

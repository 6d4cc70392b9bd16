#!/usr/bin/env bash
# Assembles the Zync image's whole root file system: the binaries (stripped)
# and exactly the shared libraries they load (libc, libm, libgcc_s, libstdc++
# for libzmq, the dynamic loader), plus minimal /etc files. Nothing else: no
# shell, no package manager. Used by both image builds (docker/Dockerfile on
# a machine that can pull, scripts/cluster on one that cannot).
# Usage: docker/rootfs.sh BIN_DIR OUT_DIR
set -euo pipefail
bin=$1 out=$2
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp" "$out/data"
chmod 1777 "$out/tmp" "$out/data"
for b in zync-tracker zync-peer zync-web; do
  [[ -x "$bin/$b" ]] || continue
  cp "$bin/$b" "$out/usr/local/bin/$b"
  strip "$out/usr/local/bin/$b"
  ldd "$bin/$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done
done
echo 'hosts: files dns' > "$out/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/sbin/nologin\nzync:x:1000:1000:zync:/data:/sbin/nologin\n' > "$out/etc/passwd"
printf 'root:x:0:\nzync:x:1000:\n' > "$out/etc/group"

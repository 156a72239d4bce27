# Sourced by the Debian-kernel scripts here: `initramfs ROOT OUT.cpio.gz` packs the directory
# ROOT, after putting a static busybox in ROOT/bin and making ROOT/{dev,proc,sys}, into a
# gzipped newc archive. ROOT/init is the caller's.
busybox_static() { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }

initramfs() {
  local root=$1 archive=$2
  if ! busybox_static || ! command -v cpio >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static cpio >/dev/null
  fi
  busybox_static || { echo "initramfs: a static /bin/busybox is needed (busybox-static)" >&2; return 90; }
  mkdir -p "$root"/{bin,dev,proc,sys}
  cp /bin/busybox "$root/bin/"
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$archive"
}

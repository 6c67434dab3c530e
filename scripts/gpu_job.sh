#!/usr/bin/env bash
# Run GPU work longer than one device call allows (10 minutes) without paying a machine start per
# piece: start it as a job in its own process session (the device host keeps such processes while
# the machine stays warm), then follow it from later calls made back to back.
#
#   scripts/gpu_job.sh start NAME [WAIT_S] -- COMMAND...   start COMMAND as job NAME, then follow it
#   scripts/gpu_job.sh wait NAME [WAIT_S]                  follow job NAME until it ends or WAIT_S pass
#   scripts/gpu_job.sh then NAME [WAIT_S] -- COMMAND...    wait for whatever job runs, then start NAME
#
# A job runs COMMAND with OUT=/tmp/gpujobs/NAME/out and logs to /tmp/gpujobs/NAME/log; rc appears
# when it ends. Every follow copies the job's out/ and log into $OUT/NAME (so results come back
# even from a call that ends while the job still runs) and prints the new part of the log.
# Exit status of a follow: the job's rc if it ended, 3 if it is still running.
set -uo pipefail
cd "$(dirname "$0")/.."
JOBS=/tmp/gpujobs
mkdir -p "$JOBS"
action=${1:?usage: gpu_job.sh start|wait|then NAME [WAIT_S] [-- COMMAND...]}
name=${2:?job name}
shift 2
wait_s=540
if [ $# -gt 0 ] && [ "$1" != "--" ]; then wait_s=$1; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift

running_job() {  # name of a job that has started and not ended, if any
  for d in "$JOBS"/*/; do
    [ -f "$d/pid" ] && [ ! -f "$d/rc" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null && basename "$d" && return
  done
}

collect() {  # copy what the job has produced so far into this call's $OUT
  local dir=$JOBS/$1
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT/$1"
  cp "$dir/log" "$OUT/$1/log.txt" 2>/dev/null
  [ -d "$dir/out" ] && cp -r "$dir/out/." "$OUT/$1/" 2>/dev/null
  return 0
}

follow() {  # print the log as it grows until the job ends or the wait is over
  local dir=$JOBS/$1 deadline=$((SECONDS + $2)) shown=0
  [ -f "$dir/shown" ] && shown=$(cat "$dir/shown")
  while :; do
    if [ -f "$dir/log" ]; then
      local size; size=$(stat -c %s "$dir/log")
      if [ "$size" -gt "$shown" ]; then tail -c +$((shown + 1)) "$dir/log" | head -c $((size - shown)); shown=$size; echo "$shown" >"$dir/shown"; fi
    fi
    [ -f "$dir/rc" ] && break
    [ $SECONDS -ge $deadline ] && break
    sleep 5
  done
  collect "$1"
  if [ -f "$dir/rc" ]; then echo "[gpu_job] $1 ended with rc=$(cat "$dir/rc")"; return "$(cat "$dir/rc")"; fi
  echo "[gpu_job] $1 still running after this call's wait (follow it with: scripts/gpu_job.sh wait $1)"
  return 3
}

start() {
  local dir=$JOBS/$1; shift
  rm -rf "$dir"; mkdir -p "$dir/out"
  # setsid: a new process session, so the job outlives this call; rc is written when it ends.
  OUT=$dir/out setsid bash -c '"$@" >"$0/log" 2>&1; echo $? >"$0/rc"' "$dir" "$@" </dev/null &
  echo $! >"$dir/pid"
  echo "[gpu_job] started $(basename "$dir") (pid $(cat "$dir/pid")): $*"
}

case $action in
  start) [ $# -gt 0 ] || { echo "no command"; exit 2; }
         other=$(running_job); [ -z "$other" ] || { echo "job $other is still running; use 'then'"; exit 2; }
         start "$name" "$@"; follow "$name" "$wait_s" ;;
  then)  [ $# -gt 0 ] || { echo "no command"; exit 2; }
         t0=$SECONDS; other=$(running_job)
         if [ -n "$other" ]; then follow "$other" "$wait_s"; [ -z "$(running_job)" ] || exit 3; fi
         start "$name" "$@"; follow "$name" $((wait_s - (SECONDS - t0))) ;;
  wait)  [ -d "$JOBS/$name" ] || { echo "no job $name on this machine (was it given back?)"; exit 2; }
         follow "$name" "$wait_s" ;;
  *) echo "unknown action $action"; exit 2 ;;
esac

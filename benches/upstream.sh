# Sourced by benches/instructions and benches/syscalls: starts the origin
# of benches/compare's upstream mode MODE (default sendfile) on
# 127.0.0.1:18080, pinned to CPU 0, and appends its pid to `pids`.
#
#   sendfile, nosendfile: the mode's nginx config from the last
#     benches/compare run (target/bench-report/work/upstream-MODE.conf;
#     run compare with that mode once to have it)
#   chunked, split-write, delay-1ms, delay-10ms: examples/upstream with
#     the arguments benches/compare gives it (target/release/examples/upstream)
start_upstream() {
  local mode=${MODE:-sendfile} args=()
  case $mode in
    sendfile|nosendfile)
      local conf=$W/upstream-$mode.conf
      [ -f "$conf" ] || { echo "run benches/compare with --upstream-modes $mode first (no $conf)" >&2; exit 1; }
      taskset -c 0 nginx -c "$conf" -p "$W" >/dev/null 2>&1 & pids+=($!)
      sleep 0.5
      return ;;
    chunked) args=(--chunked --chunk-size 8192) ;;
    split-write) args=(--split --split-gap 100us) ;;
    delay-1ms) args=(--delay 1ms) ;;
    delay-10ms) args=(--delay 10ms) ;;
    *) echo "MODE must be sendfile, nosendfile, chunked, split-write, delay-1ms or delay-10ms" >&2; exit 2 ;;
  esac
  local up=$ROOT/target/release/examples/upstream
  [ -x "$up" ] || { echo "needs $up (cargo build --release --example upstream)" >&2; exit 1; }
  taskset -c 0 "$up" --listen 127.0.0.1:18080 --root "$W/www" "${args[@]}" >/dev/null 2>&1 & pids+=($!)
  for _ in $(seq 1 20); do
    curl -s -o /dev/null --max-time 1 http://127.0.0.1:18080/1k.bin && return
    sleep 0.25
  done
  echo "the $mode upstream did not start" >&2; exit 1
}

#!/usr/bin/env bash
# Many accounts the way sites script them today, one copier process per line of pairs.csv
# (header "src_user,src_pass,dst_user,dst_pass", then one pair per line, "," or ";"
# separated): the peers of `fastsync batch` in `python -m bench batch` (bench/batch.py).
#
#   batch.sh loop TOOL CSV WORKDIR [TOOL ARGS...]   every pair in turn (a `while read` loop)
#   batch.sh line TOOL CSV N WORKDIR [TOOL ARGS...] the pair on line N only (for GNU parallel)
#
# TOOL is fastsync (`fastsync sync -y -q`) or imapsync.  The servers come from the
# environment: BENCH_SRC_HOST, BENCH_SRC_PORT, BENCH_DST_HOST, BENCH_DST_PORT (plain IMAP),
# and BENCH_PYTHON runs fastsync (`$BENCH_PYTHON -m fastsync`).
#
# Passwords never reach a command line (anyone on the machine can read those): the CSV is
# read with the shell's own `read`, and written with the builtin printf into per-pair files
# readable only by us, which the tools take as fastsync's `pass_file` and imapsync's
# --passfile1/--passfile2.  GNU parallel is given line numbers, not the lines.
set -u

# One pair: write its password files (and fastsync's config), then run the tool on it.
# Runs in a subshell so that umask and cd stay local.
run_pair() (
  local tool=$1 n=$2 work=$3 src_user=$4 src_pass=$5 dst_user=$6 dst_pass=$7
  shift 7
  local dir="$work/pair-$n"
  umask 077
  mkdir -p "$dir" || exit 1
  printf '%s\n' "$src_pass" > "$dir/src.pass"
  printf '%s\n' "$dst_pass" > "$dir/dst.pass"
  case "$tool" in
    fastsync)
      printf 'src:\n  label: source\n  server: "%s:%s"\n  user: "%s"\n  pass_file: "%s"\n  tls: none\n' \
        "$BENCH_SRC_HOST" "$BENCH_SRC_PORT" "$src_user" "$dir/src.pass" > "$dir/fastsync.yaml"
      printf 'dst:\n  label: destination\n  server: "%s:%s"\n  user: "%s"\n  pass_file: "%s"\n  tls: none\n' \
        "$BENCH_DST_HOST" "$BENCH_DST_PORT" "$dst_user" "$dir/dst.pass" >> "$dir/fastsync.yaml"
      # Each pair its own state directory: the default (~/.cache/fastsync) would outlive the bench.
      "$BENCH_PYTHON" -m fastsync -c "$dir/fastsync.yaml" sync -y -q --state-dir "$dir/state" "$@"
      ;;
    imapsync)
      # --tmpdir per pair: imapsync keeps its pid file there, and parallel runs would share /tmp's.
      imapsync --host1 "$BENCH_SRC_HOST" --port1 "$BENCH_SRC_PORT" --user1 "$src_user" --passfile1 "$dir/src.pass" \
        --host2 "$BENCH_DST_HOST" --port2 "$BENCH_DST_PORT" --user2 "$dst_user" --passfile2 "$dir/dst.pass" \
        --tmpdir "$dir" "$@"
      ;;
    *)
      echo "batch.sh: unknown tool $tool" >&2
      exit 2
      ;;
  esac
)

# Split one CSV line into the four fields and run the pair ("," or ";", a CR from a
# file written on Windows dropped).
run_line() {
  local tool=$1 n=$2 work=$3 text=$4
  shift 4
  local src_user src_pass dst_user dst_pass _rest
  IFS=',;' read -r src_user src_pass dst_user dst_pass _rest <<< "${text%$'\r'}"
  run_pair "$tool" "$n" "$work" "$src_user" "$src_pass" "$dst_user" "$dst_pass" "$@"
}

mode=${1:-}
case "$mode" in
  loop)
    tool=$2 csv=$3 work=$4
    shift 4
    status=0 n=0
    while IFS= read -r text || [ -n "$text" ]; do
      n=$((n + 1))
      [ "$n" -eq 1 ] && continue  # the header
      [ -z "${text%$'\r'}" ] && continue
      run_line "$tool" "$n" "$work" "$text" "$@" < /dev/null || status=1
    done < "$csv"
    exit "$status"
    ;;
  line)
    tool=$2 csv=$3 want=$4 work=$5
    shift 5
    n=0
    while IFS= read -r text || [ -n "$text" ]; do
      n=$((n + 1))
      if [ "$n" -eq "$want" ]; then
        run_line "$tool" "$n" "$work" "$text" "$@" < /dev/null
        exit $?
      fi
    done < "$csv"
    echo "batch.sh: $csv has no line $want" >&2
    exit 2
    ;;
  *)
    echo "usage: batch.sh loop TOOL CSV WORKDIR [ARGS...] | batch.sh line TOOL CSV N WORKDIR [ARGS...]" >&2
    exit 2
    ;;
esac

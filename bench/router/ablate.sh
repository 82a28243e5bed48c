#!/usr/bin/env bash
# Ablations of the router/guard features: leave-one-source-out evaluation
# (msoa router eval) for each configuration, one line each: mean accuracy,
# accuracy per source, guard recall per harmful source and false-positive
# rate per benign source at the threshold eval picks.
# Usage: bench/router/ablate.sh [MSOA_BINARY] [DATA_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
msoa=${1:-$root/build/msoa}
data=${2:-$root/../shared/data}
configs=(
  "--features unigram,bigram"                       # the trap: word n-grams only
  "--features unigram,bigram,hand,style"            # n-grams + every hand feature
  "--features embed"                                # mean word vector only
  "--features embed,hand"
  "--features embed,hand,proto"
  "--features hand,proto,cluster"
  ""                                                # default: embed,hand,proto,cluster
  "--features embed,hand,proto,cluster,style"       # length/lines/... allowed
  "--features embed,hand,proto,cluster,unigram"
  "--features embed,hand,proto,cluster,mil"         # max-pooled guard
  "--sif 300"                                       # frequent words weigh less
  "--no-augment"
  "--guard-balance 1"
  "--shrink 0"
)
for c in "${configs[@]}"; do
  # shellcheck disable=SC2086
  out=$("$msoa" router eval --data "$data" --extra "$root/models/data/benign-chat.jsonl" --seed 1 $c)
  mean=$(awk '/^mean accuracy/ {print $NF}' <<<"$out")
  per=$(awk 'NR>2 && $3 ~ /%$/ {printf "%s=%s ", $1, $3}' <<<"$out")
  guard=$(awk 'NR>2 && /recall|false positives/ {printf "%s=%s ", $1, $NF}' <<<"$out")
  thr=$(awk '/^guard threshold/ {print $NF}' <<<"$out")
  printf '%-46s mean %s | %s| guard@%s %s\n' "${c:-default}" "$mean" "$per" "$thr" "$guard"
done

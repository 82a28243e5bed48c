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
  "--features embed"                                # mean word vector only, linear
  "--features embed,hand"                           # + signs of code and mathematics
  "--features embed,hand,proto --proto-nn 0"        # + similarity to class prototypes
  "--features embed,hand,proto"                     # prototypes as lexicons of neighbours
  "--features embed,hand,proto,cluster"             # + clusters for the guard, no hidden layer
  ""                                                # default: + hidden layer (16 units)
  "--unstyle 0"                                     # sources' style left in the mean vector
  "--proto-nn 0"
  "--router-skip none"                              # the router reads word clusters too
  "--hidden 32"
  "--l2 0.01"
  "--features embed,hand,proto,cluster,hidden,style"   # length/lines/... allowed
  "--features embed,hand,proto,cluster,hidden,mil"     # max-pooled guard
  "--no-augment"
  "--guard-balance 1"
)
for c in "${configs[@]}"; do
  # shellcheck disable=SC2086
  out=$("$msoa" router eval --data "$data" --extra "$root/models/data/benign-chat.jsonl" --seed 1 $c)
  mean=$(awk '/^mean accuracy/ {print $NF}' <<<"$out")
  per=$(awk 'NR>2 && $3 ~ /%$/ {printf "%s=%s ", $1, $3}' <<<"$out")
  guard=$(awk 'NR>2 && /recall|false positives/ {printf "%s=%s ", $1, $NF}' <<<"$out")
  thr=$(awk '/^guard threshold/ {print $3}' <<<"$out")
  printf '%-46s mean %s | %s| guard@%s %s\n' "${c:-default}" "$mean" "$per" "$thr" "$guard"
done

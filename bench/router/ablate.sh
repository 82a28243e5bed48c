#!/usr/bin/env bash
# Ablations of the router/guard features: leave-one-source-out evaluation
# (msoa router eval, with the extra files of the default model) for each
# configuration, one line each: mean accuracy over the shared sources (and
# over all, our files included), accuracy per source, guard recall per
# harmful source and false-positive rate per benign source at the
# threshold eval picks. The last two lines leave our files out.
# Usage: bench/router/ablate.sh [MSOA_BINARY] [DATA_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
msoa=${1:-$root/build/msoa}
data=${2:-$root/../shared/data}
extras=(benign-chat jailbreak-ours reasoning-ours math-ours code-ours language-ours harmful-ours)
configs=(
  "--features unigram,bigram"                       # the trap: word n-grams only
  "--features embed"                                # mean word vector only, linear
  "--features embed,hand"                           # + signs of code and mathematics
  "--features embed,hand,proto --proto-nn 0"        # + similarity to class prototypes
  "--features embed,hand,proto"                     # prototypes as lexicons of neighbours
  ""                                                # default: + hidden layer (16 units)
  "--unstyle 0"                                     # sources' style left in the mean vector
  "--proto-nn 0"
  "--hidden 32"
  "--balance 1 --word-drop 0"                       # session 4's router: class weights, no word dropout
  "--word-drop 0"                                   # logit adjustment without word dropout
  "--balance 1"                                     # word dropout with class weights
  "--guard-skip none"                               # the guard reads the mean vector too
  "--features embed,hand,proto,cluster,hidden --guard-skip none"   # the previous guard
  "--guard-skip embed"                              # the guard reads the prototypes' similarity too
  "--harm-nn 0.7"                                   # more GloVe neighbours of the harmful seeds
  "--l2-guard 1e-4"                                 # the guard's previous L2
  "--guard-nn 0.5 --harm-nn 0.5"                    # wider harmful lexicon
  "--guard-nn 0.6 --harm-nn 0.6"
  "--guard-epochs 12"
  "--no-augment"
  "--guard-balance 1"
  "--features embed,hand,proto,hidden,mil"          # + the guard's learnt word score (raise-only)
  "--seed 2"
)
run() {   # $1: extra files (names under models/data), then options
  local ex=() f
  for f in $1; do ex+=(--extra "$root/models/data/$f.jsonl"); done
  shift
  "$msoa" router eval --data "$data" "${ex[@]}" "$@"
}
line() {   # $1: label, $2: eval output
  local out=$2 mean all per guard thr
  mean=$(awk '/^mean accuracy over the --data/ {print $NF}' <<<"$out")
  all=$(awk '/^mean accuracy over sources/ {print $NF}' <<<"$out")
  per=$(awk 'NR>2 && $3 ~ /%$/ {printf "%s=%s ", $1, $3}' <<<"$out")
  guard=$(awk 'NR>2 && /recall|false positives/ {printf "%s=%s ", $1, $NF}' <<<"$out")
  thr=$(awk '/^guard threshold/ {print $3}' <<<"$out")
  printf '%-46s mean %s (all %s) | %s| guard@%s %s\n' "$1" "$mean" "$all" "$per" "$thr" "$guard"
}
for c in "${configs[@]}"; do
  # shellcheck disable=SC2086
  line "${c:-default}" "$(run "${extras[*]}" --seed 1 $c)"
done
line "without harmful-ours" "$(run "${extras[*]/harmful-ours/}" --seed 1)"
line "only benign-chat (none of our prompt sets)" "$(run benign-chat --seed 1)"
line "no extra file" "$(run "" --seed 1)"

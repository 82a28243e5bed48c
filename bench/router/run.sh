#!/usr/bin/env bash
# Builds and runs the router benchmark (bench_router.c) against the route
# library of a release build. Usage: bench/router/run.sh [N]
# Env: BUILD (build dir, default build-bench), MODEL, DATA.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$root/build-bench}
model=${MODEL:-$root/models/router.msoa}
data=${DATA:-$root/../shared/data}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
make -C "$build" -j2 msoa_route msoa_base >/dev/null
gcc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$root/src" "$root/bench/router/bench_router.c" \
    "$build/libmsoa_route.a" "$build/libmsoa_base.a" -lcjson -lm -o "$build/bench_router"
exec "$build/bench_router" "$model" "$data" "${1:-200000}"

#!/usr/bin/env bash
# The many-core figures, each part one command of under 10 minutes on a
# 16-core machine, from stripped binaries built elsewhere:
#
#   bash comparison/many-cores.sh build    # here: target/many-cores/{quic_shards,peers}
#   bash comparison/many-cores.sh quic     # there: the sharded QUIC server, N = 1, 2, 4, 8
#   bash comparison/many-cores.sh rings    # there: the byte rings, P = 1, 2, 4, 8, 15
#
# `build` adds Aeron's C ring to `rings` when AERON_RB_DIR names a built
# copy (BENCHMARKS.md, "Aeron's C ring"). Extra arguments after `quic` go
# to quic_shards (later flags win: `quic --coalesce-us 300` runs the
# listener rows with receive coalescing); `rings` takes the peer bench's
# PEERS_* variables. Run from the repository root.
set -euo pipefail

out=target/many-cores

case "${1:-}" in
build)
    cargo build --release -p mpring-comparison --example quic_shards
    # The bench binary's path is the last one cargo prints.
    peers=$(cargo bench -p mpring-comparison --bench peers --no-run 2>&1 |
        sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -n 1)
    mkdir -p "$out"
    cp target/release/examples/quic_shards "$peers" "$out"/
    mv "$out/$(basename "$peers")" "$out/peers"
    strip "$out/quic_shards" "$out/peers"
    ls -l "$out"
    ;;
quic)
    shift
    nproc
    # 256 connections from 6 client threads, every configuration at every
    # shard count; 3 rounds keep it under 10 minutes.
    "$out/quic_shards" --connections 256 --client-threads 6 --shards 1,2,4,8 \
        --configs quinn,quinn-n,ring,naive,cbpf,sharded,in-shards \
        --per-socket 1,8 --rounds 3 "$@"
    ;;
rings)
    nproc
    # Light eager and heavy consumers, 64 B and 1,350 B, mpring against
    # the other byte rings and the slot hand-off floor.
    PEERS_SCALE=${PEERS_SCALE:-4} PEERS_ROUNDS=${PEERS_ROUNDS:-3} \
        PEERS_PRODUCERS=${PEERS_PRODUCERS:-1,2,4,8,15} \
        PEERS_REGIMES=${PEERS_REGIMES:-exact-eager-b64,heavy-eager-b256} \
        "$out/peers" --bench \
        64B/mpring/ 64B/aeron_mpsc_rb/ 64B/nexus-logbuf/ "64B/slot hand-off" \
        1350B/mpring/ 1350B/aeron_mpsc_rb/ 1350B/nexus-logbuf/ "1350B/slot hand-off"
    ;;
*)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac

#!/bin/sh
# Bring the three-department compose deployment up on this machine's Docker engine, check it as
# users would, stop one node and check again, then tear everything down (also on failure).
#   deploy/compose-test.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
project=qianlian-compose-test-$$
net=${project}_default
out=$(mktemp -d)
# The CLI in the image runs as user 65532 and writes the license it issues here.
chmod 0777 "$out"
compose() { docker-compose -p "$project" -f "$here/compose.yaml" "$@"; }
cleanup() {
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$out"
}
trap cleanup EXIT INT TERM

# Run the CLI in a container on the deployment's network, with the PKI and an output folder.
q() {
    docker run --rm --network "$net" -v "${project}_pki:/pki:ro" -v "$out:/out" qianlian:latest "$@"
}
as() { # department, node, args…
    who=$1 node=$2
    shift 2
    q "$@" --ca /pki/ca.crt --cert "/pki/clients/$who.crt" --key "/pki/clients/$who.key" \
        --endpoint "https://$node:7400" --server-name "$node"
}

"$here/build-image.sh" >/dev/null
compose up -d
echo "waiting for the cluster and the sample data"
i=0
until [ "$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "${project}_seed_1" 2>/dev/null)" = "exited 0" ]; do
    i=$((i + 1))
    if [ $i -gt 120 ]; then
        compose logs --tail 30
        echo "the deployment did not come up within 120 s" >&2
        exit 1
    fi
    sleep 1
done

echo "the nodes run as user 65532, not root"
for n in 1 2 3; do
    uids=$(docker top "${project}_node-${n}_1" -eo pid,uid | awk 'NR > 1 { print $2 }' | sort -u)
    [ "$uids" = 65532 ] || { echo "node-$n runs as uid(s) '$uids', not 65532" >&2; exit 1; }
done

key=91520100000000000J
echo "cross-department read: housing reads market-regulation's enterprise registration"
q client get enterprise-registration $key --purpose permit-review \
    --ca /pki/ca.crt --cert /pki/clients/housing.crt --key /pki/clients/housing.key \
    --endpoint https://node-1:7400 --server-name node-1 | grep 贵州黔云数据科技有限公司 >/dev/null

echo "license issued at the market-regulation node, verified at the natural-resources node"
q license issue --type business-license --number GZ-COMPOSE-1 --holder-name 贵州黔云数据科技有限公司 \
    --holder-id $key --valid-days 30 --out /out/license.json \
    --ca /pki/ca.crt --cert /pki/clients/market-regulation.crt --key /pki/clients/market-regulation.key \
    --endpoint https://node-1:7400 --server-name node-1 >/dev/null
q license verify /out/license.json --ca /pki/ca.crt --endpoint https://node-2:7400 --server-name node-2 \
    | tail -1 | grep '^genuine' >/dev/null

echo "node-3 stopped: the cluster keeps serving"
compose stop node-3 >/dev/null
q license verify /out/license.json --ca /pki/ca.crt --endpoint https://node-2:7400 --server-name node-2 \
    | tail -1 | grep '^genuine' >/dev/null
q client get enterprise-registration $key --purpose permit-review \
    --ca /pki/ca.crt --cert /pki/clients/housing.crt --key /pki/clients/housing.key \
    --endpoint https://node-1:7400 --server-name node-1 | grep "notarized: log index" >/dev/null
echo "compose deployment: ok"

#!/bin/sh
# Print the two Secrets of the Kubernetes deployment, from a PKI folder written by
# `qianlian pki init` (written here first when the folder has no CA yet):
#   qianlian-pki       what the nodes mount at /pki: the CA certificate, node-N.crt|key,
#                      node-N.note.key|pub, node-N.license.key (the license key of the
#                      department node N serves), departments.toml, subject.key
#   qianlian-operator  ca.crt, ops.crt|key: the operator certificate, for the cluster-init Job
#
#   deploy/k8s/pki-secret.sh ~/qianlian-pki [NAMESPACE] | kubectl apply -f -
#
# Keys never enter the repository: keep PKI_DIR outside it, and ca.key (never put in a Secret)
# offline. Node certificates name the pods' DNS names in NAMESPACE (default qianlian), the
# client Service's names, and localhost. QIANLIAN_BIN names the binary (default: qianlian).
set -eu
pki=${1:?usage: pki-secret.sh PKI_DIR [NAMESPACE]}
ns=${2:-qianlian}
q=${QIANLIAN_BIN:-qianlian}
# Department served by node-1, node-2, node-3 (pods qianlian-0, -1, -2).
depts="market-regulation natural-resources housing"

if [ ! -e "$pki/ca.crt" ]; then
    set -- --out "$pki" --trust-domain gov.example --inspector audit-office --operator ops \
        --node node-1 --node node-2 --node node-3 \
        --name market-regulation=贵州省市场监督管理局 --name natural-resources=贵州省自然资源厅 \
        --name housing=贵州省住房和城乡建设厅
    for d in $depts; do
        set -- "$@" --dept "$d"
    done
    for suffix in "" ".$ns" ".$ns.svc" ".$ns.svc.cluster.local"; do
        for i in 0 1 2; do
            set -- "$@" --host "qianlian-$i.qianlian-peers$suffix"
        done
        set -- "$@" --host "qianlian$suffix"
    done
    "$q" pki init "$@" >&2
fi

need() {
    [ -r "$1" ] || { echo "pki-secret.sh: $1 is missing; is $pki a folder from \`qianlian pki init\`?" >&2; exit 1; }
}
entry() { # name file
    need "$2"
    printf '  %s: %s\n' "$1" "$(base64 < "$2" | tr -d '\n')"
}
header() { # name
    cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: $1
  namespace: $ns
  labels:
    app.kubernetes.io/part-of: qianlian
type: Opaque
data:
YAML
}

header qianlian-pki
entry ca.crt "$pki/ca.crt"
i=1
for d in $depts; do
    for f in crt key note.key note.pub; do
        entry "node-$i.$f" "$pki/nodes/node-$i.$f"
    done
    entry "node-$i.license.key" "$pki/departments/$d.license.key"
    i=$((i + 1))
done
entry departments.toml "$pki/departments.toml"
entry subject.key "$pki/subject.key"
echo ---
header qianlian-operator
entry ca.crt "$pki/ca.crt"
entry ops.crt "$pki/clients/ops.crt"
entry ops.key "$pki/clients/ops.key"

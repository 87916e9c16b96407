#!/bin/sh
# Builds a real etcd and kube-apiserver from their Go modules into $TOOLS (once; later runs
# find the binaries and return at once). `go install` refuses both modules (their go.mod has
# replace directives), so each is built from a small wrapper module that requires it; the
# recipe is /work/shared/recipes/real-components.md section 4.
#
#   TOOLS=~/.cache/kafka-klaviyo/tools tests/cluster/build_tools.sh
set -eu

ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
TOOLS=${TOOLS:-$HOME/.cache/kafka-klaviyo/tools}
# The module and build caches live beside the binaries so a cleaned GOPATH does not cost
# another 12 minutes.
export GOMODCACHE=${GOMODCACHE:-$TOOLS/go/mod}
export GOCACHE=${GOCACHE:-$TOOLS/go/build}
export GOFLAGS="-mod=mod -modcacherw"
BIN=$TOOLS/bin
WORK=$TOOLS/src
mkdir -p "$BIN" "$WORK"

etcd_bin=$BIN/etcd-$ETCD_VERSION
if [ ! -x "$etcd_bin" ]; then
    echo "building etcd $ETCD_VERSION into $BIN (about 1.5 min)"
    dir=$WORK/etcd-$ETCD_VERSION
    rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
    printf 'module local/etcdw\n\ngo 1.26.0\n' > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy
    go build -ldflags='-s -w' -o "$etcd_bin.part" go.etcd.io/etcd/server/v3
    mv "$etcd_bin.part" "$etcd_bin"
fi

kas_bin=$BIN/kube-apiserver-$KUBE_VERSION
if [ ! -x "$kas_bin" ]; then
    echo "building kube-apiserver $KUBE_VERSION into $BIN (about 11 min on 2 cores)"
    dir=$WORK/kube-apiserver-$KUBE_VERSION
    rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
    staging=v0.${KUBE_VERSION#v1.}
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    # k8s.io/kubernetes replaces its staging modules with ./staging paths; the wrapper maps each
    # to the published release of the same minor instead.
    {
        printf 'module local/kas\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
        sed -n '/^replace (/,/^)/p' "$gomod" | grep '=>' | awk -v v="$staging" '{print "\t"$1" => "$1" "v}'
        echo ')'
    } > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > tools.go
    go mod tidy -e
    minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
    # Without the version stamps /version says v0.0.0-master and charts with a kubeVersion
    # constraint refuse to install.
    go build -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
        -o "$kas_bin.part" k8s.io/kubernetes/cmd/kube-apiserver
    mv "$kas_bin.part" "$kas_bin"
fi
echo "etcd: $etcd_bin"
echo "kube-apiserver: $kas_bin"

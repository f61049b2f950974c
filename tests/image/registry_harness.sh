#!/usr/bin/env bash
# Test harness for the image component: builds OCI images from Debian's busybox-static with umoci,
# runs Debian's docker-registry on 127.0.0.1, and pushes images into it with skopeo.
#
#   registry_harness.sh build <dir>                       OCI layout <dir>/oci with tags:
#       single     busybox rootfs, one layer, Cmd/Env/WorkingDir set
#       multi      single + a layer with whiteouts, an opaque dir, a hardlink, a symlink + one more layer
#       amd, arm   single + a layer writing /etc/arch (arm: config architecture arm64)
#       multiarch  an OCI index of amd (linux/amd64) and arm (linux/arm64/v8)
#       unique     single + a layer of random bytes (for tampering tests)
#       entry      single with User 1000:1000 and Entrypoint ["/bin/echo", "entry"], Cmd ["from-image"]
#   registry_harness.sh start <dir> <port> [user pass]    registry in <dir> (pid in <dir>/pid), waits until up
#   registry_harness.sh start-token <dir> <port> <token-port> <user> <pass>
#                                                         registry with bearer-token auth; token_server.py as realm
#   registry_harness.sh start-proxy <dir> <port> <upstream-port> <fault> [count]
#                                                         fault_proxy.py in front of a registry (log <dir>/proxy.log)
#   registry_harness.sh stop <dir>
#   registry_harness.sh push <oci-dir> <tag> <port> <repo:tag> [all|v2s2|all,v2s2|-] [user:pass]
#                                                         v2s2: convert to Docker v2 schema 2 on the way
#                                                         (with all: an OCI index becomes a Docker manifest list)
set -euo pipefail

cmd=$1; shift
case "$cmd" in
build)
    w=$1
    mkdir -p "$w"; cd "$w"
    # Without root umoci can only unpack --rootless, and files cannot be given away: the images
    # then lack the non-root owners (the benchmark still runs; the tests need root for them).
    unpack=(umoci unpack); own() { chown "$@"; }
    if [[ $EUID -ne 0 ]]; then unpack+=(--rootless); own() { :; }; fi
    umoci init --layout oci
    umoci new --image oci:base
    "${unpack[@]}" --image oci:base bundle >/dev/null
    r=bundle/rootfs
    mkdir -p $r/bin $r/etc $r/data/keep $r/data/gone $r/opq/sub $r/root $r/tmp
    cp /bin/busybox $r/bin/busybox
    for t in sh cat ls echo test id env pwd; do ln -s busybox $r/bin/$t; done
    printf 'NAME="BoxLite Test Linux"\nID=boxlite-test\nVERSION_ID=1\n' > $r/etc/os-release
    echo keep > $r/data/keep/file; echo gone > $r/data/gone/file; echo old > $r/opq/old.txt
    echo old-sub > $r/opq/sub/x; echo 'root:x:0:0:root:/root:/bin/sh' > $r/etc/passwd
    chmod 0640 $r/data/keep/file; own 1000:1000 $r/data/keep/file; chmod 1777 $r/tmp
    printf '#!/bin/sh\nid -u\n' > $r/bin/suid-tool; chmod 4755 $r/bin/suid-tool
    mkdir -p $r/srv/private; own 1000:1000 $r/srv/private; chmod 0550 $r/srv/private
    ln -s ../data $r/srv/data-link; own -h 1000:1000 $r/srv/data-link
    umoci repack --image oci:base bundle >/dev/null
    umoci config --image oci:base --tag single --config.cmd /bin/sh --config.cmd -c --config.cmd 'cat /etc/os-release' \
        --config.env FOO=bar --config.env PATH=/bin --config.workingdir /data
    # A hand-made layer with OCI whiteouts (umoci repack never writes opaque markers).
    mkdir -p l2/data l2/opq l2/etc
    : > l2/data/.wh.gone; : > l2/opq/.wh..wh..opq; echo new > l2/opq/new.txt
    echo added > l2/data/added.txt; ln l2/data/added.txt l2/data/hardlink.txt
    ln -s ../etc/os-release l2/data/os-release-link
    tar -C l2 --numeric-owner --owner=0 --group=0 -cf layer2.tar data opq etc
    umoci raw add-layer --image oci:single --tag multi layer2.tar
    mkdir -p l3/etc; echo 'welcome' > l3/etc/motd
    tar -C l3 --numeric-owner --owner=0 --group=0 -cf layer3.tar etc
    umoci raw add-layer --image oci:multi layer3.tar
    for arch in amd arm; do
        mkdir -p la-$arch/etc; echo "${arch}64" > la-$arch/etc/arch
        tar -C la-$arch --numeric-owner --owner=0 --group=0 -cf layer-$arch.tar etc
        umoci raw add-layer --image oci:single --tag $arch layer-$arch.tar
    done
    umoci config --image oci:arm --architecture arm64
    mkdir -p lu/etc; head -c 300000 /dev/urandom > lu/etc/random.bin
    tar -C lu --numeric-owner --owner=0 --group=0 -cf layer-unique.tar etc
    umoci raw add-layer --image oci:single --tag unique layer-unique.tar
    umoci config --image oci:single --tag entry --config.user 1000:1000 --config.entrypoint /bin/echo \
        --config.entrypoint entry --config.cmd from-image
    python3 - <<'PY'
import hashlib, json
idx = json.load(open("oci/index.json"))
by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
entries = []
for tag, plat in (("amd", {"os": "linux", "architecture": "amd64"}),
                  ("arm", {"os": "linux", "architecture": "arm64", "variant": "v8"})):
    d = dict(by_tag[tag]); d.pop("annotations", None); d["platform"] = plat; entries.append(d)
body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": entries}).encode()
digest = hashlib.sha256(body).hexdigest()
open(f"oci/blobs/sha256/{digest}", "wb").write(body)
idx["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + digest,
                         "size": len(body), "annotations": {"org.opencontainers.image.ref.name": "multiarch"}})
json.dump(idx, open("oci/index.json", "w"))
PY
    rm -rf bundle l2 l3 la-amd la-arm lu
    ;;
start|start-token)
    dir=$1 port=$2
    mkdir -p "$dir/data"
    auth=""
    if [[ "$cmd" == start-token ]]; then
        tport=$3 user=$4 pass=$5
        openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 2 \
            -subj /CN=boxlite-test-token >/dev/null 2>&1
        python3 "$(dirname "$0")/token_server.py" "$tport" "$dir/key.pem" "$dir/cert.pem" boxlite-issuer \
            boxlite-registry "$user" "$pass" >"$dir/token.log" 2>&1 &
        echo $! > "$dir/token.pid"
        auth="auth:
  token:
    realm: http://127.0.0.1:$tport/token
    service: boxlite-registry
    issuer: boxlite-issuer
    rootcertbundle: $dir/cert.pem"
        for _ in $(seq 1 100); do
            curl -s -o /dev/null "http://127.0.0.1:$tport/token" && break
            sleep 0.05
        done
    elif [[ $# -ge 4 ]]; then
        htpasswd -Bbn "$3" "$4" > "$dir/htpasswd"
        auth="auth:
  htpasswd:
    realm: boxlite-test
    path: $dir/htpasswd"
    fi
    cat > "$dir/config.yml" <<CFG
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$auth
CFG
    docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
        if [[ "$code" == 200 || "$code" == 401 ]]; then exit 0; fi
        if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then cat "$dir/registry.log" >&2; exit 1; fi
        sleep 0.05
    done
    echo "registry on port $port did not come up" >&2; exit 1
    ;;
start-proxy)
    dir=$1 port=$2 upstream=$3 fault=$4 count=${5:-1}
    mkdir -p "$dir"
    python3 "$(dirname "$0")/fault_proxy.py" "$port" "$upstream" "$dir/proxy.log" "$fault" "$count" \
        >"$dir/proxy.err" 2>&1 &
    echo $! > "$dir/proxy.pid"
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
        if [[ "$code" == 200 || "$code" == 401 ]]; then : > "$dir/proxy.log"; exit 0; fi
        sleep 0.05
    done
    cat "$dir/proxy.err" >&2; echo "proxy on port $port did not come up" >&2; exit 1
    ;;
stop)
    dir=$1
    if [[ -f "$dir/proxy.pid" ]]; then
        kill "$(cat "$dir/proxy.pid")" 2>/dev/null || true
        rm -f "$dir/proxy.pid"
    fi
    if [[ -f "$dir/token.pid" ]]; then
        kill "$(cat "$dir/token.pid")" 2>/dev/null || true
        rm -f "$dir/token.pid"
    fi
    if [[ -f "$dir/pid" ]]; then
        pid=$(cat "$dir/pid"); kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
    ;;
push)
    oci=$1 tag=$2 port=$3 dest=$4; all=${5:-}; creds=${6:-}
    args=(--dest-tls-verify=false)
    [[ ",$all," == *,all,* ]] && args+=(--all)
    [[ ",$all," == *,v2s2,* ]] && args+=(--format v2s2)
    [[ -n "$creds" ]] && args+=(--dest-creds "$creds")
    skopeo copy -q "${args[@]}" "oci:$oci:$tag" "docker://127.0.0.1:$port/$dest" >/dev/null
    ;;
*)
    echo "unknown command $cmd" >&2; exit 2 ;;
esac

#!/usr/bin/env python3
"""What a kind cluster with cert-manager has and tests/e2e/lab.sh's control plane (etcd +
kube-apiserver with cert-manager's real CRDs, nothing else) lacks, played by the harness
against the real API:

  cert-manager   (its controller and cainjector mains are not on the Go module proxy, so
                 they cannot be built as our other test tools are: tests/e2e/README.md)
                 Issuers with spec.selfSigned get condition Ready. Certificates of such an
                 Issuer are issued with openssl as cert-manager's selfSigned issuer does:
                 a private key per spec.privateKey (a new one at every issuance with
                 rotationPolicy Always, else the Secret's key is kept), a certificate
                 signed by that key (subject spec.commonName or empty, SANs spec.dnsNames
                 and spec.ipAddresses, critical when the subject is empty, key usages and
                 extended key usages from spec.usages, a random serial, spec.duration,
                 default 2160h); Secret spec.secretName of type kubernetes.io/tls with
                 tls.crt, tls.key and ca.crt (= the certificate itself, as for selfSigned)
                 and cert-manager's annotations; the Certificate's status through its
                 status subresource: Ready, notBefore, notAfter, renewalTime (renewBefore,
                 default a third of the duration), revision. Re-issues when the Secret is
                 missing, was not issued for this Certificate or its SANs differ from the
                 spec, at renewalTime, or when the Certificate has condition Issuing=True
                 (what `cmctl renew` sets); the new status drops Issuing, as cert-manager's.
                 Other issuer kinds are left alone (logged once).
  cainjector     copies ca.crt of the Secret of the Certificate named by an APIService's
                 annotation `cert-manager.io/inject-ca-from: <namespace>/<name>` into its
                 spec.caBundle (only a Secret annotated as issued for that Certificate).
  ReplicaSet controller + scheduler
                 creates spec.replicas Pods from each Deployment's template (labels +
                 pod-template-hash) bound to the one Node; Deployment status.
  kubelet        Node NODE (InternalIP, daemonEndpoints port); mounts secret/configMap
                 volumes the way kubelet's atomic writer does (..data symlink swapped on
                 change, so renewals reach the pod); runs the container's args with the
                 binary under test (mount paths mapped to the volume dirs, plus
                 --bind-address=<pod IP> and a --kubeconfig holding a TokenRequest token
                 of the pod's ServiceAccount); runs the readinessProbe as written
                 (initialDelaySeconds, periodSeconds); writes pod status; serves
                 /containerLogs (so `kubectl logs` works through kube-apiserver) and a
                 node-only /metrics/resource over HTTPS with a certificate of the cluster CA.
  endpoints controllers
                 Endpoints and EndpointSlice of every selector Service from its Ready pods.

Usage: lab_sim.py --dir DIR --bin SERVER_BINARY --node-ip IP --kubelet-port PORT --pod-ips IP,IP
Runs until SIGTERM; stops the server processes it started. Logs to stdout.
Standard library only (openssl CLI for the certificates).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import http.server
import json
import os
import random
import re
import signal
import ssl
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

DIR: Path
API = ""
CTX: ssl.SSLContext
ENV: dict[str, str] = {}


def log(msg: str):
    print(f"[lab_sim {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- API client

def api(method: str, path: str, body=None, content_type="application/json"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=15) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        if e.code == 404 and method == "GET":
            return None
        raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:400]!r}") from None


def get(path):
    return api("GET", path)


def items(path):
    got = get(path)
    return got["items"] if got else []


def merge_patch(path, body):
    return api("PATCH", path, body, "application/merge-patch+json")


# ---------------------------------------------------------------- openssl

def openssl(*args, input_bytes=None) -> bytes:
    p = subprocess.run(["openssl", *args], input=input_bytes, capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {p.stderr.decode()[-400:]}")
    return p.stdout


def condition(obj, ctype):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


# ---------------------------------------------------------------- cert-manager + cainjector

def parse_duration(s: str) -> float:
    """Go duration (e.g. 2160h, 1h30m, 90s) -> seconds; ValueError when it is not one."""
    s = s.strip()
    parts = re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"not a Go duration: {s!r}")
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in parts)


def cert_dates(pem: bytes):
    out = openssl("x509", "-noout", "-startdate", "-enddate", "-dateopt", "iso_8601", input_bytes=pem).decode()
    f = "%Y-%m-%d %H:%M:%SZ"
    nb, na = (dt.datetime.strptime(re.search(rf"{k}=(\S+ \S+)", out).group(1), f).replace(tzinfo=dt.timezone.utc)
              for k in ("notBefore", "notAfter"))
    return nb, na


def cert_sans(pem: bytes) -> list[str]:
    try:
        out = openssl("x509", "-noout", "-ext", "subjectAltName", input_bytes=pem).decode()
    except RuntimeError:
        return []
    return sorted(re.findall(r"DNS:([^,\s]+)", out))


def new_key(spec) -> bytes:
    pk = spec.get("privateKey") or {}
    alg = pk.get("algorithm", "RSA")
    if alg == "ECDSA":
        curve = {256: "prime256v1", 384: "secp384r1", 521: "secp521r1"}[int(pk.get("size", 256))]
        return openssl("genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}")
    if alg == "Ed25519":
        return openssl("genpkey", "-algorithm", "ED25519")
    return openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{int(pk.get('size', 2048))}")


def issue_self_signed(cert: dict, old_key: bytes | None) -> tuple[bytes, bytes]:
    """Key and self-signed certificate for a Certificate spec, as cert-manager's selfSigned issuer."""
    spec, m = cert["spec"], cert["metadata"]
    work = DIR / "cert-manager" / f"{m['namespace']}_{m['name']}"
    work.mkdir(parents=True, exist_ok=True)
    rotate = ((spec.get("privateKey") or {}).get("rotationPolicy") or "Never") == "Always"
    key = old_key if old_key and not rotate else new_key(spec)
    (work / "tls.key").write_bytes(key)
    (work / "tls.key").chmod(0o600)
    usage_map = {"digital signature": "digitalSignature", "key encipherment": "keyEncipherment",
                 "cert sign": "keyCertSign", "crl sign": "cRLSign", "content commitment": "nonRepudiation",
                 "key agreement": "keyAgreement", "data encipherment": "dataEncipherment"}
    eku_map = {"server auth": "serverAuth", "client auth": "clientAuth", "code signing": "codeSigning",
               "email protection": "emailProtection", "timestamping": "timeStamping", "ocsp signing": "OCSPSigning"}
    usages = spec.get("usages") or ["digital signature", "key encipherment"]
    ku = [usage_map[u] for u in usages if u in usage_map]
    eku = [eku_map[u] for u in usages if u in eku_map]
    if spec.get("isCA") and "keyCertSign" not in ku:
        ku.append("keyCertSign")
    ext = [f"basicConstraints=critical,CA:{'TRUE' if spec.get('isCA') else 'FALSE'}"]
    if ku:
        ext.append("keyUsage=critical," + ",".join(ku))
    if eku:
        ext.append("extendedKeyUsage=" + ",".join(eku))
    sans = [f"DNS:{n}" for n in spec.get("dnsNames") or []] + [f"IP:{i}" for i in spec.get("ipAddresses") or []]
    if sans:  # critical when the subject is empty (RFC 5280 4.2.1.6), as cert-manager does
        ext.append("subjectAltName=" + ("" if spec.get("commonName") else "critical,") + ",".join(sans))
    # openssl can only count days; the Certificates issued here have whole-day durations
    days = max(1, int(-(-parse_duration(spec.get("duration") or "2160h") // 86400)))
    subj = f"/CN={spec['commonName']}" if spec.get("commonName") else "/"
    crt = openssl("req", "-x509", "-new", "-key", str(work / "tls.key"), "-subj", subj, "-days", str(days),
                  "-set_serial", str(random.getrandbits(63)), "-extensions", "v3", "-config", "/dev/stdin",
                  input_bytes=("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n" + "\n".join(ext) + "\n").encode())
    return key, crt


def write_cert_status(cert, crt: bytes, revision: int):
    m, spec = cert["metadata"], cert["spec"]
    nb, na = cert_dates(crt)
    renew_before = parse_duration(spec["renewBefore"]) if spec.get("renewBefore") else (na - nb).total_seconds() / 3
    renewal = na - dt.timedelta(seconds=renew_before)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    # a merge patch replaces the whole conditions list: Issuing goes, as after cert-manager's issuance
    merge_patch(f"/apis/cert-manager.io/v1/namespaces/{m['namespace']}/certificates/{m['name']}/status", {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                        "message": "Certificate is up to date and has not expired",
                        "lastTransitionTime": now_rfc3339(), "observedGeneration": m.get("generation", 1)}],
        "notBefore": nb.strftime(fmt), "notAfter": na.strftime(fmt), "renewalTime": renewal.strftime(fmt),
        "revision": revision}})


UNPLAYED: set = set()  # Certificates of issuers this harness does not play (logged once)


def reconcile_issuers():
    issuers = {}
    for iss in items("/apis/cert-manager.io/v1/issuers"):
        m = iss["metadata"]
        issuers[(m["namespace"], m["name"])] = iss
        ready = condition(iss, "Ready")
        if "selfSigned" in iss["spec"] and not (ready and ready.get("observedGeneration") == m.get("generation", 1)):
            merge_patch(f"/apis/cert-manager.io/v1/namespaces/{m['namespace']}/issuers/{m['name']}/status",
                        {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "IsReady",
                                                    "message": "", "lastTransitionTime": now_rfc3339(),
                                                    "observedGeneration": m.get("generation", 1)}]}})
            log(f"cert-manager: issuer {m['namespace']}/{m['name']} Ready (selfSigned)")
    return issuers


def reissue_reason(cert, secret) -> str | None:
    name, spec, st = cert["metadata"]["name"], cert["spec"], cert.get("status") or {}
    issuing = condition(cert, "Issuing")
    if secret is None:
        return "the Secret does not exist"
    if (secret["metadata"].get("annotations") or {}).get("cert-manager.io/certificate-name") != name:
        return "the Secret was not issued for this Certificate"
    if cert_sans(base64.b64decode((secret.get("data") or {}).get("tls.crt", ""))) != sorted(spec.get("dnsNames") or []):
        return "the Secret's DNS names differ from spec.dnsNames"
    if issuing and issuing.get("status") == "True":
        return f"Issuing=True ({issuing.get('reason')})"
    if st.get("renewalTime") and now_rfc3339() >= st["renewalTime"]:
        return "renewalTime reached"
    return None


def reconcile_certificates(issuers):
    certs = {}
    for cert in items("/apis/cert-manager.io/v1/certificates"):
        m, spec = cert["metadata"], cert["spec"]
        ns, name = m["namespace"], m["name"]
        certs[(ns, name)] = cert
        ref = spec.get("issuerRef") or {}
        iss = issuers.get((ns, ref.get("name"))) if ref.get("kind", "Issuer") == "Issuer" and \
            ref.get("group", "cert-manager.io") == "cert-manager.io" else None
        if not iss or "selfSigned" not in iss["spec"]:
            if (ns, name) not in UNPLAYED:
                UNPLAYED.add((ns, name))
                log(f"cert-manager: certificate {ns}/{name}: issuer {ref} is not a selfSigned Issuer; not played here")
            continue
        secret_path = f"/api/v1/namespaces/{ns}/secrets/{spec['secretName']}"
        secret = get(secret_path)
        st = cert.get("status") or {}
        why = reissue_reason(cert, secret)
        if why is None:
            ready = condition(cert, "Ready")
            if not ready or ready.get("observedGeneration") != m.get("generation"):
                write_cert_status(cert, base64.b64decode(secret["data"]["tls.crt"]), int(st.get("revision", 1)))
            continue
        old_key = None  # kept unless rotationPolicy is Always, only from a Secret issued for this Certificate
        if secret and (secret["metadata"].get("annotations") or {}).get("cert-manager.io/certificate-name") == name:
            old_key = base64.b64decode((secret.get("data") or {}).get("tls.key", "")) or None
        key, crt = issue_self_signed(cert, old_key)
        body = {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": spec["secretName"], "namespace": ns,
                         "labels": {"controller.cert-manager.io/fao": "true"},
                         "annotations": {"cert-manager.io/certificate-name": name,
                                         "cert-manager.io/issuer-name": ref["name"],
                                         "cert-manager.io/issuer-kind": ref.get("kind", "Issuer"),
                                         "cert-manager.io/issuer-group": ref.get("group", "cert-manager.io"),
                                         "cert-manager.io/alt-names": ",".join(spec.get("dnsNames") or []),
                                         "cert-manager.io/ip-sans": ",".join(spec.get("ipAddresses") or []),
                                         "cert-manager.io/uri-sans": ",".join(spec.get("uris") or []),
                                         "cert-manager.io/common-name": spec.get("commonName", "")}},
            "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode(),
                     "ca.crt": base64.b64encode(crt).decode()},
        }
        if secret is None:
            api("POST", f"/api/v1/namespaces/{ns}/secrets", body)
        else:
            body["metadata"]["resourceVersion"] = secret["metadata"]["resourceVersion"]
            api("PUT", secret_path, body)
        revision = int(st.get("revision", 0)) + 1
        write_cert_status(cert, crt, revision)
        serial = openssl("x509", "-noout", "-serial", input_bytes=crt).decode().strip()
        log(f"cert-manager: certificate {ns}/{name}: issued revision {revision} ({serial}) into Secret "
            f"{spec['secretName']} ({why})")
    return certs


def reconcile_cainjector(certs):
    for a in items("/apis/apiregistration.k8s.io/v1/apiservices"):
        src = (a["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
        if not src or "/" not in src:
            continue
        cert = certs.get(tuple(src.split("/", 1)))
        if not cert:
            continue
        secret = get(f"/api/v1/namespaces/{cert['metadata']['namespace']}/secrets/{cert['spec']['secretName']}")
        if not secret or (secret["metadata"].get("annotations") or {}).get("cert-manager.io/certificate-name") != \
                cert["metadata"]["name"]:
            continue
        ca = (secret.get("data") or {}).get("ca.crt")
        if ca and a["spec"].get("caBundle") != ca:
            merge_patch(f"/apis/apiregistration.k8s.io/v1/apiservices/{a['metadata']['name']}", {"spec": {"caBundle": ca}})
            log(f"cainjector: APIService {a['metadata']['name']} caBundle from Certificate {src}")


def reconcile_cert_manager():
    reconcile_cainjector(reconcile_certificates(reconcile_issuers()))


# ---------------------------------------------------------------- ReplicaSet controller + scheduler

def template_hash(tpl) -> str:
    return hashlib.sha256(json.dumps(tpl, sort_keys=True).encode()).hexdigest()[:10]


def reconcile_deployments():
    for d in items("/apis/apps/v1/deployments"):
        m = d["metadata"]
        ns = m["namespace"]
        tpl = d["spec"]["template"]
        h = template_hash(tpl)
        sel = ",".join(f"{k}={v}" for k, v in sorted(d["spec"]["selector"]["matchLabels"].items()))
        pods = [p for p in items(f"/api/v1/namespaces/{ns}/pods?labelSelector={urllib.parse.quote(sel)}")
                if not p["metadata"].get("deletionTimestamp")]
        want = d["spec"].get("replicas", 1)
        for _ in range(want - len(pods)):
            suffix = "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(5))
            labels = dict(tpl["metadata"].get("labels") or {}, **{"pod-template-hash": h})
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"{m['name']}-{h}-{suffix}", "namespace": ns, "labels": labels,
                                "annotations": tpl["metadata"].get("annotations") or {}},
                   "spec": dict(tpl["spec"], nodeName=NODE)}
            api("POST", f"/api/v1/namespaces/{ns}/pods", pod)
            log(f"deployment {ns}/{m['name']}: created pod {pod['metadata']['name']} on {NODE}")
        ready = sum(1 for p in pods if condition(p, "Ready") and condition(p, "Ready")["status"] == "True")
        st = {"observedGeneration": m.get("generation", 1), "replicas": len(pods), "readyReplicas": ready,
              "availableReplicas": ready, "updatedReplicas": len(pods)}
        if {k: (d.get("status") or {}).get(k) for k in st} != st:
            merge_patch(f"/apis/apps/v1/namespaces/{ns}/deployments/{m['name']}/status", {"status": st})


# ---------------------------------------------------------------- kubelet

NODE = "lab-worker"
NODE_IP = ""
KUBELET_PORT = 0
POD_IPS: list[str] = []
RUNNING: dict[str, dict] = {}  # pod uid -> {proc, ip, dir, pod, ready, next_probe}


def atomic_write(vol_dir: Path, files: dict[str, bytes]):
    """kubelet's AtomicWriter layout: ..<ts>/<files>, ..data -> ..<ts>, <file> -> ..data/<file>."""
    vol_dir.mkdir(parents=True, exist_ok=True)
    cur = vol_dir / "..data"
    if cur.is_symlink():
        old = vol_dir / os.readlink(cur)
        if all((old / k).is_file() and (old / k).read_bytes() == v for k, v in files.items()) and \
                sorted(p.name for p in old.iterdir()) == sorted(files):
            return False
    else:
        old = None
    ts = vol_dir / f"..{dt.datetime.now().strftime('%Y_%m_%d_%H_%M_%S.%f')}"
    ts.mkdir()
    for k, v in files.items():
        (ts / k).write_bytes(v)
    tmp = vol_dir / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(ts.name)
    os.rename(tmp, cur)
    for k in files:
        link = vol_dir / k
        if not link.is_symlink():
            link.symlink_to(f"..data/{k}")
    if old is not None and old.exists():
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    return True


def volume_files(ns, vol):
    """Files of a secret/configMap volume, or None while its object does not exist."""
    if "secret" in vol:
        obj = get(f"/api/v1/namespaces/{ns}/secrets/{vol['secret']['secretName']}")
        data = {k: base64.b64decode(v) for k, v in ((obj or {}).get("data") or {}).items()}
    elif "configMap" in vol:
        obj = get(f"/api/v1/namespaces/{ns}/configmaps/{vol['configMap']['name']}")
        data = {k: v.encode() for k, v in ((obj or {}).get("data") or {}).items()}
    else:
        return {}
    if obj is None:
        return None
    src = vol.get("secret") or vol.get("configMap")
    if src.get("items"):
        data = {i["path"]: data[i["key"]] for i in src["items"] if i["key"] in data}
    return data


def sync_volumes(pod, pdir: Path) -> bool:
    ns = pod["metadata"]["namespace"]
    for vol in pod["spec"].get("volumes") or []:
        d = pdir / "volumes" / vol["name"]
        if "emptyDir" in vol:
            d.mkdir(parents=True, exist_ok=True)
            continue
        files = volume_files(ns, vol)
        if files is None:
            return False
        if atomic_write(d, files):
            log(f"kubelet: pod {pod['metadata']['name']}: volume {vol['name']} written ({', '.join(sorted(files))})")
    return True


def container_args(pod, pdir: Path, ip: str, kubeconfig: Path) -> list[str]:
    c = pod["spec"]["containers"][0]
    mounts = sorted(c.get("volumeMounts") or [], key=lambda mnt: -len(mnt["mountPath"]))
    out = []
    for a in c.get("args") or []:
        for mnt in mounts:
            mp = mnt["mountPath"].rstrip("/") + "/"
            if mp in a:
                a = a.replace(mp, str(pdir / "volumes" / mnt["name"]) + "/")
                break
        out.append(a)
    return out + [f"--bind-address={ip}", f"--kubeconfig={kubeconfig}"]


def pod_kubeconfig(pod, pdir: Path) -> Path:
    ns, sa = pod["metadata"]["namespace"], pod["spec"].get("serviceAccountName", "default")
    tok = api("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
              {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": 7200}})["status"]["token"]
    kc = pdir / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": API, "certificate-authority-data":
                                                base64.b64encode(Path(ENV["KD_CA_CRT"]).read_bytes()).decode()}}],
        "users": [{"name": "u", "user": {"token": tok}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "current-context": "c"}))
    kc.chmod(0o600)
    return kc


def container_port(c, port):
    if isinstance(port, int):
        return port
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    raise RuntimeError(f"no container port named {port}")


def probe(c, ip) -> bool:
    pr = (c.get("readinessProbe") or {}).get("httpGet")
    if not pr:
        return True
    url = f"{pr.get('scheme', 'HTTP').lower()}://{ip}:{container_port(c, pr['port'])}{pr.get('path', '/')}"
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # as the kubelet's prober: no verification
    try:
        with urllib.request.urlopen(url, context=insecure, timeout=(c["readinessProbe"].get("timeoutSeconds", 1))) as r:
            return 200 <= r.status < 400
    except Exception:
        return False


def pod_status(pod, ip, started, ready, running=True, exit_code=None):
    c = pod["spec"]["containers"][0]
    t = now_rfc3339()
    conds = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
             {"type": "Initialized", "status": "True", "lastTransitionTime": started},
             {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": t},
             {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": t}]
    state = {"running": {"startedAt": started}} if running else \
        {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed", "finishedAt": t}}
    return {"status": {
        "phase": "Running" if running else "Failed", "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
        "podIP": ip, "podIPs": [{"ip": ip}], "startTime": started, "conditions": conds,
        "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": ready,
                               "started": running, "restartCount": 0, "state": state,
                               "containerID": f"harness://{RUNNING[pod['metadata']['uid']]['proc'].pid}"}]}}


def reconcile_kubelet():
    pods = [p for p in items("/api/v1/pods") if p["spec"].get("nodeName") == NODE]
    live = set()
    for pod in pods:
        m = pod["metadata"]
        uid = m["uid"]
        live.add(uid)
        pdir = DIR / "kubelet" / "pods" / uid
        r = RUNNING.get(uid)
        if r is None:
            if not sync_volumes(pod, pdir):
                continue  # ContainerCreating until the Secret exists (cert-manager)
            used = {x["ip"] for x in RUNNING.values()}
            free = [ip for ip in POD_IPS if ip not in used]
            if not free:
                log(f"kubelet: no free pod IP for {m['name']}")
                continue
            ip = free[0]
            args = container_args(pod, pdir, ip, pod_kubeconfig(pod, pdir))
            c = pod["spec"]["containers"][0]
            logf = DIR / "kubelet" / "logs" / f"{m['namespace']}_{m['name']}_{c['name']}.log"
            logf.parent.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ, NO_COLOR="1")
            for e in c.get("env") or []:
                if "value" in e:
                    env[e["name"]] = e["value"]
            out = open(logf, "ab")
            proc = subprocess.Popen([BIN, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
            (DIR / f"pod-{m['name']}.pid").write_text(str(proc.pid))
            started = now_rfc3339()
            rp = c.get("readinessProbe") or {}
            RUNNING[uid] = {"proc": proc, "ip": ip, "dir": pdir, "pod": pod, "ready": False, "started": started,
                            "log": logf, "next_probe": time.monotonic() + rp.get("initialDelaySeconds", 0)}
            log(f"kubelet: started pod {m['namespace']}/{m['name']} at {ip}: {BIN} {' '.join(args)}")
            merge_patch(f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}/status",
                        pod_status(pod, ip, started, False))
            continue
        sync_volumes(pod, pdir)  # renewed Secrets reach the running pod
        proc = r["proc"]
        if proc.poll() is not None:
            if r.get("exited") is None:
                r["exited"] = proc.returncode
                log(f"kubelet: pod {m['name']} exited with {proc.returncode}")
                merge_patch(f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}/status",
                            pod_status(pod, r["ip"], r["started"], False, running=False, exit_code=proc.returncode))
            continue
        c = pod["spec"]["containers"][0]
        if time.monotonic() >= r["next_probe"]:
            ok = probe(c, r["ip"])
            r["next_probe"] = time.monotonic() + (c.get("readinessProbe") or {}).get("periodSeconds", 10)
            if ok != r["ready"]:
                r["ready"] = ok
                log(f"kubelet: pod {m['name']} readiness probe: {'Ready' if ok else 'not ready'}")
                merge_patch(f"/api/v1/namespaces/{m['namespace']}/pods/{m['name']}/status",
                            pod_status(pod, r["ip"], r["started"], ok))
    for uid in list(RUNNING):
        if uid not in live:  # pod deleted: stop its process
            stop(RUNNING.pop(uid))


def stop(r):
    p = r["proc"]
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


# ---------------------------------------------------------------- endpoints controllers

def reconcile_endpoints():
    pods = [p for p in items("/api/v1/pods") if (p.get("status") or {}).get("podIP")]
    for svc in items("/api/v1/services"):
        sel = svc["spec"].get("selector")
        if not sel:
            continue
        m = svc["metadata"]
        ns = m["namespace"]
        ready = sorted((p for p in pods if p["metadata"]["namespace"] == ns
                        and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())
                        and (condition(p, "Ready") or {}).get("status") == "True"),
                       key=lambda p: p["status"]["podIP"])
        ports = []
        for sp in svc["spec"]["ports"] if ready else []:  # named target ports resolve through a pod
            tp = sp.get("targetPort", sp["port"])
            num = tp
            if isinstance(tp, str) and ready:
                num = container_port(ready[0]["spec"]["containers"][0], tp)
            p = {"name": sp.get("name", ""), "port": num, "protocol": sp.get("protocol", "TCP")}
            if sp.get("appProtocol"):
                p["appProtocol"] = sp["appProtocol"]
            ports.append(p)
        addrs = [{"ip": p["status"]["podIP"], "nodeName": NODE,
                  "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}}
                 for p in ready]
        subsets = [{"addresses": addrs, "ports": ports}] if addrs else []
        ep_path = f"/api/v1/namespaces/{ns}/endpoints/{m['name']}"
        ep = get(ep_path)
        body = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": m["name"], "namespace": ns,
                                                                      "labels": m.get("labels") or {}},
                "subsets": subsets}
        if ep is None:
            api("POST", f"/api/v1/namespaces/{ns}/endpoints", body)
        elif (ep.get("subsets") or []) != subsets:
            body["metadata"]["resourceVersion"] = ep["metadata"]["resourceVersion"]
            api("PUT", ep_path, body)
            log(f"endpoints {ns}/{m['name']}: {[a['ip'] for a in addrs]}")
        es_name = f"{m['name']}-lab"
        es_path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{es_name}"
        es = get(es_path)
        endpoints = [{"addresses": [a["ip"]], "conditions": {"ready": True, "serving": True, "terminating": False},
                      "nodeName": NODE, "targetRef": a["targetRef"]} for a in addrs]
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": es_name, "namespace": ns,
                             "labels": {"kubernetes.io/service-name": m["name"],
                                        "endpointslice.kubernetes.io/managed-by": "lab-sim.kubedojo.io"}},
                "endpoints": endpoints, "ports": ports}
        if es is None:
            api("POST", f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", body)
        elif (es.get("endpoints") or []) != endpoints or es.get("ports") != ports:
            body["metadata"]["resourceVersion"] = es["metadata"]["resourceVersion"]
            api("PUT", es_path, body)


# ---------------------------------------------------------------- the Node and its kubelet endpoint

class Kubelet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cpu = 100.0

    def log_message(self, fmt, *args):
        log("kubelet http: " + fmt % args)

    def do_GET(self):
        path, _, q = self.path.partition("?")
        query = dict(kv.split("=", 1) if "=" in kv else (kv, "") for kv in q.split("&") if kv)
        parts = path.strip("/").split("/")
        if parts[0] == "containerLogs" and len(parts) == 4:
            return self.logs(parts[1], parts[2], parts[3], query)
        if path == "/metrics/resource":
            Kubelet.cpu += 0.05
            ts = int(time.time() * 1000)
            body = ("# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n"
                    "# TYPE node_cpu_usage_seconds_total counter\n"
                    f"node_cpu_usage_seconds_total {Kubelet.cpu:.3f} {ts}\n"
                    "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n"
                    "# TYPE node_memory_working_set_bytes gauge\n"
                    f"node_memory_working_set_bytes 1.073741824e+09 {ts}\n").encode()
            return self.reply(200, body, "text/plain; version=0.0.4")
        if path == "/healthz":
            return self.reply(200, b"ok")
        self.reply(404, b"404 page not found\n")

    def reply(self, code, body: bytes, ctype="text/plain; charset=utf-8"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def logs(self, ns, pod, container, query):
        f = DIR / "kubelet" / "logs" / f"{ns}_{pod}_{container}.log"
        if not f.exists():
            return self.reply(404, f"container {container} of pod {ns}/{pod} not found\n".encode())
        data = f.read_bytes()
        if "tailLines" in query:
            n = int(query["tailLines"])
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        if query.get("follow") != "true":
            return self.reply(200, data)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        pos = f.stat().st_size
        try:
            self.chunk(data)
            while not STOP.is_set():
                time.sleep(0.2)
                size = f.stat().st_size
                if size > pos:
                    with open(f, "rb") as fh:
                        fh.seek(pos)
                        self.chunk(fh.read(size - pos))
                    pos = size
        except (BrokenPipeError, ConnectionResetError):
            pass

    def chunk(self, b: bytes):
        if b:
            self.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
            self.wfile.flush()


def start_kubelet_server():
    pki = DIR / "kubelet" / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = ENV["KD_CA_CRT"], str(Path(ENV["KD_PKI"]) / "ca.key")
    # a kubelet serving certificate signed by the cluster CA, as from a kubelet-serving CSR
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(pki / "kubelet.key"))
    openssl("req", "-new", "-key", str(pki / "kubelet.key"), "-subj", f"/O=system:nodes/CN=system:node:{NODE}",
            "-out", str(pki / "kubelet.csr"))
    (pki / "ext.cnf").write_text(f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                 f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{NODE},IP:{NODE_IP}\n")
    openssl("x509", "-req", "-in", str(pki / "kubelet.csr"), "-CA", ca_crt, "-CAkey", ca_key, "-set_serial",
            str(random.getrandbits(63)), "-days", "2", "-extfile", str(pki / "ext.cnf"), "-out", str(pki / "kubelet.crt"))
    srv = http.server.ThreadingHTTPServer((NODE_IP, KUBELET_PORT), Kubelet)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki / "kubelet.crt"), str(pki / "kubelet.key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    log(f"kubelet endpoint on https://{NODE_IP}:{KUBELET_PORT}")


def register_node():
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}}}
    if get(f"/api/v1/nodes/{NODE}") is None:
        api("POST", "/api/v1/nodes", node)
    t = now_rfc3339()
    merge_patch(f"/api/v1/nodes/{NODE}/status", {"status": {
        # no Hostname address: kube-apiserver prefers it for /containerLogs and it does not resolve
        "addresses": [{"type": "InternalIP", "address": NODE_IP}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "lab_sim.py",
                        "lastHeartbeatTime": t, "lastTransitionTime": t}],
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}})


# ---------------------------------------------------------------- main

STOP = threading.Event()
BIN = ""


def main():
    global DIR, API, CTX, ENV, NODE, NODE_IP, KUBELET_PORT, POD_IPS, BIN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--node", default=NODE)
    ap.add_argument("--node-ip", required=True)
    ap.add_argument("--kubelet-port", type=int, required=True)
    ap.add_argument("--pod-ips", required=True)
    o = ap.parse_args()
    DIR, BIN, NODE, NODE_IP, KUBELET_PORT = o.dir.resolve(), o.bin, o.node, o.node_ip, o.kubelet_port
    POD_IPS = o.pod_ips.split(",")
    for line in (DIR / "cluster.env").read_text().splitlines():
        k, _, v = line.partition("=")
        ENV[k] = v
    API = ENV["KD_APISERVER_URL"]
    CTX = ssl.create_default_context(cafile=ENV["KD_CA_CRT"])
    CTX.load_cert_chain(ENV["KD_ADMIN_CRT"], ENV["KD_ADMIN_KEY"])

    def on_term(*_):
        STOP.set()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    start_kubelet_server()
    register_node()
    log("running: cert-manager (selfSigned) + cainjector, ReplicaSet controller + scheduler, kubelet, "
        "endpoints controllers")
    steps = [reconcile_cert_manager, reconcile_deployments, reconcile_kubelet, reconcile_endpoints]
    while not STOP.is_set():
        for fn in steps:
            try:
                fn()
            except Exception as e:  # keep going: one failed call must not stop the cluster
                log(f"error: {e}")
        STOP.wait(0.5)
    for r in RUNNING.values():
        stop(r)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Tests of the Helm chart (charts/kubedojo-data-api) and the plain manifests.

Offline (no cluster): helm lint --strict, helm template of every TLS mode and CI
values file with assertions on the rendered objects, schema rejections of typos,
the README values table against values.yaml, manifests/ against the chart.

With --cluster DIR (a throwaway kube-apiserver from tests/e2e/cluster.sh, whose
DIR/admin.kubeconfig is used): helm install --dry-run=server and a real helm
install/upgrade/uninstall of each mode, takeover of an existing metrics-server
APIService, and kubectl apply (server dry-run and real) of manifests/.

With KUBEDOJO_BIN=<binary>: the binary's --help lists every flag the chart passes,
and it serves /livez over TLS with the chart's helm-mode certificate.

Usage: test_chart.py --helm HELM --kubectl KUBECTL [--cluster DIR] [-k PATTERN]
       test_chart.py --helm HELM --write-readme   (regenerate the README table)
Prints one line per check and ends with "N passed, M failed".
Standard library plus PyYAML (installed with pip if missing).
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "pyyaml"], check=True)
    import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubedojo-data-api"
MANIFESTS = ROOT / "manifests"
RELEASE = "kubedojo-data-api"
NS = "kube-system"
# manifests/ is the chart rendered with this values file (the lab's names, namespace
# kubedojo-system); manifests/components/metrics-server-takeover adds metrics.k8s.io.
MANIFESTS_VALUES = CHART / "ci" / "manifests-values.yaml"
MANIFESTS_NS = "kubedojo-system"
README_START = "<!-- values-table:start -->"
README_END = "<!-- values-table:end -->"

HELM = "helm"
KUBECTL = "kubectl"
CLUSTER: Path | None = None
KUBECONFIG: str | None = None
WORK = Path(tempfile.mkdtemp(prefix="kd-chart-test-"))


# ---------------------------------------------------------------- runner

class Failure(Exception):
    pass


def check(cond, message: str):
    if not cond:
        raise Failure(message)


def eq(actual, expected, what: str):
    if actual != expected:
        raise Failure(f"{what}: expected {expected!r}, got {actual!r}")


TESTS: list[tuple[str, object, bool]] = []


def test(name: str, cluster: bool = False):
    def deco(fn):
        TESTS.append((name, fn, cluster))
        return fn
    return deco


def run(cmd, check_rc=True, input_text=None, env_extra=None, timeout=300):
    env = dict(os.environ)
    if KUBECONFIG:
        env["KUBECONFIG"] = KUBECONFIG
    if env_extra:
        env.update(env_extra)
    p = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, input=input_text, env=env, timeout=timeout
    )
    if check_rc and p.returncode != 0:
        raise Failure(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stderr.strip()}\n{p.stdout[-2000:]}")
    return p


# ---------------------------------------------------------------- helm helpers

def helm_args(values_files=(), sets=(), set_files=()):
    args = []
    for f in values_files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    for s in set_files:
        args += ["--set-file", s]
    return args


def template(values_files=(), sets=(), set_files=(), release=RELEASE, ns=NS, chart=CHART, extra=()):
    p = run([HELM, "template", release, chart, "-n", ns, *helm_args(values_files, sets, set_files), *extra])
    return [d for d in yaml.safe_load_all(p.stdout) if d], p.stdout


def template_fails(sets=(), values_files=(), set_files=()):
    p = run([HELM, "template", RELEASE, CHART, "-n", NS, *helm_args(values_files, sets, set_files)], check_rc=False)
    return p.returncode != 0, p.stderr


def find(docs, kind, name=None, namespace=None):
    out = [
        d for d in docs
        if d.get("kind") == kind
        and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]
    return out


def one(docs, kind, name=None):
    found = find(docs, kind, name)
    check(len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def container(docs, name=None):
    dep = one(docs, "Deployment", name)
    return dep, dep["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]["containers"][0]


def ci(name):
    return CHART / "ci" / name


_NOTES_CHART = None


def notes(sets=(), values_files=()):
    """NOTES.txt rendered offline: a copy of the chart whose extra template tpl's it."""
    global _NOTES_CHART
    if _NOTES_CHART is None:
        _NOTES_CHART = WORK / "notes-chart" / "kubedojo-data-api"
        shutil.copytree(CHART, _NOTES_CHART)
        shutil.copy(CHART / "templates" / "NOTES.txt", _NOTES_CHART / "notes-under-test.txt")
        (_NOTES_CHART / "templates" / "zz-notes.yaml").write_text(
            'notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n'
        )
    p = run([HELM, "template", RELEASE, _NOTES_CHART, "-n", NS, "--show-only", "templates/zz-notes.yaml",
             *helm_args(values_files, sets)])
    return yaml.safe_load(p.stdout)["notes"]


# ---------------------------------------------------------------- openssl helpers

def openssl(*args, input_text=None):
    return run(["openssl", *args], input_text=input_text).stdout


def make_ca_and_cert(dirpath: Path, dns_names):
    """A CA and a serving certificate for dns_names (for tls.type existingSecret)."""
    dirpath.mkdir(parents=True, exist_ok=True)
    d = str(dirpath)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt", "-days", "30", "-subj", "/CN=kd-test-ca")
    (dirpath / "ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=" + ",".join(f"DNS:{n}" for n in dns_names) + "\n"
    )
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{d}/tls.key", "-out", f"{d}/tls.csr", "-subj", "/CN=kubedojo-data-api")
    openssl("x509", "-req", "-in", f"{d}/tls.csr", "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key",
            "-CAcreateserial", "-days", "30", "-extfile", f"{d}/ext", "-out", f"{d}/tls.crt")
    return dirpath / "ca.crt", dirpath / "tls.crt", dirpath / "tls.key"


def verify_chain(ca_pem: str, cert_pem: str, key_pem: str, dns_names):
    d = Path(tempfile.mkdtemp(dir=WORK))
    (d / "ca.crt").write_text(ca_pem)
    (d / "tls.crt").write_text(cert_pem)
    (d / "tls.key").write_text(key_pem)
    out = run(["openssl", "verify", "-CAfile", d / "ca.crt", "-purpose", "sslserver", d / "tls.crt"], check_rc=False)
    check(out.returncode == 0 and "OK" in out.stdout, f"certificate does not verify against the CA: {out.stdout}{out.stderr}")
    text = openssl("x509", "-in", str(d / "tls.crt"), "-noout", "-ext", "subjectAltName")
    for n in dns_names:
        check(f"DNS:{n}" in text, f"certificate lacks SAN {n}: {text}")
    pub_cert = openssl("x509", "-in", str(d / "tls.crt"), "-noout", "-pubkey")
    pub_key = openssl("pkey", "-in", str(d / "tls.key"), "-pubout")
    eq(pub_cert.strip(), pub_key.strip(), "public key of tls.crt vs tls.key")


def svc_dns(name=RELEASE, ns=NS):
    return [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]


# ---------------------------------------------------------------- shared assertions

SELECTOR = {"app.kubernetes.io/name": "kubedojo-data-api", "app.kubernetes.io/instance": RELEASE}


def assert_common(docs, release=RELEASE, ns=NS, replicas=2, port=10250):
    name = RELEASE if release == RELEASE else f"{release}-kubedojo-data-api"
    selector = {"app.kubernetes.io/name": "kubedojo-data-api", "app.kubernetes.io/instance": release}
    dep, pod, c = container(docs, name)
    eq(dep["metadata"]["namespace"], ns, "Deployment namespace")
    eq(dep["spec"]["replicas"], replicas, "replicas")
    eq(dep["spec"]["selector"]["matchLabels"], selector, "Deployment selector")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in selector.items()), f"pod labels {labels} lack the selector")
    eq(pod.get("priorityClassName"), "system-cluster-critical", "priorityClassName")
    eq(pod["serviceAccountName"], name, "serviceAccountName")
    # hardened pod and container
    psc = pod["securityContext"]
    eq(psc.get("runAsNonRoot"), True, "podSecurityContext.runAsNonRoot")
    eq(psc.get("seccompProfile"), {"type": "RuntimeDefault"}, "podSecurityContext.seccompProfile")
    sc = c["securityContext"]
    eq(sc.get("allowPrivilegeEscalation"), False, "allowPrivilegeEscalation")
    eq(sc.get("readOnlyRootFilesystem"), True, "readOnlyRootFilesystem")
    eq(sc.get("runAsNonRoot"), True, "runAsNonRoot")
    check(sc.get("runAsUser", 0) != 0, "runAsUser must not be 0")
    eq(sc.get("capabilities"), {"drop": ["ALL"]}, "capabilities")
    eq(sc.get("seccompProfile"), {"type": "RuntimeDefault"}, "seccompProfile")
    check("privileged" not in sc or sc["privileged"] is False, "privileged container")
    # port and probes
    eq(c["ports"], [{"name": "https", "containerPort": port, "protocol": "TCP"}], "container ports")
    eq(c["livenessProbe"]["httpGet"], {"path": "/livez", "port": "https", "scheme": "HTTPS"}, "livenessProbe")
    eq(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "https", "scheme": "HTTPS"}, "readinessProbe")
    args = c["args"]
    eq(args[0], f"--secure-port={port}", "first arg")
    for a in ("--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
              "--kubelet-use-node-status-port", "--metric-resolution=15s"):
        check(a in args, f"default arg {a} missing from {args}")
    flags = [a.split("=", 1)[0] for a in args]
    dup = sorted({f for f in flags if flags.count(f) > 1})
    check(not dup, f"flags given twice: {dup}")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    eq(mounts.get("tmp", {}).get("mountPath"), "/tmp", "/tmp mount (read-only root filesystem)")
    # Service
    svc = one(docs, "Service", name)
    eq(svc["metadata"]["namespace"], ns, "Service namespace")
    eq([(p["port"], p["targetPort"], p["name"]) for p in svc["spec"]["ports"]], [(443, "https", "https")], "Service ports")
    eq(svc["spec"]["selector"], selector, "Service selector")
    # RBAC: the names manifests/rbac.yaml uses (with release kubedojo-data-api)
    prefix = name.removesuffix("-data-api")
    one(docs, "ServiceAccount", name)
    one(docs, "ClusterRole", f"system:{name}")
    agg = one(docs, "ClusterRole", f"system:{prefix}-aggregated-reader")
    check(agg["metadata"]["labels"].get("rbac.authorization.k8s.io/aggregate-to-view") == "true",
          "aggregated reader not aggregated into view")
    for kind, rname in (("ClusterRoleBinding", f"system:{name}"),
                        ("ClusterRoleBinding", f"{name}:system:auth-delegator"),
                        ("RoleBinding", f"{name}-auth-reader")):
        b = one(docs, kind, rname)
        eq(b["subjects"], [{"kind": "ServiceAccount", "name": name, "namespace": ns}], f"{kind} {rname} subjects")
    eq(one(docs, "RoleBinding", f"{name}-auth-reader")["metadata"]["namespace"], "kube-system", "auth-reader namespace")
    eq(one(docs, "ClusterRoleBinding", f"{name}:system:auth-delegator")["roleRef"]["name"], "system:auth-delegator",
       "auth-delegator roleRef")
    eq(one(docs, "RoleBinding", f"{name}-auth-reader")["roleRef"]["name"], "extension-apiserver-authentication-reader",
       "auth-reader roleRef")
    return dep, pod, c


def assert_antiaffinity_soft(pod, release=RELEASE):
    terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    eq(len(terms), 1, "preferred anti-affinity terms")
    t = terms[0]["podAffinityTerm"]
    eq(t["topologyKey"], "kubernetes.io/hostname", "anti-affinity topologyKey")
    eq(t["labelSelector"]["matchLabels"],
       {"app.kubernetes.io/name": "kubedojo-data-api", "app.kubernetes.io/instance": release}, "anti-affinity selector")


def apiservices(docs):
    return {d["metadata"]["name"]: d for d in find(docs, "APIService")}


def assert_apiservices(docs, name=RELEASE, ns=NS, metrics=True, data=True):
    svcs = apiservices(docs)
    want = (["v1beta1.metrics.k8s.io"] if metrics else []) + (["v1alpha1.data.kubedojo.io"] if data else [])
    eq(sorted(svcs), sorted(want), "APIServices")
    for n, a in svcs.items():
        version, group = n.split(".", 1)
        s = a["spec"]
        eq((s["group"], s["version"]), (group, version), f"{n} group/version")
        eq(s["service"], {"name": name, "namespace": ns, "port": 443}, f"{n} service")
        check(1 <= s["groupPriorityMinimum"] < 16000, f"{n} groupPriorityMinimum {s['groupPriorityMinimum']} could shadow a built-in group")
        check(s["versionPriority"] >= 1, f"{n} versionPriority")
    if metrics:
        s = svcs["v1beta1.metrics.k8s.io"]["spec"]
        eq((s["groupPriorityMinimum"], s["versionPriority"]), (100, 100), "metrics.k8s.io priorities (metrics-server's)")
    return svcs


def no_cert_objects(docs, secret=True):
    check(not find(docs, "Issuer") and not find(docs, "Certificate"), "unexpected cert-manager objects")
    if secret:
        check(not [d for d in find(docs, "Secret") if d.get("type") == "kubernetes.io/tls"], "unexpected TLS Secret")


# ---------------------------------------------------------------- offline: lint

@test("helm lint --strict (defaults)")
def t_lint_default():
    run([HELM, "lint", "--strict", CHART])


@test("helm lint --strict with every ci/*.yaml")
def t_lint_ci():
    files = sorted((CHART / "ci").glob("*.yaml"))
    check(len(files) >= 5, "expected at least 5 CI values files")
    for f in files:
        run([HELM, "lint", "--strict", CHART, "-f", f])


@test("every ci/*.yaml renders; no null annotations/labels; common labels everywhere")
def t_ci_render():
    for f in sorted((CHART / "ci").glob("*.yaml")):
        docs, raw = template([f])
        def walk(o, where):
            if isinstance(o, dict):
                for k, v in o.items():
                    check(not (k in ("annotations", "labels") and not v),
                          f"{f.name}: empty {k} rendered at {where} (GitOps tools see a diff)")
                    walk(v, f"{where}.{k}")
            elif isinstance(o, list):
                for i, v in enumerate(o):
                    walk(v, f"{where}[{i}]")
        for d in docs:
            walk(d, f"{d['kind']}/{d['metadata']['name']}")
        for d in docs:
            labels = d["metadata"].get("labels") or {}
            check(labels.get("app.kubernetes.io/name") == "kubedojo-data-api"
                  and labels.get("app.kubernetes.io/managed-by") == "Helm",
                  f"{f.name}: {d['kind']} {d['metadata']['name']} lacks the chart labels")


# ---------------------------------------------------------------- offline: TLS modes

@test("tls.type=helm (default): Secret, caBundle on both APIServices, --tls-cert-file, cert verifies")
def t_tls_helm():
    docs, _ = template()
    dep, pod, c = assert_common(docs)
    assert_antiaffinity_soft(pod)
    svcs = assert_apiservices(docs)
    secret = one(docs, "Secret", f"{RELEASE}-tls")
    eq(secret["type"], "kubernetes.io/tls", "Secret type")
    eq(sorted(secret["data"]), ["ca.crt", "tls.crt", "tls.key"], "Secret keys")
    for n, a in svcs.items():
        eq(a["spec"].get("caBundle"), secret["data"]["ca.crt"], f"{n} caBundle = Secret ca.crt")
        check(not a["spec"].get("insecureSkipTLSVerify"), f"{n} insecureSkipTLSVerify")
        check("cert-manager.io/inject-ca-from" not in (a["metadata"].get("annotations") or {}), f"{n} inject annotation")
    args = c["args"]
    check("--tls-cert-file=/etc/kubedojo-data-api/tls/tls.crt" in args, f"--tls-cert-file missing: {args}")
    check("--tls-private-key-file=/etc/kubedojo-data-api/tls/tls.key" in args, "--tls-private-key-file missing")
    check(not any(a.startswith("--cert-dir") for a in args), "--cert-dir with a mounted certificate")
    vols = {v["name"]: v for v in pod["volumes"]}
    eq(vols["tls"]["secret"]["secretName"], f"{RELEASE}-tls", "tls volume")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    check("subPath" not in mounts["tls"] and mounts["tls"].get("readOnly"), "tls mount must be a read-only directory mount")
    no_cert_objects(docs, secret=False)
    b = lambda k: base64.b64decode(secret["data"][k]).decode()
    verify_chain(b("ca.crt"), b("tls.crt"), b("tls.key"), svc_dns())
    check("BEGIN" in b("tls.key") and "PRIVATE KEY" in b("tls.key"), "tls.key is not a PEM private key")


@test("tls.type=self: --cert-dir=/tmp, insecureSkipTLSVerify, no caBundle, no Secret/Issuer/Certificate")
def t_tls_self():
    docs, _ = template([ci("tls-self-values.yaml")])
    dep, pod, c = assert_common(docs)
    for n, a in assert_apiservices(docs).items():
        eq(a["spec"].get("insecureSkipTLSVerify"), True, f"{n} insecureSkipTLSVerify")
        check("caBundle" not in a["spec"], f"{n} caBundle with insecureSkipTLSVerify")
    args = c["args"]
    check("--cert-dir=/tmp" in args, f"--cert-dir=/tmp missing: {args}")
    check(not any(a.startswith("--tls-") and "file" in a for a in args), f"--tls-*-file in self mode: {args}")
    check("tls" not in {v["name"] for v in pod["volumes"]}, "tls volume in self mode")
    no_cert_objects(docs)
    check("WARNING" in notes(values_files=[ci("tls-self-values.yaml")]), "NOTES do not warn about insecureSkipTLSVerify")


@test("tls.type=cert-manager: Issuer + Certificate, inject-ca-from on both APIServices, no caBundle")
def t_tls_cert_manager():
    docs, _ = template([ci("tls-certManager-values.yaml")])
    dep, pod, c = assert_common(docs)
    issuer = one(docs, "Issuer", f"{RELEASE}-selfsigned")
    eq(issuer["spec"], {"selfSigned": {}}, "Issuer spec")
    cert = one(docs, "Certificate", RELEASE)
    eq(cert["spec"]["secretName"], f"{RELEASE}-tls", "Certificate secretName")
    eq(sorted(cert["spec"]["dnsNames"]), sorted(svc_dns()), "Certificate dnsNames")
    eq(cert["spec"]["issuerRef"], {"group": "cert-manager.io", "kind": "Issuer", "name": f"{RELEASE}-selfsigned"}, "issuerRef")
    eq((cert["spec"].get("duration"), cert["spec"].get("renewBefore")), ("2160h", "720h"), "duration/renewBefore")
    for n, a in assert_apiservices(docs).items():
        eq((a["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from"), f"{NS}/{RELEASE}",
           f"{n} inject-ca-from")
        check("caBundle" not in a["spec"] and not a["spec"].get("insecureSkipTLSVerify"), f"{n} caBundle/insecure")
    eq({v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"], f"{RELEASE}-tls", "tls volume")
    check("--tls-cert-file=/etc/kubedojo-data-api/tls/tls.crt" in c["args"], "--tls-cert-file missing")
    check(not find(docs, "Secret"), "Secret rendered in cert-manager mode")
    # an existing ClusterIssuer: no Issuer rendered
    docs, _ = template(sets=["tls.type=cert-manager", "tls.certManager.existingIssuer.kind=ClusterIssuer",
                             "tls.certManager.existingIssuer.name=corp-ca"])
    check(not find(docs, "Issuer"), "Issuer rendered with existingIssuer")
    eq(one(docs, "Certificate")["spec"]["issuerRef"], {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"},
       "issuerRef with existingIssuer")
    # tls.certManager.certificateName names the Certificate and the inject-ca-from target
    docs, _ = template(sets=["tls.type=cert-manager", "tls.certManager.certificateName=my-cert"])
    eq(one(docs, "Certificate")["metadata"]["name"], "my-cert", "Certificate name")
    for n, a in apiservices(docs).items():
        eq(a["metadata"]["annotations"].get("cert-manager.io/inject-ca-from"), f"{NS}/my-cert", f"{n} inject-ca-from")


@test("tls.type=existingSecret: mounts the named Secret; caBundle from value, or inject-ca-from")
def t_tls_existing():
    ca, _, _ = make_ca_and_cert(WORK / "existing", svc_dns())
    docs, _ = template(sets=["tls.type=existingSecret", "tls.existingSecret.name=my-tls"],
                       set_files=[f"tls.existingSecret.caBundle={ca}"])
    dep, pod, c = assert_common(docs)
    want = base64.b64encode(ca.read_bytes()).decode()
    for n, a in assert_apiservices(docs).items():
        eq(a["spec"].get("caBundle"), want, f"{n} caBundle")
    eq({v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"], "my-tls", "tls volume")
    check("--tls-cert-file=/etc/kubedojo-data-api/tls/tls.crt" in c["args"], "--tls-cert-file missing")
    no_cert_objects(docs)
    check(not find(docs, "Secret"), "the chart must not render the existing Secret")
    docs, _ = template(sets=["tls.type=existingSecret", "tls.existingSecret.name=my-tls",
                             "tls.existingSecret.injectCAFrom=certs/my-cert"])
    for n, a in apiservices(docs).items():
        eq(a["metadata"]["annotations"].get("cert-manager.io/inject-ca-from"), "certs/my-cert", f"{n} inject-ca-from")
        check("caBundle" not in a["spec"], f"{n} caBundle")


@test("apiService.insecureSkipTLSVerify=true: no caBundle (kube-apiserver rejects both)")
def t_insecure_override():
    docs, _ = template(sets=["apiService.insecureSkipTLSVerify=true"])
    for n, a in apiservices(docs).items():
        eq(a["spec"].get("insecureSkipTLSVerify"), True, f"{n} insecureSkipTLSVerify")
        check("caBundle" not in a["spec"], f"{n} caBundle next to insecureSkipTLSVerify")


# ---------------------------------------------------------------- offline: other values

@test("defaults: replicas 2, PDB minAvailable 1, soft anti-affinity, insecureSkipTLSVerify false")
def t_defaults():
    docs, _ = template()
    dep, pod, c = assert_common(docs)
    pdb = one(docs, "PodDisruptionBudget", RELEASE)
    eq(pdb["spec"].get("minAvailable"), 1, "PDB minAvailable")
    eq(pdb["spec"]["selector"]["matchLabels"], SELECTOR, "PDB selector")
    assert_antiaffinity_soft(pod)
    eq(dep["spec"]["strategy"]["rollingUpdate"], {"maxSurge": 1, "maxUnavailable": 0}, "rolling update")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    eq(values["apiService"]["insecureSkipTLSVerify"], False, "default insecureSkipTLSVerify")
    eq(values["tls"]["type"], "helm", "default tls.type")
    # one replica: no PDB (it would block every drain)
    docs, _ = template(sets=["replicas=1"])
    check(not find(docs, "PodDisruptionBudget"), "PDB rendered for one replica")
    docs, _ = template(sets=["podAntiAffinityPreset=none"])
    check("affinity" not in container(docs)[1], "affinity rendered with preset none")


@test("shutdown: --shutdown-delay-duration=5s by default (faults.sh: zero errors in a rolling restart), grace period covers delay + drain")
def t_shutdown_delay():
    docs, _ = template()
    _, pod, c = container(docs)
    check("--shutdown-delay-duration=5s" in c["args"], f"--shutdown-delay-duration=5s missing from {c['args']}")
    eq(pod["terminationGracePeriodSeconds"], 30, "terminationGracePeriodSeconds")
    docs, _ = template(sets=["shutdownDelaySeconds=8", "terminationGracePeriodSeconds=40"])
    _, pod, c = container(docs)
    check("--shutdown-delay-duration=8s" in c["args"], f"--shutdown-delay-duration=8s missing from {c['args']}")
    eq(pod["terminationGracePeriodSeconds"], 40, "terminationGracePeriodSeconds")
    docs, _ = template(sets=["shutdownDelaySeconds=0"])
    check(not any(a.startswith("--shutdown-delay-duration") for a in container(docs)[2]["args"]),
          "shutdownDelaySeconds=0 still passes the flag")
    # the kubelet would SIGKILL the server mid-drain: 5 s delay + 20 s drain >= 25 s grace
    failed, err = template_fails(sets=["terminationGracePeriodSeconds=25"])
    check(failed and "must exceed shutdownDelaySeconds" in err, f"grace 25 s with a 5 s delay accepted: {err}")
    failed, err = template_fails(sets=["shutdownDelaySeconds=15"])
    check(failed and "must exceed shutdownDelaySeconds" in err, f"delay 15 s with a 30 s grace accepted: {err}")


@test("apiService.metrics.create=false keeps metrics-server's APIService alone")
def t_keep_metrics_server():
    docs, _ = template([ci("keep-metrics-server-values.yaml")])
    assert_apiservices(docs, metrics=False, data=True)
    text = notes(values_files=[ci("keep-metrics-server-values.yaml")])
    check("kubectl top nodes" not in text and "NOT served" in text, "NOTES for metrics.create=false")
    docs, _ = template(sets=["apiService.data.create=false"])
    assert_apiservices(docs, metrics=True, data=False)


@test("records.inline: ConfigMap of DataRecords mounted and passed as --records-file")
def t_records_inline():
    docs, _ = template([ci("records-values.yaml")])
    dep, pod, c = assert_common(docs)
    cm = one(docs, "ConfigMap", f"{RELEASE}-records")
    records = yaml.safe_load(cm["data"]["records.yaml"])
    eq(len(records), 3, "records")
    for r in records:
        eq((r["apiVersion"], r["kind"]), ("data.kubedojo.io/v1alpha1", "DataRecord"), "record apiVersion/kind")
        check(r["metadata"]["name"] and r["spec"]["source"], "record name/source")
    eq(records[0]["spec"]["data"]["max_sessions"], "5", "string data stays a string")
    check("--sources-config=/etc/kubedojo-data-api/sources/sources.yaml" in c["args"], f"--sources-config: {c['args']}")
    check(not any(a.startswith("--records-file") for a in c["args"]), "--records-file beside --sources-config")
    sources = yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-sources")["data"]["sources.yaml"])
    eq(sources["sources"], [{"kind": "file", "path": "/etc/kubedojo-data-api/records/records.yaml"},
                            {"kind": "computed", "namespace": "kubedojo-metrics"}], "sources: the records file, then computed")
    check("--records-refresh-interval=1m" in c["args"], "--records-refresh-interval")
    eq({v["name"]: v for v in pod["volumes"]}["records"]["configMap"]["name"], f"{RELEASE}-records", "records volume")
    eq({m["name"]: m for m in c["volumeMounts"]}["records"]["mountPath"], "/etc/kubedojo-data-api/records", "records mount")
    check("3 inline record(s)" in notes(values_files=[ci("records-values.yaml")]), "NOTES mention the records")
    # existingConfigMap
    docs, _ = template(sets=["records.existingConfigMap=my-records", "records.key=dr.json"])
    _, pod, c = container(docs)
    check(not find(docs, "ConfigMap", f"{RELEASE}-records"), "records ConfigMap rendered with existingConfigMap")
    sources = yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-sources")["data"]["sources.yaml"])
    eq(sources["sources"][0]["path"], "/etc/kubedojo-data-api/records/dr.json", "file source with records.key")
    eq({v["name"]: v for v in pod["volumes"]}["records"]["configMap"]["name"], "my-records", "existing ConfigMap volume")
    # default: none (the server's own default: the lab's records plus the computed ones)
    docs = template()[0]
    _, pod, c = container(docs)
    check(not any(a.startswith(("--records-file", "--sources-config")) for a in c["args"]), "source flags without records")
    check(not find(docs, "ConfigMap"), "a ConfigMap without records or sources")


@test("sources: PostgreSQL DSN from an existing Secret (mounted, never a flag), computed records on/off and their namespace")
def t_sources():
    docs, _ = template(sets=["sources.postgres.enabled=true", "sources.postgres.existingSecret=pg-dsn",
                             "sources.postgres.secretKey=url", "sources.postgres.schema=kubedojo",
                             "sources.postgres.maxConnections=4", "sources.postgres.tlsMode=verify-full",
                             "sources.computed.namespace=metrics-records"])
    _, pod, c = container(docs)
    cfg = yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-sources")["data"]["sources.yaml"])
    eq(cfg["connections"], [{"name": "main", "dsnFrom": {"file": "/etc/kubedojo-data-api/postgres/dsn"},
                             "maxConnections": 4, "tls": {"mode": "verify-full"}}], "connection")
    eq(cfg["sources"], [{"kind": "file"}, {"kind": "postgres", "connection": "main", "schema": "kubedojo"},
                        {"kind": "computed", "namespace": "metrics-records"}], "sources in order")
    vols = {v["name"]: v for v in pod["volumes"]}
    eq(vols["postgres-dsn"]["secret"]["secretName"], "pg-dsn", "DSN Secret volume")
    eq(vols["postgres-dsn"]["secret"]["items"], [{"key": "url", "path": "dsn"}], "DSN key")
    eq({m["name"]: m for m in c["volumeMounts"]}["postgres-dsn"]["mountPath"], "/etc/kubedojo-data-api/postgres", "DSN mount")
    check("--sources-config=/etc/kubedojo-data-api/sources/sources.yaml" in c["args"], f"args: {c['args']}")
    check(not any("pg-dsn" in a or "postgres://" in a for a in c["args"]), "no secret in the args")
    # computed off: only the lab's records
    docs, _ = template(sets=["sources.computed.enabled=false"])
    cfg = yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-sources")["data"]["sources.yaml"])
    eq(cfg["sources"], [{"kind": "file"}], "computed off")
    # the schema and the render-time checks refuse what cannot work
    failed, err = template_fails(sets=["sources.postgres.enabled=true"])
    check(failed and "existingSecret" in err, f"postgres without a Secret: {err}")
    failed, err = template_fails(sets=["sources.postgres.dsn=postgres://x"])
    check(failed and "dsn" in err, f"a DSN value in clear: {err}")
    failed, err = template_fails(sets=["sources.computed.namespace=Bad_NS"])
    check(failed and "namespace" in err, f"a bad namespace: {err}")


@test("sources: postgresQuery definitions from a ConfigMap: the source, the DSN mount, a Role for get/list/watch of that one ConfigMap only")
def t_postgres_query_configmap():
    docs, _ = template(sets=["sources.postgresQuery.enabled=true", "sources.postgres.existingSecret=pg-dsn",
                             "sources.postgresQuery.configMap.name=queries",
                             "sources.postgresQuery.configMap.namespace=ops"])
    _, pod, c = container(docs)
    cfg = yaml.safe_load(one(docs, "ConfigMap", f"{RELEASE}-sources")["data"]["sources.yaml"])
    eq(cfg["connections"], [{"name": "main", "dsnFrom": {"file": "/etc/kubedojo-data-api/postgres/dsn"}}], "connection")
    eq(cfg["sources"], [{"kind": "file"},
                        {"kind": "postgresQuery", "connection": "main",
                         "configMap": {"namespace": "ops", "name": "queries", "key": "records.yaml"}},
                        {"kind": "computed", "namespace": "kubedojo-metrics"}], "sources in order, no table source")
    eq({v["name"]: v for v in pod["volumes"]}["postgres-dsn"]["secret"]["secretName"], "pg-dsn", "DSN Secret volume")
    role = one(docs, "Role", f"{RELEASE}-query-definitions")
    eq(role["metadata"]["namespace"], "ops", "Role in the ConfigMap's namespace")
    eq(role["rules"], [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["queries"],
                        "verbs": ["get", "list", "watch"]}], "that one ConfigMap, read only")
    binding = one(docs, "RoleBinding", f"{RELEASE}-query-definitions")
    eq(binding["metadata"]["namespace"], "ops", "RoleBinding namespace")
    eq(binding["roleRef"]["name"], f"{RELEASE}-query-definitions", "RoleBinding role")
    eq([s["kind"] for s in binding["subjects"]], ["ServiceAccount"], "bound to the server's ServiceAccount")
    # nothing else reads ConfigMaps
    rules = [r for d in docs if d and d.get("kind") in ("Role", "ClusterRole") for r in d.get("rules", [])]
    check(all("configmaps" not in r.get("resources", []) or r.get("resourceNames") == ["queries"] for r in rules),
          "no broader ConfigMap rule")
    # off by default: no Role
    check(not find(template()[0], "Role", f"{RELEASE}-query-definitions"), "no Role when off")
    failed, err = template_fails(sets=["sources.postgresQuery.enabled=true", "sources.postgres.existingSecret=pg"])
    check(failed and "configMap.name" in err, f"postgresQuery without a ConfigMap name: {err}")
    failed, err = template_fails(sets=["sources.postgresQuery.enabled=true", "sources.postgresQuery.configMap.name=q"])
    check(failed and "existingSecret" in err, f"postgresQuery without a Secret: {err}")


@test("sharding: off by default (no peer flags, no Lease RBAC); on: peer port, downward-API env, Lease Role in the release namespace only, goawayChance")
def t_sharding():
    docs, _ = template()
    _, _, c = container(docs)
    check(not any(a.startswith(("--peer-", "--scrape-replication", "--goaway-chance")) for a in c["args"]),
          f"sharding flags without sharding.enabled: {c['args']}")
    check(not find(docs, "Role", f"{RELEASE}-members"), "Lease Role without sharding.enabled")
    eq([p["name"] for p in c["ports"]], ["https"], "ports without sharding")
    vals = WORK / "sharding-values.yaml"
    vals.write_text(yaml.safe_dump({"sharding": {"enabled": True, "scrapeReplication": 2, "peerPort": 4444},
                                    "goawayChance": 0.01, "replicas": 3,
                                    "env": [{"name": "EXTRA", "value": "1"}]}))
    docs, _ = template([vals])
    dep, _, c = container(docs)
    eq(dep["spec"]["replicas"], 3, "replicas")
    for flag in ("--peer-port=4444", "--scrape-replication=2", "--goaway-chance=0.01"):
        check(flag in c["args"], f"{flag} not in {c['args']}")
    eq([(p["name"], p["containerPort"]) for p in c["ports"]], [("https", 10250), ("peers", 4444)], "ports")
    env = {e["name"]: e for e in c["env"]}
    eq({k: env[k]["valueFrom"]["fieldRef"]["fieldPath"] for k in ("POD_NAME", "POD_NAMESPACE", "POD_IP")},
       {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"},
       "downward-API env")
    eq(env["EXTRA"]["value"], "1", "the user's env kept")
    role = one(docs, "Role", f"{RELEASE}-members")
    eq(role["metadata"]["namespace"], NS, "Role namespace")
    eq(role["rules"], [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                        "verbs": ["get", "list", "watch", "create", "update", "delete"]}], "Lease rules, nothing broader")
    rb = one(docs, "RoleBinding", f"{RELEASE}-members")
    eq((rb["metadata"]["namespace"], rb["roleRef"]["name"], rb["subjects"]),
       (NS, f"{RELEASE}-members", [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NS}]), "RoleBinding")
    check(not any("coordination.k8s.io" in json.dumps(d.get("rules", [])) for d in find(docs, "ClusterRole")),
          "no cluster-wide Lease access")
    # goawayChance alone (a single scraping-everything fleet can still spread connections)
    docs, _ = template(extra=["--set-json", "goawayChance=0.02"])
    _, _, c = container(docs)
    check("--goaway-chance=0.02" in c["args"] and not any(a.startswith("--peer-port") for a in c["args"]),
          f"goawayChance without sharding: {c['args']}")
    # what cannot work is refused at render time
    for sets, want in ((["sharding.scrapeReplication=0"], "scrapeReplication"),
                       (["sharding.enabled=true", "sharding.peerPort=10250"], "peerPort"),
                       (["sharding.replicas=3"], "replicas")):
        failed, err = template_fails(sets=sets)
        check(failed and want in err, f"{sets}: {err}")
    p = run([HELM, "template", RELEASE, CHART, "-n", NS, "--set-json", "goawayChance=0.05"], check_rc=False)
    check(p.returncode != 0 and "goawayChance" in p.stderr, f"goawayChance 0.05: {p.stderr}")


@test("manifests/components/sharding: the chart's sharding.enabled Deployment and Lease RBAC")
def t_manifests_sharding():
    dst, _ = manifests_copy()
    (dst / "overlay").mkdir()
    (dst / "overlay" / "kustomization.yaml").write_text(
        "resources: [../manifests]\ncomponents: [../manifests/components/sharding]\n")
    got = {key(d): d for d in kustomize(dst / "overlay")}
    want = manifests_rendering(sets=["sharding.enabled=true"])
    dk = ("Deployment", MANIFESTS_NS, RELEASE)
    eq(got[dk]["spec"], want[dk]["spec"], "Deployment spec with the sharding component")
    for kind in ("Role", "RoleBinding"):
        k = (kind, MANIFESTS_NS, f"{RELEASE}-members")
        g = {f: got[k][f] for f in ("rules", "roleRef", "subjects") if f in got[k]}
        w = {f: want[k][f] for f in ("rules", "roleRef", "subjects") if f in want[k]}
        eq(g, w, f"{kind} {RELEASE}-members")


@test("metrics.enabled keeps the health paths always allowed; ServiceMonitor needs both switches")
def t_metrics():
    docs, _ = template(sets=["metrics.enabled=true"])
    _, _, c = container(docs)
    check("--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics" in c["args"], f"allow paths: {c['args']}")
    check(not find(docs, "ServiceMonitor"), "ServiceMonitor without serviceMonitor.enabled")
    docs, _ = template(sets=["metrics.enabled=true", "serviceMonitor.enabled=true"])
    sm = one(docs, "ServiceMonitor", RELEASE)
    ep = sm["spec"]["endpoints"][0]
    eq((ep["port"], ep["path"], ep["scheme"]), ("https", "/metrics", "https"), "ServiceMonitor endpoint")
    eq(sm["spec"]["selector"]["matchLabels"], SELECTOR, "ServiceMonitor selector")


@test("full-values.yaml: namespaceOverride, release prefix, hostNetwork, hard anti-affinity, spread, extras")
def t_full():
    docs, _ = template([ci("full-values.yaml")], release="kd")
    name, ns = "kd-kubedojo-data-api", "kubedojo"
    dep, pod, c = assert_common(docs, release="kd", ns=ns, replicas=3, port=4443)
    for d in docs:
        labels = d["metadata"]["labels"]
        eq(labels.get("team"), "platform", f"commonLabels on {d['kind']}")
        if d["kind"] in ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "Secret", "ServiceMonitor"):
            eq(d["metadata"]["namespace"], ns, f"{d['kind']} namespace")
    eq(one(docs, "ClusterRole", "system:kd-kubedojo-aggregated-reader")["kind"], "ClusterRole", "aggregated reader name")
    assert_apiservices(docs, name=name, ns=ns)
    eq(apiservices(docs)["v1alpha1.data.kubedojo.io"]["spec"]["groupPriorityMinimum"], 2000, "data priority override")
    eq(apiservices(docs)["v1alpha1.data.kubedojo.io"]["metadata"]["annotations"]["example.test/owner"], "platform",
       "apiService.annotations")
    eq((pod.get("hostNetwork"), pod.get("dnsPolicy")), (True, "ClusterFirstWithHostNet"), "hostNetwork")
    req = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    eq(req["topologyKey"], "kubernetes.io/hostname", "hard anti-affinity")
    tsc = pod["topologySpreadConstraints"][0]
    eq(tsc["labelSelector"]["matchLabels"], {"app.kubernetes.io/name": "kubedojo-data-api", "app.kubernetes.io/instance": "kd"},
       "spread constraint gets the selector labels")
    eq(c["image"], "registry.example.test/kubedojo/kubedojo-data-api:0.1.0-ci", "image")
    eq(c["imagePullPolicy"], "Always", "pullPolicy")
    eq(pod["imagePullSecrets"], [{"name": "regcred"}], "imagePullSecrets")
    eq(c["args"][-1], "--kubelet-certificate-authority=/etc/kubelet-ca/ca.crt", "args appended last")
    check("kubelet-ca" in {v["name"] for v in pod["volumes"]} and "kubelet-ca" in {m["name"] for m in c["volumeMounts"]},
          "extraVolumes/extraVolumeMounts")
    eq(pod["tolerations"], [{"key": "CriticalAddonsOnly", "operator": "Exists"}], "tolerations")
    eq(dep["spec"]["template"]["metadata"]["labels"].get("example.test/pod"), "yes", "podLabels")
    eq(dep["spec"]["template"]["metadata"]["annotations"], {"example.test/annotation": "yes"}, "podAnnotations")
    eq(dep["metadata"]["annotations"], {"example.test/deployment": "yes"}, "deploymentAnnotations")
    eq(c["env"], [{"name": "RUST_BACKTRACE", "value": "1"}], "env")
    pdb = one(docs, "PodDisruptionBudget")
    eq((pdb["spec"].get("maxUnavailable"), "minAvailable" in pdb["spec"], pdb["spec"].get("unhealthyPodEvictionPolicy")),
       (1, False, "AlwaysAllow"), "PDB maxUnavailable")
    one(docs, "ServiceMonitor", name)
    secret = one(docs, "Secret", f"{name}-tls")
    verify_chain(*(base64.b64decode(secret["data"][k]).decode() for k in ("ca.crt", "tls.crt", "tls.key")),
                 svc_dns(name, ns))


@test("schema and render-time checks reject typos and contradictions")
def t_rejections():
    cases = [
        (["replica=3"], "replica"),
        (["tls.type=bogus"], "tls/type"),
        (["image.repo=x"], "repo"),
        (["tls.helm.certDays=3"], "certDays"),
        (["apiService.metrics.groupPriorityMinimum=20000"], "groupPriorityMinimum"),
        (["apiService.metrics.create=yes"], "create"),
        (["podAntiAffinityPreset=always"], "podAntiAffinityPreset"),
        (["service.port=0"], "port"),
        (["image.pullPolicy=Sometimes"], "pullPolicy"),
        (["records.inline[0].metadata.name=x"], "spec"),
        (["records.inline[0].metadata.name=x", "records.inline[0].spec.query=q"], "source"),
        (["records.inline[0].metadata.name=X_Y", "records.inline[0].spec.source=db"], "name"),
        (["records.inline[0].metadata.name=x", "records.inline[0].spec.source=db", "records.inline[0].kind=Pod"], "kind"),
        (["tls.type=existingSecret"], "tls.existingSecret.name"),
        (["tls.type=existingSecret", "tls.existingSecret.name=x"], "needs a CA"),
        (["records.existingConfigMap=x", "records.inline[0].metadata.name=a", "records.inline[0].spec.source=b"], "either"),
        (["serviceMonitor.enabled=true"], "metrics.enabled"),
        (["hostNetwork.enabled=true"], "containerPort"),
        (["tls.certManager.duration=90days"], "duration"),
    ]
    for sets, needle in cases:
        failed, err = template_fails(sets=sets)
        check(failed, f"helm template --set {' --set '.join(sets)} did not fail")
        check(needle in err, f"--set {sets}: error does not mention {needle!r}: {err.strip()[:300]}")


@test("NOTES.txt: APIService checks, kubectl top, kubectl get dr")
def t_notes():
    text = notes()
    for s in ("kubectl wait --for=condition=Available --timeout=2m apiservice/v1beta1.metrics.k8s.io",
              "apiservice/v1alpha1.data.kubedojo.io", "kubectl get apiservices", "kubectl top nodes",
              "kubectl top pods -A", "kubectl get dr -A", "rollout status deployment/kubedojo-data-api"):
        check(s in text, f"NOTES lack {s!r}")
    check("WARNING" not in text, "NOTES warn with the defaults")
    check("one replica" in notes(sets=["replicas=1"]), "NOTES do not warn about one replica")


# ---------------------------------------------------------------- offline: docs

def values_doc_rows():
    """(path, description) of every `# --` documented key of values.yaml, and all key paths."""
    docs, keys = {}, []
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    skip = None
    for line in (CHART / "values.yaml").read_text().splitlines():
        s = line.strip()
        indent = len(line) - len(line.lstrip())
        if not s:
            pending = None
            continue
        if skip is not None:
            if indent > skip or (indent == skip and s.startswith("- ")):
                continue
            skip = None
        if s.startswith("#"):
            if s.startswith("# --"):
                pending = [s[4:].strip()]
            elif pending is not None:
                pending.append(s[1:].strip())
            continue
        if s.startswith("- "):
            skip = indent
            continue
        m = re.match(r"([A-Za-z0-9_./-]+):", s)
        check(m, f"values.yaml: cannot parse line {line!r}")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m.group(1)])
        keys.append(path)
        if pending is not None:
            docs[path] = " ".join(pending)
        pending = None
        stack.append((indent, m.group(1)))
    return docs, keys


def get_path(values, path):
    cur = values
    for k in path.split("."):
        cur = cur[k]
    return cur


def readme_table():
    docs, _ = values_doc_rows()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for path, desc in docs.items():
        default = json.dumps(get_path(values, path), separators=(",", ":"))
        rows.append(f"| `{path}` | `{default}` | {desc.replace('|', '&#124;')} |".replace("`` ", "` ` "))
    return "\n".join(rows)


def write_readme():
    readme = CHART / "README.md"
    text = readme.read_text()
    start, end = text.index(README_START), text.index(README_END)
    readme.write_text(text[: start + len(README_START)] + "\n" + readme_table() + "\n" + text[end:])


@test("every values.yaml key is documented with a `# --` comment")
def t_values_comments():
    docs, keys = values_doc_rows()
    undocumented = [
        k for k in keys
        if k not in docs
        and not any(k.startswith(d + ".") for d in docs)  # inside a documented object's default
        and not any(d.startswith(k + ".") for d in docs)  # a group of documented keys
    ]
    check(not undocumented, f"keys without a `# --` comment: {undocumented}")
    top = {k.split(".")[0] for k in keys}
    check(all(any(d == t or d.startswith(t + ".") for d in docs) for t in top), "a top-level key is undocumented")


@test("README values table lists every values.yaml key (and nothing else), in step with values.yaml")
def t_readme():
    docs, _ = values_doc_rows()
    text = (CHART / "README.md").read_text()
    check(README_START in text and README_END in text, "README lacks the values-table markers")
    table = text[text.index(README_START) + len(README_START): text.index(README_END)].strip()
    listed = re.findall(r"^\| `([^`]+)` \|", table, re.M)
    missing = [k for k in docs if k not in listed]
    extra = [k for k in listed if k not in docs]
    check(not missing, f"values missing from README.md: {missing} (run tests/chart/run.sh --write-readme)")
    check(not extra, f"README.md lists keys that are not in values.yaml: {extra}")
    check(table == readme_table(), "README values table is out of date (defaults or descriptions changed): "
          "run tests/chart/run.sh --write-readme")


@test("values.schema.json and values.yaml describe the same keys")
def t_schema_keys():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(sch, val, path):
        props = sch.get("properties")
        if props is None or not isinstance(val, dict):
            return
        check(sch.get("additionalProperties") is False, f"schema at {path or '/'} allows unknown keys")
        for k in val:
            check(k in props, f"values key {path}{k} missing from the schema")
        for k in props:
            if k == "global":
                continue
            check(k in val, f"schema key {path}{k} missing from values.yaml")
            walk(props[k], val[k], f"{path}{k}.")

    walk(schema, values, "")
    eq(schema["properties"]["tls"]["properties"]["type"]["enum"], ["self", "helm", "cert-manager", "existingSecret"],
       "tls.type enum")


@test("Chart.yaml: artifacthub.io annotations, appVersion = Cargo.toml version, image matches")
def t_chart_yaml():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    ann = chart.get("annotations", {})
    for k in ("artifacthub.io/category", "artifacthub.io/license", "artifacthub.io/changes", "artifacthub.io/images",
              "artifacthub.io/links"):
        check(k in ann, f"Chart.yaml lacks {k}")
    for entry in yaml.safe_load(ann["artifacthub.io/changes"]):
        check(entry.get("kind") in ("added", "changed", "deprecated", "removed", "fixed", "security"),
              f"artifacthub.io/changes kind {entry}")
    cargo = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    eq(chart["appVersion"], cargo, "appVersion vs Cargo.toml")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = yaml.safe_load(ann["artifacthub.io/images"])[0]["image"]
    eq(image, f"{values['image']['repository']}:{chart['appVersion']}", "artifacthub.io/images")
    readme = (CHART / "README.md").read_text()
    for s in ("v1beta1.metrics.k8s.io", "apiService.metrics.create", "metrics-server", "tls.type"):
        check(s in readme, f"README lacks {s}")


# ---------------------------------------------------------------- offline: manifests

def strip_helm(obj):
    obj = copy.deepcopy(obj)

    def clean(o):
        if isinstance(o, dict):
            if isinstance(o.get("labels"), dict):
                for k in ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"):
                    o["labels"].pop(k, None)
            for v in o.values():
                clean(v)
        elif isinstance(o, list):
            for v in o:
                clean(v)

    clean(obj)
    return obj


def manifests_copy():
    """manifests/ in a temp dir; rbac.yaml stood in for by the chart's RBAC when absent."""
    dst = WORK / f"manifests-{time.monotonic_ns()}"
    shutil.copytree(MANIFESTS, dst / "manifests")
    standin = not (MANIFESTS / "rbac.yaml").exists()
    if standin:
        rbac = run([HELM, "template", RELEASE, CHART, "-n", NS, "-f", MANIFESTS_VALUES,
                    "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"]).stdout
        docs = [strip_helm(d) for d in yaml.safe_load_all(rbac) if d]
        (dst / "manifests" / "rbac.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return dst, standin


def kustomize(path):
    return [d for d in yaml.safe_load_all(run([KUBECTL, "kustomize", path]).stdout) if d]


def key(d):
    return (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])


def manifests_rendering(values_files=(), sets=()):
    """The chart as manifests/ is made from: ci/manifests-values.yaml, Helm's labels stripped."""
    docs, _ = template([MANIFESTS_VALUES, *values_files], sets)
    return {key(d): strip_helm(d) for d in docs}


def without_namespace(got):
    """manifests/namespace.yaml's Namespace (the chart leaves namespaces to `helm install
    --create-namespace`), checked and taken out of the comparison."""
    ns = [k for k in got if k[0] == "Namespace"]
    eq(ns, [("Namespace", None, MANIFESTS_NS)], "Namespace objects of manifests/")
    return {k: d for k, d in got.items() if k[0] != "Namespace"}


@test("manifests: kubectl kustomize renders; objects equal the chart's (ci/manifests-values.yaml)")
def t_manifests_vs_chart():
    dst, standin = manifests_copy()
    got = without_namespace({key(d): d for d in kustomize(dst / "manifests")})
    want = manifests_rendering()
    eq(sorted(got), sorted(want), "objects of manifests/ vs the chart")
    for k, d in want.items():
        if k[0] in ("ClusterRole", "ClusterRoleBinding", "RoleBinding", "ServiceAccount") and not standin:
            continue  # compared by the rbac test below
        for field in ("spec", "rules", "roleRef", "subjects"):
            eq(got[k].get(field), d.get(field), f"{k[0]} {k[2]} .{field}")
        eq(got[k]["metadata"].get("annotations"), d["metadata"].get("annotations"), f"{k[0]} {k[2]} annotations")
    if standin:
        print("    note: manifests/rbac.yaml is not in this tree; the chart's RBAC stood in for it")


@test("manifests/rbac.yaml: same object names, rules and subjects as the chart")
def t_manifests_rbac():
    if not (MANIFESTS / "rbac.yaml").exists():
        raise Skip("manifests/rbac.yaml not written yet")
    got = {key(d): d for d in yaml.safe_load_all((MANIFESTS / "rbac.yaml").read_text()) if d}
    chart_docs, _ = template([MANIFESTS_VALUES],
                             extra=["--show-only", "templates/rbac.yaml", "--show-only", "templates/serviceaccount.yaml"])
    want = {key(d): d for d in chart_docs}
    missing = sorted(set(want) - set(got))
    check(not missing, f"objects the chart renders but manifests/rbac.yaml lacks: {missing}")
    for k, d in want.items():
        if "roleRef" in d:
            eq(got[k]["roleRef"], d["roleRef"], f"{k} roleRef")
            eq(got[k]["subjects"], d["subjects"], f"{k} subjects")
        if "rules" in d:
            norm = lambda rules: sorted(json.dumps({f: sorted(v) for f, v in r.items()}, sort_keys=True) for r in rules)
            eq(norm(got[k]["rules"]), norm(d["rules"]), f"{k} rules")


@test("manifests/components/records: the chart's records Deployment and ConfigMap")
def t_manifests_records():
    dst, _ = manifests_copy()
    (dst / "overlay").mkdir()
    (dst / "overlay" / "kustomization.yaml").write_text(
        "resources: [../manifests]\ncomponents: [../manifests/components/records]\n")
    got = {key(d): d for d in kustomize(dst / "overlay")}
    seed = yaml.safe_load((ROOT / "src" / "records" / "seed.yaml").read_text())
    vals = WORK / "seed-values.yaml"
    vals.write_text(yaml.safe_dump({"records": {"inline": seed}}))
    want = manifests_rendering([vals])
    dk = ("Deployment", MANIFESTS_NS, RELEASE)
    eq(got[dk]["spec"], want[dk]["spec"], "Deployment spec with the records component")
    ck = ("ConfigMap", MANIFESTS_NS, f"{RELEASE}-records")
    eq(yaml.safe_load(got[ck]["data"]["records.yaml"]), yaml.safe_load(want[ck]["data"]["records.yaml"]),
       "records ConfigMap content")
    sk = ("ConfigMap", MANIFESTS_NS, f"{RELEASE}-sources")
    eq(yaml.safe_load(got[sk]["data"]["sources.yaml"]), yaml.safe_load(want[sk]["data"]["sources.yaml"]),
       "sources ConfigMap content")


@test("manifests/components/postgres: the chart's PostgreSQL source (DSN from the Secret kubedojo-data-api-postgres)")
def t_manifests_postgres():
    dst, _ = manifests_copy()
    (dst / "overlay").mkdir()
    (dst / "overlay" / "kustomization.yaml").write_text(
        "resources: [../manifests]\ncomponents: [../manifests/components/postgres]\n")
    got = {key(d): d for d in kustomize(dst / "overlay")}
    want = manifests_rendering(sets=["sources.postgres.enabled=true",
                                     "sources.postgres.existingSecret=kubedojo-data-api-postgres"])
    dk = ("Deployment", MANIFESTS_NS, RELEASE)
    eq(got[dk]["spec"], want[dk]["spec"], "Deployment spec with the postgres component")
    sk = ("ConfigMap", MANIFESTS_NS, f"{RELEASE}-sources")
    eq(yaml.safe_load(got[sk]["data"]["sources.yaml"]), yaml.safe_load(want[sk]["data"]["sources.yaml"]),
       "sources ConfigMap content")
    check(not find(list(got.values()), "Secret"), "the component ships no Secret (the DSN is the operator's)")


@test("manifests/components/postgres-query: the chart's postgresQuery source (definitions ConfigMap kubedojo-data-api-queries, DSN Secret kubedojo-data-api-postgres), RBAC scoped to that ConfigMap")
def t_manifests_postgres_query():
    dst, _ = manifests_copy()
    (dst / "overlay").mkdir()
    (dst / "overlay" / "kustomization.yaml").write_text(
        "resources: [../manifests]\ncomponents: [../manifests/components/postgres-query]\n")
    got = without_namespace({key(d): d for d in kustomize(dst / "overlay")})
    queries = f"{RELEASE}-queries"
    want = manifests_rendering(sets=["sources.postgresQuery.enabled=true",
                                     "sources.postgres.existingSecret=kubedojo-data-api-postgres",
                                     f"sources.postgresQuery.configMap.name={queries}"])
    eq(sorted(got), sorted(want), "objects with the postgres-query component vs the chart")
    base = {key(d) for d in kustomize(dst / "manifests")}
    added = sorted(k for k in got if k not in base)
    eq(added, sorted([("ConfigMap", MANIFESTS_NS, f"{RELEASE}-sources"),
                      ("Role", MANIFESTS_NS, f"{RELEASE}-query-definitions"),
                      ("RoleBinding", MANIFESTS_NS, f"{RELEASE}-query-definitions")]),
       "what the component adds (no Secret, no definitions ConfigMap: both are the operator's)")
    dk = ("Deployment", MANIFESTS_NS, RELEASE)
    eq(got[dk]["spec"], want[dk]["spec"], "Deployment spec (args, mounts, volumes) with the postgres-query component")
    sk = ("ConfigMap", MANIFESTS_NS, f"{RELEASE}-sources")
    eq(yaml.safe_load(got[sk]["data"]["sources.yaml"]), yaml.safe_load(want[sk]["data"]["sources.yaml"]),
       "sources ConfigMap content")
    for kind in ("Role", "RoleBinding"):
        k = (kind, MANIFESTS_NS, f"{RELEASE}-query-definitions")
        for f in ("rules", "roleRef", "subjects"):
            eq(got[k].get(f), want[k].get(f), f"{kind} .{f}")
        eq(got[k]["metadata"].get("labels"), want[k]["metadata"].get("labels"), f"{kind} labels")
    # exactly scoped: one namespaced Role reads ConfigMaps, only that one, only reading;
    # no rule of the whole rendering reaches Secrets or other ConfigMaps
    role = got[("Role", MANIFESTS_NS, f"{RELEASE}-query-definitions")]
    eq(role["rules"], [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [queries],
                        "verbs": ["get", "list", "watch"]}], "Role rules")
    rules = [(d["kind"], r) for d in got.values() if d["kind"] in ("Role", "ClusterRole") for r in d.get("rules", [])]
    cm_rules = [(kind, r) for kind, r in rules if "configmaps" in r.get("resources", []) or "*" in r.get("resources", [])]
    eq(cm_rules, [("Role", role["rules"][0])], "the only rule on ConfigMaps")
    check(not any("secrets" in r.get("resources", []) for _, r in rules), "no rule on Secrets")
    rb = got[("RoleBinding", MANIFESTS_NS, f"{RELEASE}-query-definitions")]
    eq((rb["roleRef"], rb["subjects"]),
       ({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{RELEASE}-query-definitions"},
        [{"kind": "ServiceAccount", "name": RELEASE, "namespace": MANIFESTS_NS}]), "RoleBinding")
    cfg = yaml.safe_load(got[sk]["data"]["sources.yaml"])
    pq = [s for s in cfg["sources"] if s["kind"] == "postgresQuery"]
    eq([s["configMap"] for s in pq], [{"namespace": MANIFESTS_NS, "name": queries, "key": "records.yaml"}],
       "the source reads the ConfigMap the Role names")
    c = got[dk]["spec"]["template"]["spec"]["containers"][0]
    check("--sources-config=/etc/kubedojo-data-api/sources/sources.yaml" in c["args"], f"args: {c['args']}")
    check(not any("postgres" in a for a in c["args"]), f"no DSN or Secret in the args: {c['args']}")
    vols = {v["name"]: v for v in got[dk]["spec"]["template"]["spec"]["volumes"]}
    eq(vols["postgres-dsn"]["secret"], {"secretName": "kubedojo-data-api-postgres", "defaultMode": 0o400,
                                         "items": [{"key": "dsn", "path": "dsn"}]}, "DSN Secret volume")


@test("manifests/README.md: adding components/metrics-server-takeover gives the chart's metrics.k8s.io APIService")
def t_manifests_takeover():
    text = (MANIFESTS / "README.md").read_text()
    section = text[text.index("## Coming from metrics-server"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    dst, _ = manifests_copy()
    (dst / "my-install").mkdir()
    # the README's kustomization, with its paths pointing at the copy
    (dst / "my-install" / "kustomization.yaml").write_text(block)
    got = without_namespace({key(d): d for d in kustomize(dst / "my-install")})
    want = manifests_rendering(sets=["apiService.metrics.create=true"])
    eq(sorted(got), sorted(want), "objects with the takeover component vs the chart with apiService.metrics.create=true")
    for n in ("v1beta1.metrics.k8s.io", "v1alpha1.data.kubedojo.io"):
        k = ("APIService", None, n)
        eq(got[k]["spec"], want[k]["spec"], f"{n} spec")
        eq(got[k]["metadata"].get("annotations"), want[k]["metadata"].get("annotations"), f"{n} annotations")
    base = kustomize(dst / "manifests")
    eq([d["metadata"]["name"] for d in find(base, "APIService")], ["v1alpha1.data.kubedojo.io"],
       "APIServices of manifests/ without the component (no metrics.k8s.io takeover by default)")


@test("manifests: the lab's names (namespace, Service:443, Certificate, app label, APIService 1000/15, inject-ca-from)")
def t_manifests_lab_names():
    docs = kustomize(MANIFESTS)
    by = {key(d): d for d in docs}
    for d in docs:
        if d["kind"] in ("Namespace", "APIService", "ClusterRole", "ClusterRoleBinding"):
            continue
        want_ns = "kube-system" if d["kind"] == "RoleBinding" else MANIFESTS_NS
        eq(d["metadata"].get("namespace"), want_ns, f"{d['kind']} {d['metadata']['name']} namespace")
    svc = by[("Service", MANIFESTS_NS, "kubedojo-data-api")]
    eq([p["port"] for p in svc["spec"]["ports"]], [443], "Service ports")
    cert = by[("Certificate", MANIFESTS_NS, "kubedojo-data-api-cert")]
    eq(sorted(cert["spec"]["dnsNames"]), sorted(svc_dns(RELEASE, MANIFESTS_NS)), "Certificate dnsNames")
    dep = by[("Deployment", MANIFESTS_NS, "kubedojo-data-api")]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    eq(labels.get("app"), "kubedojo-data-api", "pod label app")
    eq(labels.get("app.kubernetes.io/name"), "kubedojo-data-api", "pod label app.kubernetes.io/name")
    eq(dep["spec"]["selector"]["matchLabels"], SELECTOR, "Deployment selector (the recommended labels)")
    rb = by[("RoleBinding", "kube-system", "kubedojo-data-api-auth-reader")]
    eq(rb["subjects"], [{"kind": "ServiceAccount", "name": "kubedojo-data-api", "namespace": MANIFESTS_NS}],
       "auth-reader subjects")
    a = by[("APIService", None, "v1alpha1.data.kubedojo.io")]
    eq({k: a["spec"].get(k) for k in ("group", "version", "groupPriorityMinimum", "versionPriority",
                                        "insecureSkipTLSVerify", "service")},
       {"group": "data.kubedojo.io", "version": "v1alpha1", "groupPriorityMinimum": 1000, "versionPriority": 15,
        "insecureSkipTLSVerify": False, "service": {"name": "kubedojo-data-api", "namespace": MANIFESTS_NS, "port": 443}},
       "APIService v1alpha1.data.kubedojo.io")
    eq(a["metadata"]["annotations"], {"cert-manager.io/inject-ca-from": "kubedojo-system/kubedojo-data-api-cert"},
       "APIService annotations")
    # the lab's file-by-file path: each file applies on its own (no file needs another's objects
    # to render), and together they are exactly `kubectl apply -k`'s objects
    files = ["namespace.yaml", "rbac.yaml", "certificate.yaml", "service.yaml", "deployment.yaml", "pdb.yaml",
             "apiservice.yaml"]
    eq(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"], files, "kustomization resources")
    filewise = [d for f in files for d in yaml.safe_load_all((MANIFESTS / f).read_text()) if d]
    eq(sorted(map(key, filewise)), sorted(by), "objects of the files vs kubectl kustomize")


def server_binary():
    """The kubedojo-data-api binary to check flags against: $KUBEDOJO_BIN (explicit, so a
    stale build in target/ never decides the result)."""
    c = os.environ.get("KUBEDOJO_BIN", "")
    return c if c and os.access(c, os.X_OK) else None


@test("the server binary accepts every flag the chart passes (each TLS mode, records, metrics, CI values)")
def t_binary_flags():
    binary = server_binary()
    if not binary:
        raise Skip("set KUBEDOJO_BIN=<path to a kubedojo-data-api binary> to run this check")
    help_text = run([binary, "--help"]).stdout
    known = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", help_text)) | {"--v"}
    renders = [template(sets=[f"tls.type={t}", "tls.existingSecret.name=x", "tls.existingSecret.caBundle=x",
                              "metrics.enabled=true", "records.existingConfigMap=r", "records.refreshInterval=1m"])[0]
               for t in ("self", "helm", "cert-manager", "existingSecret")]
    renders += [template([f])[0] for f in sorted((CHART / "ci").glob("*.yaml"))]
    renders.append(template(sets=["sharding.enabled=true"], extra=["--set-json", "goawayChance=0.01"])[0])
    unknown = set()
    for docs in renders:
        for d in find(docs, "Deployment"):
            for a in d["spec"]["template"]["spec"]["containers"][0]["args"]:
                flag = a.split("=", 1)[0]
                if flag not in known:
                    unknown.add(flag)
    check(not unknown, f"{binary} --help does not list {sorted(unknown)}: pods would exit at start-up")


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_and_probe(binary, cert_dir: Path, name=RELEASE, ns=NS):
    """Start `binary` with the chart's TLS flags on 127.0.0.1 and GET /livez and /readyz
    with curl, verifying the certificate against ca.crt for the Service's DNS name."""
    port = free_port()
    args = [binary, f"--secure-port={port}", "--bind-address=127.0.0.1",
            f"--tls-cert-file={cert_dir / 'tls.crt'}", f"--tls-private-key-file={cert_dir / 'tls.key'}"]
    if KUBECONFIG:
        args.append(f"--kubeconfig={KUBECONFIG}")
    log = open(cert_dir / "server.log", "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    host = f"{name}.{ns}.svc"
    try:
        deadline = time.monotonic() + 30
        last = None
        while time.monotonic() < deadline:
            check(proc.poll() is None, f"server exited ({proc.returncode}; with --cluster it gets a kubeconfig): {(cert_dir / 'server.log').read_text()[-2000:]}")
            last = run(["curl", "-sS", "--max-time", "5", "--cacert", cert_dir / "ca.crt",
                        "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/livez"], check_rc=False)
            if last.returncode == 0:
                break
            time.sleep(0.5)
        check(last is not None and last.returncode == 0, f"/livez over verified TLS failed: {last.stderr if last else ''}")
        ready = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--cacert",
                     cert_dir / "ca.crt", "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}/readyz"],
                    check_rc=False)
        check(ready.returncode == 0, f"/readyz over verified TLS failed: {ready.stderr}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@test("the server binary serves /livez with the helm-mode Secret (RSA PKCS#1) and an EC (SEC1) key, verified by CA and Service name")
def t_binary_tls():
    binary = server_binary()
    if not binary:
        raise Skip("set KUBEDOJO_BIN=<path to a kubedojo-data-api binary> to run this check")
    if not shutil.which("curl"):
        raise Skip("curl not found")
    docs, _ = template()
    secret = one(docs, "Secret", f"{RELEASE}-tls")
    d = WORK / "binary-helm-tls"
    d.mkdir()
    for k in ("ca.crt", "tls.crt", "tls.key"):
        (d / k).write_bytes(base64.b64decode(secret["data"][k]))
    serve_and_probe(binary, d)
    # the key encoding cert-manager writes for ECDSA (SEC1 "EC PRIVATE KEY")
    d = WORK / "binary-ec-tls"
    make_ca_and_cert(d, svc_dns())
    sec1 = openssl("ec", "-in", str(d / "tls.key"))
    check("BEGIN EC PRIVATE KEY" in sec1, "openssl did not write SEC1")
    (d / "tls.key").write_text(sec1)
    serve_and_probe(binary, d)


# ---------------------------------------------------------------- offline: image recipe

@test("Dockerfile: static build, distroless nonroot final stage, ENTRYPOINT the binary; .dockerignore")
def t_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    check(len(froms) >= 2 and froms[0].startswith("rust:1.95"), f"build stage: {froms}")
    check(froms[-1] in ("gcr.io/distroless/static-debian12:nonroot", "scratch"), f"final stage: {froms[-1]}")
    check("+crt-static" in text and "x86_64-unknown-linux-gnu" in text, "static glibc build flags")
    check(re.search(r"^USER\s+65532(:65532)?\s*$", text, re.M), "USER 65532")
    check(re.search(r'^ENTRYPOINT\s+\["/kubedojo-data-api"\]', text, re.M), "ENTRYPOINT")
    ignore = (ROOT / ".dockerignore").read_text().split()
    for p in ("target", ".git"):
        check(any(l.strip("/") == p for l in ignore), f".dockerignore lacks {p}")
    script = (ROOT / "scripts" / "build-static.sh").read_text()
    build = re.search(r"cargo build[^\\\n]*", text).group(0).strip()
    check(build.split("&&")[0].strip() in script, f"scripts/build-static.sh does not run the Dockerfile's {build!r}")


# ---------------------------------------------------------------- cluster

class Skip(Exception):
    pass


def kubectl(*args, check_rc=True, input_text=None):
    return run([KUBECTL, *args], check_rc=check_rc, input_text=input_text)


def kget(kind, name, ns=None):
    args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
    p = kubectl(*args, check_rc=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


# The Prometheus Operator's ServiceMonitor CRD is a schema-less stand-in (only the
# ServiceMonitor's storage is checked); cert-manager's CRDs are the real ones.
STUB_CRDS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com, labels: {kubedojo.io/test-stand-in: "true"}}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: servicemonitors, singular: servicemonitor, kind: ServiceMonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
CERT_MANAGER_CRDS: Path | None = None
_CRDS_APPLIED = False


def ensure_crds():
    """cert-manager's real CRDs (tests/e2e/tools.sh cert-manager-crds: rendered from its chart in
    the Go module) and the ServiceMonitor stand-in."""
    global _CRDS_APPLIED
    if _CRDS_APPLIED:
        return
    check(CERT_MANAGER_CRDS is not None and CERT_MANAGER_CRDS.is_file(),
          "no cert-manager CRDs file (run.sh passes --cert-manager-crds from tests/e2e/tools.sh cert-manager-crds)")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", CERT_MANAGER_CRDS)
    kubectl("apply", "-f", "-", input_text=STUB_CRDS)
    for crd in ("issuers.cert-manager.io", "certificates.cert-manager.io", "clusterissuers.cert-manager.io",
                "certificaterequests.cert-manager.io", "servicemonitors.monitoring.coreos.com"):
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
    _CRDS_APPLIED = True


def helm_install(release, ns, values_files=(), sets=(), set_files=(), upgrade=False):
    args = helm_args(values_files, sets, set_files)
    if not upgrade:
        run([HELM, "install", release, CHART, "-n", ns, "--dry-run=server", *args])
    p = run([HELM, "upgrade" if upgrade else "install", release, CHART, "-n", ns, "--timeout", "2m", *args])
    return p.stdout


def helm_uninstall(release, ns):
    run([HELM, "uninstall", release, "-n", ns, "--wait", "--timeout", "2m"])
    for n in ("v1beta1.metrics.k8s.io", "v1alpha1.data.kubedojo.io"):
        a = kget("apiservice", n)
        check(a is None or a["metadata"].get("labels", {}).get("app.kubernetes.io/instance") != release,
              f"APIService {n} left behind by helm uninstall")


def installed_matches_render(release, ns, values_files=(), sets=(), set_files=()):
    """Every rendered object exists on the server; Deployment args and APIService specs as rendered."""
    docs, _ = template(values_files, sets, set_files, release=release, ns=ns)
    for d in docs:
        got = kget(d["kind"] if "." not in d["apiVersion"].split("/")[0] else
                   f"{d['kind'].lower()}.{d['apiVersion'].split('/')[0]}",
                   d["metadata"]["name"], d["metadata"].get("namespace"))
        check(got is not None, f"{d['kind']} {d['metadata']['name']} not found on the server after helm install")
        if d["kind"] == "Deployment":
            eq(got["spec"]["template"]["spec"]["containers"][0]["args"],
               d["spec"]["template"]["spec"]["containers"][0]["args"], "installed Deployment args")
        if d["kind"] == "APIService" and "caBundle" not in d["spec"]:
            for f in ("insecureSkipTLSVerify", "groupPriorityMinimum", "versionPriority", "service"):
                eq(got["spec"].get(f, False if f == "insecureSkipTLSVerify" else None),
                   d["spec"].get(f, False if f == "insecureSkipTLSVerify" else None), f"installed {d['metadata']['name']} {f}")
    return docs


@test("cluster: built-in APIServices all rank above the chart's groupPriorityMinimum values", cluster=True)
def c_priorities():
    items = json.loads(kubectl("get", "apiservices", "-o", "json").stdout)["items"]
    # built-in groups are registered "onstart"; CRD groups ("true") get 1000
    local = [a["spec"]["groupPriorityMinimum"] for a in items
             if (a["metadata"].get("labels") or {}).get("kube-aggregator.kubernetes.io/automanaged") == "onstart"]
    check(local, "no built-in APIServices listed")
    schema = json.loads((CHART / "values.schema.json").read_text())
    cap = schema["properties"]["apiService"]["properties"]["metrics"]["properties"]["groupPriorityMinimum"]["maximum"]
    check(cap < min(local), f"schema allows groupPriorityMinimum {cap}, built-ins start at {min(local)}")
    print(f"    built-in groupPriorityMinimum: {min(local)}..{max(local)}; chart allows at most {cap}")


@test("cluster: manifests/ with cert-manager's real CRDs: server-side dry-run, apply --server-side -k (strict validation), delete", cluster=True)
def c_manifests():
    dst, standin = manifests_copy()
    docs = kustomize(dst / "manifests")
    plain = [d for d in docs if not d["apiVersion"].startswith("cert-manager.io/")]
    check(len(plain) < len(docs), "no cert-manager objects in manifests/")
    ensure_crds()
    # dry-run: the Namespace does not exist yet, so only the cluster-scoped objects and the
    # kube-system RoleBinding can be checked before the real apply
    kubectl("apply", "--dry-run=server", "-f", "-", input_text=yaml.safe_dump_all(
        [d for d in plain if d["metadata"].get("namespace") in (None, "kube-system")]))
    kubectl("apply", "--server-side", "--validate=strict", "-k", dst / "manifests")
    kubectl("apply", "--dry-run=server", "--validate=strict", "-k", dst / "manifests")
    a = kget("apiservice", "v1alpha1.data.kubedojo.io")
    eq(a["metadata"]["annotations"].get("cert-manager.io/inject-ca-from"), "kubedojo-system/kubedojo-data-api-cert",
       "inject annotation")
    check(kget("apiservice", "v1beta1.metrics.k8s.io") is None, "manifests/ took metrics.k8s.io over without the component")
    cert = kget("certificate.cert-manager.io", "kubedojo-data-api-cert", MANIFESTS_NS)
    eq(cert["spec"]["privateKey"], {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
       "Certificate privateKey as stored (real schema)")
    # without the Namespace: there is no namespace controller here to finish deleting it
    rest = [d for d in docs if d["kind"] != "Namespace"]
    kubectl("delete", "-f", "-", "--wait=true", "--timeout=60s", input_text=yaml.safe_dump_all(rest))
    check(kget("apiservice", "v1alpha1.data.kubedojo.io") is None, "APIService left after kubectl delete")
    if standin:
        print("    note: rbac.yaml stood in for by the chart's RBAC")


@test("cluster: manifests/ + components/postgres-query applied (strict); the ServiceAccount may get, list and watch the definitions ConfigMap by name, nothing else", cluster=True)
def c_manifests_postgres_query():
    dst, _ = manifests_copy()
    (dst / "overlay").mkdir()
    (dst / "overlay" / "kustomization.yaml").write_text(
        "resources: [../manifests]\ncomponents: [../manifests/components/postgres-query]\n")
    docs = kustomize(dst / "overlay")
    ensure_crds()
    kubectl("apply", "--server-side", "--validate=strict", "-k", dst / "overlay")
    queries = f"{RELEASE}-queries"
    for name in (queries, "other"):
        kubectl("create", "configmap", name, "-n", MANIFESTS_NS, "--from-literal=records.yaml=[]")
    sa = ["--as", f"system:serviceaccount:{MANIFESTS_NS}:{RELEASE}",
          "--as-group", "system:serviceaccounts", "--as-group", f"system:serviceaccounts:{MANIFESTS_NS}"]
    base = f"/api/v1/namespaces/{MANIFESTS_NS}/configmaps"
    by_name = f"fieldSelector=metadata.name%3D{queries}"
    allowed = {
        "get": ["get", "configmap", queries, "-n", MANIFESTS_NS, "-o", "name"],
        "list by name": ["get", "--raw", f"{base}?{by_name}"],
        "watch by name": ["get", "--raw", f"{base}?{by_name}&watch=true&timeoutSeconds=1"],
    }
    denied = {
        "list all": ["get", "--raw", base],
        "get another ConfigMap": ["get", "configmap", "other", "-n", MANIFESTS_NS],
        "list by another name": ["get", "--raw", f"{base}?fieldSelector=metadata.name%3Dother"],
        "the same name in another namespace": ["get", "configmap", queries, "-n", "default"],
        "update it": ["label", "configmap", queries, "-n", MANIFESTS_NS, "x=y"],
        "the DSN Secret": ["get", "secret", "kubedojo-data-api-postgres", "-n", MANIFESTS_NS],
    }
    try:
        for what, args in allowed.items():
            p = kubectl(*args, *sa, check_rc=False)
            check(p.returncode == 0, f"{what}: {p.stderr.strip()}")
        for what, args in denied.items():
            p = kubectl(*args, *sa, check_rc=False)
            check(p.returncode != 0 and "forbidden" in p.stderr.lower(), f"{what} allowed: {p.stdout}{p.stderr}")
    finally:
        kubectl("delete", "configmap", queries, "other", "-n", MANIFESTS_NS, "--ignore-not-found")
        rest = [d for d in docs if d["kind"] != "Namespace"]
        kubectl("delete", "-f", "-", "--wait=true", "--timeout=60s", input_text=yaml.safe_dump_all(rest))


@test("cluster: cert-manager's real CRD schemas validate our Issuer and Certificate (and reject a bad one)", cluster=True)
def c_cert_manager_schema():
    ensure_crds()
    crd = kget("crd", "certificates.cert-manager.io")
    check("kubedojo.io/test-stand-in" not in (crd["metadata"].get("labels") or {}), "certificates CRD is a stand-in")
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    check("usages" in props and "privateKey" in props, "certificates CRD has no real schema")
    docs, _ = template([MANIFESTS_VALUES])
    objs = [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]
    eq(sorted(d["kind"] for d in objs), ["Certificate", "Issuer"], "cert-manager objects of the chart")
    kubectl("create", "namespace", MANIFESTS_NS, check_rc=False)
    kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input_text=yaml.safe_dump_all(objs))
    bad = copy.deepcopy(one(objs, "Certificate"))
    bad["spec"]["usages"] = ["server auth", "not-a-usage"]
    bad["spec"]["privateKey"]["algorithm"] = "DSA"
    p = kubectl("apply", "--dry-run=server", "-f", "-", input_text=yaml.safe_dump(bad), check_rc=False)
    check(p.returncode != 0 and "not-a-usage" in p.stderr and "DSA" in p.stderr,
          f"the real schema should reject usages/algorithm values: rc={p.returncode} {p.stderr}")


def _install_mode(release, ns, values_files=(), sets=(), set_files=(), after=None):
    ensure_crds()
    out = helm_install(release, ns, values_files, sets, set_files)
    check("kubectl top" in out or "apiService.metrics.create=false" in out, "helm install printed no NOTES")
    try:
        docs = installed_matches_render(release, ns, values_files, sets, set_files)
        if after:
            after(docs)
    finally:
        helm_uninstall(release, ns)


@test("cluster: tls.type=helm install; caBundle = Secret ca.crt; upgrade keeps the certificate (lookup)", cluster=True)
def c_helm():
    def after(_):
        secret = kget("secret", f"{RELEASE}-tls", NS)
        for n in ("v1beta1.metrics.k8s.io", "v1alpha1.data.kubedojo.io"):
            eq(kget("apiservice", n)["spec"].get("caBundle"), secret["data"]["ca.crt"], f"{n} caBundle")
        helm_install(RELEASE, NS, [ci("tls-helm-values.yaml")], upgrade=True)
        again = kget("secret", f"{RELEASE}-tls", NS)
        eq(again["data"], secret["data"], "Secret after helm upgrade (must be reused)")
        eq(kget("apiservice", "v1beta1.metrics.k8s.io")["spec"].get("caBundle"), secret["data"]["ca.crt"],
           "caBundle after upgrade")
    _install_mode(RELEASE, NS, [ci("tls-helm-values.yaml")], after=after)


@test("cluster: tls.type=self install (insecureSkipTLSVerify accepted by the server)", cluster=True)
def c_self():
    def after(_):
        for n in ("v1beta1.metrics.k8s.io", "v1alpha1.data.kubedojo.io"):
            eq(kget("apiservice", n)["spec"].get("insecureSkipTLSVerify"), True, f"{n} insecureSkipTLSVerify")
    _install_mode(RELEASE, NS, [ci("tls-self-values.yaml")], after=after)


@test("cluster: tls.type=cert-manager install (cert-manager's real CRDs; no cert-manager controller here)", cluster=True)
def c_cert_manager():
    def after(_):
        for n in ("v1beta1.metrics.k8s.io", "v1alpha1.data.kubedojo.io"):
            eq(kget("apiservice", n)["metadata"]["annotations"].get("cert-manager.io/inject-ca-from"),
               f"{NS}/{RELEASE}", f"{n} inject-ca-from")
        check(kget("certificate.cert-manager.io", RELEASE, NS), "Certificate not stored")
        check(kget("issuer.cert-manager.io", f"{RELEASE}-selfsigned", NS), "Issuer not stored")
    _install_mode(RELEASE, NS, [ci("tls-certManager-values.yaml")], after=after)


@test("cluster: tls.type=existingSecret install; caBundle looked up from the Secret's ca.crt", cluster=True)
def c_existing():
    name = "kubedojo-data-api-existing-tls"
    ca, crt, key_ = make_ca_and_cert(WORK / "cluster-existing", svc_dns())
    kubectl("-n", NS, "delete", "secret", name, "--ignore-not-found")
    kubectl("-n", NS, "create", "secret", "generic", name, "--type=kubernetes.io/tls",
            f"--from-file=tls.crt={crt}", f"--from-file=tls.key={key_}", f"--from-file=ca.crt={ca}")

    def after(_):
        want = base64.b64encode(ca.read_bytes()).decode()
        for n in ("v1beta1.metrics.k8s.io", "v1alpha1.data.kubedojo.io"):
            eq(kget("apiservice", n)["spec"].get("caBundle"), want, f"{n} caBundle from lookup")
        dep = kget("deployment", RELEASE, NS)
        vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        eq(vols["tls"]["secret"]["secretName"], name, "tls volume")

    try:
        _install_mode(RELEASE, NS, [ci("tls-existingSecret-values.yaml")], after=after)
        check(kget("secret", name, NS) is not None, "helm uninstall deleted the user's Secret")
    finally:
        kubectl("-n", NS, "delete", "secret", name, "--ignore-not-found")


@test("cluster: records, keep-metrics-server and ci-values installs", cluster=True)
def c_misc():
    def after_records(_):
        cm = kget("configmap", f"{RELEASE}-records", NS)
        eq(len(yaml.safe_load(cm["data"]["records.yaml"])), 3, "records in the stored ConfigMap")
    _install_mode(RELEASE, NS, [ci("records-values.yaml")], after=after_records)

    def after_keep(_):
        check(kget("apiservice", "v1beta1.metrics.k8s.io") is None, "metrics APIService created with create=false")
    _install_mode(RELEASE, NS, [ci("keep-metrics-server-values.yaml")], after=after_keep)
    _install_mode(RELEASE, NS, [ci("ci-values.yaml")])


@test("cluster: full-values.yaml into namespace kubedojo as release kd (ServiceMonitor via stand-in CRD)", cluster=True)
def c_full():
    kubectl("create", "namespace", "kubedojo", check_rc=False)

    def after(_):
        rb = kget("rolebinding", "kd-kubedojo-data-api-auth-reader", "kube-system")
        eq(rb["subjects"][0]["namespace"], "kubedojo", "auth-reader subject namespace")
        check(kget("servicemonitor.monitoring.coreos.com", "kd-kubedojo-data-api", "kubedojo"), "ServiceMonitor not stored")
    _install_mode("kd", "kubedojo", [ci("full-values.yaml")], after=after)


@test("cluster: taking over metrics-server's v1beta1.metrics.k8s.io as the README says", cluster=True)
def c_takeover():
    ms = {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1beta1.metrics.k8s.io", "labels": {"k8s-app": "metrics-server"}},
        "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": True,
                 "groupPriorityMinimum": 100, "versionPriority": 100,
                 "service": {"name": "metrics-server", "namespace": "kube-system"}},
    }
    kubectl("apply", "-f", "-", input_text=json.dumps(ms))
    installed = False
    try:
        p = run([HELM, "install", RELEASE, CHART, "-n", NS], check_rc=False)
        check(p.returncode != 0 and "v1beta1.metrics.k8s.io" in p.stderr and "exists" in p.stderr,
              f"helm install over metrics-server's APIService should fail: {p.stderr}")
        # the README's hand-over: mark the APIService as the release's, then install --force
        kubectl("annotate", "apiservice", "v1beta1.metrics.k8s.io", f"meta.helm.sh/release-name={RELEASE}",
                f"meta.helm.sh/release-namespace={NS}", "--overwrite")
        kubectl("label", "apiservice", "v1beta1.metrics.k8s.io", "app.kubernetes.io/managed-by=Helm", "--overwrite")
        ensure_crds()
        run([HELM, "install", RELEASE, CHART, "-n", NS, "--force"])
        installed = True
        a = kget("apiservice", "v1beta1.metrics.k8s.io")
        eq(a["spec"]["service"]["name"], RELEASE, "APIService now points at kubedojo-data-api")
        check(not a["spec"].get("insecureSkipTLSVerify") and a["spec"].get("caBundle"), "taken-over APIService TLS")
        check("k8s-app" not in a["metadata"]["labels"], "metrics-server's labels left on the APIService")
    finally:
        if installed or RELEASE in run([HELM, "list", "-n", NS, "-q"]).stdout.split():
            helm_uninstall(RELEASE, NS)
        kubectl("delete", "apiservice", "v1beta1.metrics.k8s.io", "--ignore-not-found")


@test("cluster: adoption without --force keeps metrics-server's spec (why the README says --force)", cluster=True)
def c_takeover_no_force():
    ms = {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1beta1.metrics.k8s.io",
                     "labels": {"k8s-app": "metrics-server", "app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NS}},
        "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": True,
                 "groupPriorityMinimum": 100, "versionPriority": 100,
                 "service": {"name": "metrics-server", "namespace": "kube-system"}},
    }
    kubectl("apply", "-f", "-", input_text=json.dumps(ms))
    try:
        ensure_crds()
        run([HELM, "install", RELEASE, CHART, "-n", NS])
        eq(kget("apiservice", "v1beta1.metrics.k8s.io")["spec"]["service"]["name"], "metrics-server",
           "helm 3 adoption without --force (if this changes, simplify the README)")
    finally:
        if RELEASE in run([HELM, "list", "-n", NS, "-q"]).stdout.split():
            helm_uninstall(RELEASE, NS)
        kubectl("delete", "apiservice", "v1beta1.metrics.k8s.io", "--ignore-not-found")


# ---------------------------------------------------------------- main

def main():
    global HELM, KUBECTL, CLUSTER, KUBECONFIG, CERT_MANAGER_CRDS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--helm", default="helm")
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--cluster", type=Path, help="directory holding admin.kubeconfig of a throwaway kube-apiserver")
    ap.add_argument("--cert-manager-crds", type=Path, help="cert-manager's CRDs (tests/e2e/tools.sh cert-manager-crds)")
    ap.add_argument("-k", dest="pattern", help="only checks whose name contains this")
    ap.add_argument("--write-readme", action="store_true", help="regenerate the README values table and exit")
    opts = ap.parse_args()
    HELM, KUBECTL = opts.helm, opts.kubectl
    CERT_MANAGER_CRDS = opts.cert_manager_crds
    if opts.write_readme:
        write_readme()
        print(f"wrote the values table of {CHART / 'README.md'}")
        return 0
    if opts.cluster:
        CLUSTER = opts.cluster.resolve()
        KUBECONFIG = str(CLUSTER / "admin.kubeconfig")
        if not Path(KUBECONFIG).exists():
            print(f"no {KUBECONFIG}", file=sys.stderr)
            return 2
    passed = failed = skipped = 0
    for name, fn, needs_cluster in TESTS:
        if needs_cluster and not CLUSTER:
            continue
        if opts.pattern and opts.pattern not in name:
            continue
        start = time.monotonic()
        try:
            fn()
        except Skip as e:
            skipped += 1
            print(f"SKIP {name}: {e}")
            continue
        except Failure as e:
            failed += 1
            print(f"FAIL {name}\n     {str(e).replace(chr(10), chr(10) + '     ')}")
            continue
        except Exception:  # a bug in the test itself, or a tool crashing
            failed += 1
            print(f"FAIL {name} (error)\n{traceback.format_exc()}")
            continue
        passed += 1
        print(f"ok   {name} ({time.monotonic() - start:.1f}s)")
    shutil.rmtree(WORK, ignore_errors=True)
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks of the deployment files under deploy/, run by scripts/check-deploy inside .venv-deploy.

Each subcommand prints one line per thing it checked and exits 1 with the reasons when a file
is wrong. Every validator is first shown a deliberately broken document (a "negative control")
and must refuse it, so a validator that silently accepts everything fails the check instead of
passing it.

  kubernetes      kustomize build (kubectl's built-in kustomize, when kubectl is installed) of
                  deploy/kubernetes/base, deploy/kubernetes/cronjob and
                  deploy/kubernetes/replicated; every object validated strictly against the
                  Kubernetes OpenAPI schemas (kubernetes-validate) or, for ServiceMonitor and
                  PrometheusRule, against the prometheus-operator CRD schemas
                  (cloudcoil-models-prometheus-operator); then the properties the rotator needs
                  (coordination off: one replica and Recreate; [coordination] mode = "dynamodb":
                  at least two replicas, RollingUpdate with maxUnavailable 0, one
                  PodDisruptionBudget that keeps a pod and lets one go, a spread across nodes;
                  probes on /healthz and /readyz, hardening, ports that agree, a NetworkPolicy
                  that covers every pod and whose peers can match, the PrometheusRule =
                  alerts.yml; the CronJob pushes to a Pushgateway as one fixed group, and may
                  reach it). The replicated overlay is also broken one way at a time, and each
                  break must be refused.
  prometheusrule  regenerate deploy/kubernetes/base/prometheusrule.yaml from
                  deploy/prometheus/alerts.yml (--write), or check that they agree.
  systemd         what systemd-analyze cannot know of amg-token-rotator-once.service: `once`
                  writes its textfile into the unit's state directory, and ExecStopPost (as root,
                  after every run) puts it into node_exporter's textfile directory atomically,
                  run against temporary directories standing in for both.
  ecs             every key and type (and enum value) of the ECS files against botocore's models
                  of ecs RegisterTaskDefinition / CreateService, scheduler CreateSchedule and (each
                  alarm of alarms.json) cloudwatch PutMetricAlarm, with botocore's own
                  ParamValidator; then the Fargate properties the rotator needs, and that the once
                  task emits EMF lines into CloudWatch Logs which the alarms read; a service runs
                  one task unless its task definition sets AMG_ROTATOR__COORDINATION__MODE=dynamodb,
                  and then at least two, replaced one new before one old (service-replicated.json);
                  its services broken one way at a time must each be refused.
  dynamodb        deploy/dynamodb/create-table.json against botocore's model of dynamodb
                  CreateTable; the key and billing the rotator's lease table needs; table.yaml
                  (CloudFormation) declares the same table; and its name is the one the
                  replicated configuration uses.
  dockerfile      what hadolint cannot know: COPY sources exist and pass the dockerignore, the
                  runtime user is not root, the ports and the health probe match.
  render          substitute the ${PLACEHOLDER}s of a policy with example values (for parliament).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "amg-token-rotator"
CONFIG_DIR = "/etc/amg-token-rotator"
DEFAULT_LISTEN_PORT = 8947
DEFAULT_SHUTDOWN_TIMEOUT_S = 60
# The oldest Kubernetes the manifests support (CronJob timeZone is GA in 1.27) and the newest
# kubernetes-validate has schemas for.
K8S_VERSIONS = ["1.27"]
# Example values for the placeholders the JSON files use; README.md lists what each means.
PLACEHOLDERS = {
    "AWS_REGION": "us-east-1",
    "ACCOUNT_ID": "123456789012",
    "KMS_KEY_ID": "1234abcd-12ab-34cd-56ef-1234567890ab",
    "CLUSTER": "amg-token-rotator",
    "SUBNET_ID": "subnet-0123456789abcdef0",
    "SECURITY_GROUP_ID": "sg-0123456789abcdef0",
}


class Problems:
    """Collects what is wrong, so one run reports everything."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, where: str, what: str) -> None:
        if not ok:
            self.items.append(f"{where}: {what}")

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def exit(self, title: str) -> None:
        if self.items:
            print(f"FAIL {title}:", file=sys.stderr)
            for item in self.items:
                print(f"  - {item}", file=sys.stderr)
            sys.exit(1)


def ok(line: str) -> None:
    print(f"  ok  {line}")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------
# Placeholders.


def render(text: str, where: str) -> str:
    """Substitutes ${NAME} placeholders with example values; an unknown name is an error."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in PLACEHOLDERS:
            raise SystemExit(f"{where}: unknown placeholder ${{{name}}} (known: {sorted(PLACEHOLDERS)})")
        return PLACEHOLDERS[name]

    return re.sub(r"\$\{([A-Z_]+)\}", one, text)


def cmd_render(args: argparse.Namespace) -> None:
    src = Path(args.src)
    Path(args.dst).write_text(render(src.read_text(), str(src)))


# ---------------------------------------------------------------------------------------------
# Kubernetes.


def strict(schema: Any) -> Any:
    """Makes a JSON schema refuse unknown keys, as the API server does for typed fields. Also
    moves Go's mid-pattern inline flags ("^(?i)abort") to the front, where Python's re wants them."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if isinstance(out.get("pattern"), str) and "(?i)" in out["pattern"][1:]:
            out["pattern"] = "(?i)" + out["pattern"].replace("(?i)", "")
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], Any]:
    """ServiceMonitor and PrometheusRule schemas, from the pydantic models that
    cloudcoil-models-prometheus-operator generates from the prometheus-operator CRDs."""
    import jsonschema
    from cloudcoil.models.prometheus_operator import v1 as po

    out = {}
    for model in (po.ServiceMonitor, po.PrometheusRule):
        schema = strict(model.model_json_schema(by_alias=True, mode="validation"))
        jsonschema.Draft202012Validator.check_schema(schema)
        out[("monitoring.coreos.com/v1", model.__name__)] = jsonschema.Draft202012Validator(schema)
    return out


def k8s_errors(doc: dict[str, Any]) -> list[str]:
    """Every schema error of one object (empty when it is valid)."""
    import kubernetes_validate

    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in crd_validators():
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in crd_validators()[key].iter_errors(doc)
        ]
    errors = []
    for version in K8S_VERSIONS + [kubernetes_validate.latest_version()]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"Kubernetes {version}: {'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(e.message)
    return errors


def k8s_negative_controls(p: Problems) -> None:
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/base/deployment.yaml").read_text())
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    p.check(bool(k8s_errors(broken)), "kubernetes-validate", "accepted a Deployment with 'replica'")
    monitor = yaml.safe_load((ROOT / "deploy/kubernetes/base/servicemonitor.yaml").read_text())
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["prot"] = broken["spec"]["endpoints"][0].pop("port")
    p.check(bool(k8s_errors(broken)), "CRD schema", "accepted a ServiceMonitor endpoint with 'prot'")
    broken = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
              "metadata": {"name": "x"}, "spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}}
    p.check(bool(k8s_errors(broken)), "CRD schema", "accepted a PrometheusRule rule without 'expr'")


def kustomize_build(directory: Path) -> list[dict[str, Any]] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kubectl kustomize {rel(directory)} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kustomization_files(directory: Path, p: Problems) -> list[Path]:
    """The files a kustomization names, each checked to exist (recursively into bases)."""
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    files: list[Path] = []
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            p.check((path / "kustomization.yaml").exists(), rel(kfile), f"{entry} has no kustomization.yaml")
            files.extend(kustomization_files(path, p))
        else:
            p.check(path.exists(), rel(kfile), f"resource {entry} does not exist")
            files.append(path)
    for gen in k.get("configMapGenerator", []):
        for entry in gen.get("files", []):
            p.check((directory / entry.split("=")[-1]).exists(), rel(kfile), f"configMapGenerator file {entry} does not exist")
    for patch in k.get("patches", []):
        if "path" in patch:
            p.check((directory / patch["path"]).exists(), rel(kfile), f"patch {patch['path']} does not exist")
    return files


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def duration_seconds(text: str) -> int:
    """Enough of humantime for the shutdown_timeout values a config would use ("90s", "2m")."""
    total = 0
    for number, unit in re.findall(r"(\d+)\s*([a-z]+)", text):
        total += int(number) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}.get(unit, 0)
    return total


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for d in docs:
        if d["kind"] == "Deployment":
            yield f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["metadata"], d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            t = d["spec"]["jobTemplate"]["spec"]["template"]
            yield f"CronJob/{d['metadata']['name']}", t["metadata"], t["spec"]


def k8s_properties(name: str, docs: list[dict[str, Any]], p: Problems) -> None:
    """What the rotator needs of the built manifests, beyond their schemas."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        if d["kind"] != "Namespace":
            p.check(d["metadata"].get("namespace") == NAMESPACE, name,
                    f"{d['kind']}/{d['metadata']['name']} is not in namespace {NAMESPACE}")
    accounts = {d["metadata"]["name"]: d for d in by_kind.get("ServiceAccount", [])}
    for sa in accounts.values():
        p.check("eks.amazonaws.com/role-arn" in sa["metadata"].get("annotations", {}), name,
                f"ServiceAccount/{sa['metadata']['name']} has no eks.amazonaws.com/role-arn annotation (IRSA)")
    config_maps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    policies = by_kind.get("NetworkPolicy", [])
    p.check(bool(policies), name, "no NetworkPolicy")

    templates = list(pod_templates(docs))
    p.check(bool(templates), name, "no Deployment or CronJob")
    # [coordination] mode of each pod template, as the rotator would read it (file, then env).
    modes: dict[str, str] = {}
    for where, meta, spec in templates:
        where = f"{name} {where}"
        labels = meta.get("labels", {})
        p.check(spec.get("serviceAccountName") in accounts, where, "serviceAccountName names no ServiceAccount here")
        p.check(spec.get("automountServiceAccountToken") is False, where, "mounts a Kubernetes API token it never uses")
        psc = spec.get("securityContext", {})
        p.check(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot is not true")
        p.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "pod seccompProfile is not RuntimeDefault")
        p.check(any(labels_match(np["spec"]["podSelector"].get("matchLabels", {}), labels) for np in policies),
                where, f"no NetworkPolicy selects its pods (labels {labels})")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        p.check(len(spec["containers"]) == 1, where, "expected exactly one container")
        c = spec["containers"][0]
        csc = c.get("securityContext", {})
        p.check(csc.get("readOnlyRootFilesystem") is True, where, "root file system is not read-only")
        p.check(csc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation is not false")
        p.check(csc.get("runAsNonRoot") is True, where, "container runAsNonRoot is not true")
        p.check(csc.get("capabilities", {}).get("drop") == ["ALL"], where, "capabilities are not all dropped")
        p.check(csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "container seccompProfile is not RuntimeDefault")
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                p.check(res in c.get("resources", {}).get(kind, {}), where, f"no {kind}.{res}")
        p.check(":" in c["image"].rsplit("/", 1)[-1], where, f"image {c['image']} has no tag (kustomize images: not applied?)")
        args = c.get("args", [])
        expected = "run" if where.split()[-1].startswith("Deployment/") else "once"
        p.check(args[:1] == [expected], where, f"args {args} do not start with {expected!r}")
        config_path = args[args.index("--config") + 1] if "--config" in args else f"{CONFIG_DIR}/config.toml"
        mount = next((m for m in c.get("volumeMounts", []) if config_path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        config: dict[str, Any] = {}
        if mount is None:
            p.add(where, f"--config {config_path} is on no volume mount")
        else:
            p.check(mount.get("readOnly") is True, where, "the configuration is mounted writable")
            cm_name = volumes.get(mount["name"], {}).get("configMap", {}).get("name")
            key = config_path.rsplit("/", 1)[-1]
            if cm_name not in config_maps:
                p.add(where, f"volume {mount['name']} is no ConfigMap of this build")
            elif key not in config_maps[cm_name].get("data", {}):
                p.add(where, f"ConfigMap {cm_name} has no key {key}")
            else:
                try:
                    config = tomllib.loads(config_maps[cm_name]["data"][key])
                except tomllib.TOMLDecodeError as e:
                    p.add(where, f"ConfigMap {cm_name} {key} is not TOML: {e}")
        env = {e["name"]: e for e in c.get("env", [])}
        modes[where] = coordination_mode(config, env)
        daemon = config.get("daemon", {})
        shutdown = duration_seconds(daemon.get("shutdown_timeout", f"{DEFAULT_SHUTDOWN_TIMEOUT_S}s"))
        p.check(spec.get("terminationGracePeriodSeconds", 30) > shutdown, where,
                f"terminationGracePeriodSeconds does not exceed daemon.shutdown_timeout ({shutdown}s)")
        if expected == "run":
            listen_port = int(str(daemon.get("listen", f"0.0.0.0:{DEFAULT_LISTEN_PORT}")).rsplit(":", 1)[-1])
            ports = {pt.get("name"): pt["containerPort"] for pt in c.get("ports", [])}
            p.check(listen_port in ports.values(), where, f"no containerPort {listen_port} (daemon.listen)")
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = c.get(probe, {}).get("httpGet", {})
                port = ports.get(get.get("port"), get.get("port"))
                p.check(get.get("path") == path and port == listen_port, where,
                        f"{probe} is not GET {path} on port {listen_port}")
            for np in policies:
                allowed = [pt.get("port") for rule in np["spec"].get("ingress", []) for pt in rule.get("ports", [])]
                p.check(listen_port in allowed, name, f"NetworkPolicy/{np['metadata']['name']} does not admit port {listen_port} (Prometheus)")
    for d in by_kind.get("Deployment", []):
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        if modes.get(f"{name} Deployment/{d['metadata']['name']}") == "dynamodb":
            replicated_deployment(name, d, by_kind.get("PodDisruptionBudget", []), p)
        else:
            # Coordination off: each replica would rotate every credential on its own.
            replicas = d["spec"].get("replicas")
            if isinstance(replicas, int) and replicas > 1:
                p.add(name, f"the Deployment has {replicas} replicas and its configuration (config.toml under {COORDINATION_ENV}) "
                      "has no [coordination] mode = \"dynamodb\": "
                      "they would race over the same credentials")
            else:
                p.check(replicas == 1, name, "the Deployment does not have exactly one replica")
            p.check(d["spec"].get("strategy", {}).get("type") == "Recreate", name,
                    "the Deployment strategy is not Recreate: without [coordination] an upgrade would run two rotators at once")
        container_ports = {pt.get("name"): pt["containerPort"] for pt in d["spec"]["template"]["spec"]["containers"][0].get("ports", [])}
        services = [s for s in by_kind.get("Service", []) if labels_match(s["spec"].get("selector", {}), pod_labels)]
        p.check(bool(services), name, "no Service selects the Deployment's pods")
        for s in services:
            for sp in s["spec"]["ports"]:
                target = container_ports.get(sp.get("targetPort"), sp.get("targetPort"))
                p.check(target in container_ports.values(), name, f"Service/{s['metadata']['name']} targets port {sp.get('targetPort')}, which the pod does not expose")
        monitors = by_kind.get("ServiceMonitor", [])
        p.check(bool(monitors), name, "no ServiceMonitor")
        for m in monitors:
            selected = [s for s in services if labels_match(m["spec"]["selector"].get("matchLabels", {}), s["metadata"].get("labels", {}))]
            p.check(bool(selected), name, f"ServiceMonitor/{m['metadata']['name']} selects no Service of the Deployment")
            port_names = {sp.get("name") for s in selected for sp in s["spec"]["ports"]}
            for ep in m["spec"]["endpoints"]:
                p.check(ep.get("port") in port_names and ep.get("path", "/metrics") == "/metrics", name,
                        f"ServiceMonitor endpoint {ep} is not /metrics on a named Service port")
        p.check(bool(by_kind.get("PrometheusRule")), name, "no PrometheusRule")
    for d in by_kind.get("CronJob", []):
        p.check(d["spec"].get("concurrencyPolicy") == "Forbid", name, "the CronJob lets passes overlap")
        spec = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        p.check(spec.get("restartPolicy") == "Never", name, "the CronJob's pods restart in place")
        cronjob_pushes(name, spec["containers"][0], policies, p)
        # Its runs' pushed metrics are what the alerts watch (AmgRotatorPushedRunStale among them).
        p.check(bool(by_kind.get("PrometheusRule")), name, "no PrometheusRule: the alerts cover pushed runs too")
    for np in policies:
        for peer in network_peers(np):
            selector = peer.get("podSelector", {}).get("matchLabels", {})
            # kustomize's labels (includeSelectors: true) add the rotator's own labels to every
            # matchLabels of a NetworkPolicy, a peer's too; pods elsewhere (kube-dns, a
            # Pushgateway) do not carry them, so such a peer matches nothing. matchExpressions
            # are left alone.
            p.check("namespaceSelector" not in peer or selector.get("app.kubernetes.io/part-of") != NAMESPACE, name,
                    f"NetworkPolicy/{np['metadata']['name']}: a peer in another namespace selects pods by the rotator's "
                    f"own labels {selector} (kustomize's includeSelectors added them): use matchExpressions")
    p.check(not (by_kind.get("Deployment") and by_kind.get("CronJob")), name,
            "both a Deployment and a CronJob: two rotators would race")


COORDINATION_ENV = "AMG_ROTATOR__COORDINATION__MODE"


def coordination_mode(config: dict[str, Any], env: dict[str, dict[str, Any]]) -> str:
    """[coordination] mode as the rotator reads it: the file, under AMG_ROTATOR__COORDINATION__MODE
    when the container sets it. A value from elsewhere (valueFrom) cannot be known here: "unknown",
    which counts as off, the safe reading."""
    if COORDINATION_ENV in env:
        return str(env[COORDINATION_ENV].get("value", "unknown"))
    return str(config.get("coordination", {}).get("mode", "off"))


def scaled(value: Any, total: int) -> int | None:
    """An IntOrString of a PodDisruptionBudget as a number of pods (percentages round up, as the
    disruption controller rounds them); None when it is neither."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d+%", value):
        return -(-int(value[:-1]) * total // 100)
    return None


def replicated_deployment(name: str, d: dict[str, Any], budgets: list[dict[str, Any]], p: Problems) -> None:
    """A Deployment whose config has [coordination] mode = "dynamodb": each workspace is changed
    only by the replica holding its lease, so several replicas are safe, and then they should be
    several in fact: at least two, an upgrade that adds a pod before it removes one, a budget
    that lets a drain evict one pod but not both, and the pods on different nodes if they can."""
    spec = d["spec"]
    template = spec["template"]
    labels = template["metadata"].get("labels", {})
    replicas = spec.get("replicas", 1)
    p.check(isinstance(replicas, int) and replicas >= 2, name,
            f"coordination is on but the Deployment has {replicas} replica(s): need at least 2, so that one pod lost does not stop rotation")
    strategy = spec.get("strategy", {})
    rolling = strategy.get("rollingUpdate", {})
    p.check(strategy.get("type") == "RollingUpdate" and rolling.get("maxUnavailable") in (0, "0%"), name,
            f"coordination is on but the strategy is {strategy}: need RollingUpdate with maxUnavailable 0, so an upgrade "
            "starts a new pod before it stops an old one")
    p.check(rolling.get("maxSurge", "25%") not in (0, "0%"), name, "maxSurge 0 with maxUnavailable 0: an upgrade could never proceed")
    selecting = [b for b in budgets if labels_match(b["spec"].get("selector", {}).get("matchLabels", {}), labels)]
    p.check(bool(selecting), name, "coordination is on but no PodDisruptionBudget selects the Deployment's pods: a drain may evict them all at once")
    # The eviction API refuses to evict a pod that more than one budget selects.
    p.check(len(selecting) <= 1, name, f"{len(selecting)} PodDisruptionBudgets select the Deployment's pods: evictions would fail")
    for b in selecting:
        where = f"{name} PodDisruptionBudget/{b['metadata']['name']}"
        total = replicas if isinstance(replicas, int) else 1
        if "minAvailable" in b["spec"]:
            kept = scaled(b["spec"]["minAvailable"], total)
            p.check(kept is not None and kept >= 1, where, f"minAvailable {b['spec']['minAvailable']}: need at least 1 pod kept")
            p.check(kept is None or kept < total, where, f"minAvailable {b['spec']['minAvailable']} of {total} pods: no pod could ever be evicted (drains hang)")
        elif "maxUnavailable" in b["spec"]:
            gone = scaled(b["spec"]["maxUnavailable"], total)
            p.check(gone is not None and gone <= 1, where, f"maxUnavailable {b['spec']['maxUnavailable']}: need at most 1, so one pod keeps rotating")
            p.check(gone is None or gone >= 1, where, f"maxUnavailable {b['spec']['maxUnavailable']}: no pod could ever be evicted (drains hang)")
        else:
            p.add(where, "neither minAvailable nor maxUnavailable")
    pod = template["spec"]
    spreads = [c.get("labelSelector", {}).get("matchLabels", {}) for c in pod.get("topologySpreadConstraints", [])
               if c.get("topologyKey") == "kubernetes.io/hostname"]
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
        w.get("podAffinityTerm", {}) for w in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    spreads += [t.get("labelSelector", {}).get("matchLabels", {}) for t in terms if t.get("topologyKey") == "kubernetes.io/hostname"]
    p.check(any(s and labels_match(s, labels) for s in spreads), name,
            "no topologySpreadConstraints or podAntiAffinity over kubernetes.io/hostname selects the pods: both replicas may share one node's fate")
    # Each replica names itself after HOSTNAME, the pod's name unless the pod says otherwise.
    p.check("hostname" not in pod, name, "spec.hostname is set: every replica would have the same HOSTNAME (its name in the lease table)")
    for c in pod["containers"]:
        host = next((e for e in c.get("env", []) if e["name"] == "HOSTNAME"), None)
        p.check(host is None or host.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", name,
                f"container {c['name']} sets HOSTNAME to {host}: every replica would have the same name in the lease table")


def network_peers(np: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for rule in np["spec"].get("ingress", []):
        yield from rule.get("from", [])
    for rule in np["spec"].get("egress", []):
        yield from rule.get("to", [])


def egress_admits(np: dict[str, Any], namespace: str, port: int) -> bool:
    """Whether a NetworkPolicy lets its pods open TCP `port` to pods of `namespace`."""
    for rule in np["spec"].get("egress", []):
        ports = rule.get("ports")
        if ports is not None and not any(pt.get("port") == port and pt.get("protocol", "TCP") == "TCP" for pt in ports):
            continue
        peers = rule.get("to")
        if not peers:
            return True
        for peer in peers:
            ns = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
            if ns == namespace or peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0"):
                return True
    return False


def cronjob_pushes(name: str, container: dict[str, Any], policies: list[dict[str, Any]], p: Problems) -> None:
    """The CronJob's `once` pushes its metrics to a Pushgateway as one fixed group, which its
    NetworkPolicy lets it reach."""
    from urllib.parse import urlsplit

    where = f"{name} CronJob"
    env = {e["name"]: e for e in container.get("env", [])}
    url = env.get("AMG_ROTATOR__EXPORT__PUSHGATEWAY_URL", {}).get("value", "")
    parts = urlsplit(url)
    p.check(parts.scheme in ("http", "https") and bool(parts.hostname), where,
            f"AMG_ROTATOR__EXPORT__PUSHGATEWAY_URL {url!r} is not an http(s) URL: a run would push its metrics nowhere")
    # The pod's name changes every run: a group keyed on it would be a new group each time,
    # and the old ones would stay in the Pushgateway for ever.
    instance = env.get("AMG_ROTATOR__EXPORT__PUSHGATEWAY_INSTANCE", {})
    p.check(bool(instance.get("value")) and "valueFrom" not in instance and "$(" not in instance.get("value", ""), where,
            f"AMG_ROTATOR__EXPORT__PUSHGATEWAY_INSTANCE {instance} is not a fixed value: each run would make a new group")
    if parts.hostname:
        labels = parts.hostname.split(".")
        # service.namespace.svc[.cluster.local]; a bare service name is in the rotator's namespace.
        namespace = labels[1] if len(labels) > 1 else NAMESPACE
        port = parts.port or (443 if parts.scheme == "https" else 80)
        for np in policies:
            p.check(egress_admits(np, namespace, port), where,
                    f"NetworkPolicy/{np['metadata']['name']} does not let it reach {parts.hostname}:{port} (namespace {namespace})")


ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS_RULE = ROOT / "deploy/kubernetes/base/prometheusrule.yaml"
PROMETHEUS_RULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by `scripts/check-deploy --write-prometheusrule`;
# scripts/check-deploy fails when the two disagree. Edit alerts.yml, then regenerate.
"""


class BlockStrings(yaml.SafeDumper):
    pass


BlockStrings.add_representer(
    str,
    lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def prometheus_rule_from_alerts() -> dict[str, Any]:
    alerts = yaml.safe_load(ALERTS.read_text())
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "amg-token-rotator"},
        "spec": alerts,
    }


def check_prometheus_rule(p: Problems, write: bool) -> None:
    if not ALERTS.exists():
        p.add(rel(ALERTS), "does not exist: the PrometheusRule is generated from it")
        return
    wanted = prometheus_rule_from_alerts()
    if write:
        PROMETHEUS_RULE.write_text(PROMETHEUS_RULE_HEADER + yaml.dump(wanted, Dumper=BlockStrings, sort_keys=False, width=4096))
        ok(f"wrote {rel(PROMETHEUS_RULE)} from {rel(ALERTS)}")
    have = yaml.safe_load(PROMETHEUS_RULE.read_text())
    if have.get("spec") != wanted["spec"]:
        p.add(rel(PROMETHEUS_RULE), f"spec differs from {rel(ALERTS)}: run scripts/check-deploy --write-prometheusrule")
        return
    rules = [r for g in wanted["spec"].get("groups", []) for r in g.get("rules", [])]
    ok(f"{rel(PROMETHEUS_RULE)} spec equals {rel(ALERTS)} ({len(rules)} rules: "
       f"{', '.join(r.get('alert') or r.get('record', '?') for r in rules)})")


def cmd_prometheusrule(args: argparse.Namespace) -> None:
    p = Problems()
    check_prometheus_rule(p, args.write)
    p.exit("PrometheusRule")


def replicated_config(directory: Path, p: Problems) -> None:
    """The replicated overlay's config.toml is the base's plus [coordination]: the two are kept
    apart only because a ConfigMap generator replaces a whole file."""
    base = tomllib.loads((ROOT / "deploy/kubernetes/base/config.toml").read_text())
    mine = tomllib.loads((directory / "config.toml").read_text())
    coordination = mine.pop("coordination", {})
    p.check(coordination.get("mode") == "dynamodb", rel(directory / "config.toml"), "no [coordination] mode = \"dynamodb\"")
    p.check("coordination" not in base, "deploy/kubernetes/base/config.toml", "has [coordination]: the base is the one-replica default")
    p.check(mine == base, rel(directory / "config.toml"),
            "differs from deploy/kubernetes/base/config.toml in more than [coordination]: change both together")


def refused(name: str, docs: list[dict[str, Any]], expect: str) -> bool:
    """Whether k8s_properties finds a problem containing `expect` in `docs`."""
    q = Problems()
    k8s_properties(name, docs, q)
    return any(expect in item for item in q.items)


def replicated_negative_controls(name: str, docs: list[dict[str, Any]], p: Problems) -> None:
    """The replicated overlay, broken one way at a time: each must be refused for that reason.
    And the built overlay itself must pass, or the controls prove nothing."""
    def broken(change: Any) -> list[dict[str, Any]]:
        out = copy.deepcopy(docs)
        change(out)
        return [d for d in out if d is not None]

    def deployment(ds: list[dict[str, Any]]) -> dict[str, Any]:
        return next(d for d in ds if d and d["kind"] == "Deployment")

    def drop_pdb(ds: list[dict[str, Any]]) -> None:
        ds[:] = [d for d in ds if d["kind"] != "PodDisruptionBudget"]

    def recreate(ds: list[dict[str, Any]]) -> None:
        deployment(ds)["spec"]["strategy"] = {"type": "Recreate"}

    def one_replica(ds: list[dict[str, Any]]) -> None:
        deployment(ds)["spec"]["replicas"] = 1

    def pdb_blocks(ds: list[dict[str, Any]]) -> None:
        next(d for d in ds if d["kind"] == "PodDisruptionBudget")["spec"]["minAvailable"] = 2

    def no_spread(ds: list[dict[str, Any]]) -> None:
        deployment(ds)["spec"]["template"]["spec"].pop("topologySpreadConstraints", None)

    def fixed_hostname(ds: list[dict[str, Any]]) -> None:
        deployment(ds)["spec"]["template"]["spec"]["hostname"] = "rotator"

    def no_coordination(ds: list[dict[str, Any]]) -> None:
        for d in ds:
            if d["kind"] == "ConfigMap" and "config.toml" in d.get("data", {}):
                text = d["data"]["config.toml"]
                d["data"]["config.toml"] = text[: text.index("[coordination]")]

    clean = Problems()
    k8s_properties(name, docs, clean)
    p.check(not clean.items, name, f"the overlay itself is refused, so its controls prove nothing: {clean.items}")
    for change, expect in ((drop_pdb, "no PodDisruptionBudget selects"),
                           (recreate, "need RollingUpdate with maxUnavailable 0"),
                           (one_replica, "need at least 2"),
                           (pdb_blocks, "no pod could ever be evicted"),
                           (no_spread, "both replicas may share one node's fate"),
                           (fixed_hostname, "spec.hostname is set"),
                           (no_coordination, "they would race")):
        p.check(refused(name, broken(change), expect), f"{name} check",
                f"accepted the overlay broken by {change.__name__} (expected a complaint: {expect!r})")
    base = kustomize_build(ROOT / "deploy/kubernetes/base") or []
    for d in base:
        if d["kind"] == "Deployment":
            d["spec"]["replicas"] = 2
    p.check(refused("deploy/kubernetes/base", base, "they would race"), "deploy/kubernetes/base check",
            "accepted the base (coordination off) with 2 replicas")


def cmd_kubernetes(args: argparse.Namespace) -> None:
    import kubernetes_validate

    p = Problems()
    k8s_negative_controls(p)
    p.exit("negative controls")
    ok("negative controls: a Deployment with 'replica', a ServiceMonitor endpoint with 'prot' and a rule without 'expr' are refused")
    versions = ", ".join(K8S_VERSIONS + [kubernetes_validate.latest_version()])
    for variant in ("base", "cronjob", "replicated"):
        directory = ROOT / "deploy/kubernetes" / variant
        files = kustomization_files(directory, p)
        p.exit(f"{rel(directory)}/kustomization.yaml")
        ok(f"{rel(directory)}/kustomization.yaml: every resource, generator file and patch exists")
        docs = kustomize_build(directory)
        if docs is None:
            # No kustomize: validate each file the kustomization names, as written.
            print(f"  --  kubectl not installed: kustomize build of {rel(directory)} skipped; validating its files one by one")
            docs = [d for f in files if f.suffix in (".yaml", ".yml") for d in yaml.safe_load_all(f.read_text()) if d]
            built = False
        else:
            built = True
        for d in docs:
            errors = k8s_errors(d)
            what = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
            if errors:
                for e in errors:
                    p.add(f"{rel(directory)} {what}", e)
            else:
                schema = "prometheus-operator v0.80 CRD schema" if d.get("apiVersion", "").startswith("monitoring.coreos.com") else f"Kubernetes {versions} schemas"
                ok(f"{rel(directory)} {what}: valid ({schema}, strict)")
        if built and variant == "replicated":
            replicated_negative_controls(rel(directory), docs, p)
            p.exit("negative controls")
            ok(f"negative controls: {rel(directory)} without its PodDisruptionBudget, with Recreate, with one replica, with a "
               "budget that blocks every eviction, without a spread across nodes, with spec.hostname, and without [coordination] (its two replicas would "
               "race), and the base with 2 replicas, are each refused")
        if built:
            k8s_properties(rel(directory), docs, p)
            p.exit(rel(directory))
            ok(f"{rel(directory)}: replicas, strategy, probes, hardening, ports, selectors, NetworkPolicy coverage and peers, namespace, image tag"
               + (", the Pushgateway URL, a fixed instance and egress to it, a PrometheusRule" if variant == "cronjob" else "")
               + (": [coordination] mode = \"dynamodb\", so >= 2 replicas, RollingUpdate with maxUnavailable 0, one "
                  "PodDisruptionBudget that keeps a pod and lets one go, a spread across nodes, no fixed hostname" if variant == "replicated" else
                  ": coordination off, so exactly 1 replica and Recreate" if variant == "base" else ""))
        if variant == "replicated":
            replicated_config(directory, p)
            p.exit(rel(directory))
            ok(f"{rel(directory)}/config.toml is deploy/kubernetes/base/config.toml plus [coordination] and nothing else")
    check_prometheus_rule(p, write=False)
    p.exit("Kubernetes")


# ---------------------------------------------------------------------------------------------
# systemd.

ONCE_UNIT = ROOT / "deploy/systemd/amg-token-rotator-once.service"
# Debian's prometheus-node-exporter reads *.prom files here (--collector.textfile.directory).
NODE_EXPORTER_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
DEFAULT_TEXTFILE_NAME = "amg_token_rotator.prom"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every value of every key of a unit file, in order; lines continued with a backslash are
    joined with a space, as systemd joins them (systemd.syntax(7))."""
    settings: dict[str, list[str]] = {}
    logical = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if "=" in logical and not logical.startswith("["):
            key, value = logical.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
        logical = ""
    return settings


def textfile_move_problems(script: str, textfile_dir: str, name: str) -> list[str]:
    """What is wrong with the ExecStopPost script that moves the textfile into node_exporter's
    directory: its text, and what it does when run against temporary directories standing in
    for the state directory and node_exporter's."""
    problems = []
    final = f"{NODE_EXPORTER_TEXTFILE_DIR}/{name}"
    # node_exporter must see the old file or the new one, never a part: the last step is a
    # rename within its directory, from a name it does not read.
    renames = re.findall(r"\bmv -f (\S+) " + re.escape(final) + r"(?:\s|$)", script)
    if not renames or not all(os.path.dirname(r) == NODE_EXPORTER_TEXTFILE_DIR and not r.endswith(".prom") for r in renames):
        problems.append(f"the file does not reach {final} by a rename within {NODE_EXPORTER_TEXTFILE_DIR} from a name that is not *.prom")
    with tempfile.TemporaryDirectory() as tmp:
        src_dir, dst_dir = Path(tmp, "state"), Path(tmp, "node-exporter")
        body = script.replace(textfile_dir, str(src_dir)).replace(NODE_EXPORTER_TEXTFILE_DIR, str(dst_dir))
        root = os.geteuid() == 0
        if not root:
            body = body.replace("-o root -g root", "")  # chown needs root; the rest is the same

        def run() -> int:
            return subprocess.run(["/bin/sh", "-c", body], capture_output=True).returncode

        src, dst = src_dir / name, dst_dir / name
        src_dir.mkdir()
        dst_dir.mkdir()
        dst.write_text("old\n")
        if run() != 0 or dst.read_text() != "old\n":
            problems.append("after a run that wrote no file, it fails or loses the previous file")
        src.write_text("new\n")
        src.chmod(0o600)  # UMask=0077
        os.utime(src, (1_000_000_000, 1_000_000_000))
        status = run()
        st = dst.stat()
        if status != 0 or dst.read_text() != "new\n":
            problems.append("it does not replace node_exporter's file with the new one")
        if st.st_mode & 0o777 != 0o644:
            problems.append(f"the file in node_exporter's directory has mode {st.st_mode & 0o777:o}, not 644")
        if root and (st.st_uid, st.st_gid) != (0, 0):
            problems.append("the file in node_exporter's directory is not root's")
        if st.st_mtime != 1_000_000_000:
            problems.append("the time the rotator wrote the file is lost (node_textfile_mtime_seconds)")
        if sorted(os.listdir(dst_dir)) != [name] or src.exists():
            problems.append(f"it leaves files behind: {sorted(os.listdir(dst_dir))} in node_exporter's directory, "
                            f"the source {'kept' if src.exists() else 'removed'}")
        src.write_text("new\n")
        shutil.rmtree(dst_dir)
        if run() == 0:
            problems.append("it succeeds when node_exporter's directory is missing: the failure would go unseen")
    return problems


def cmd_systemd(args: argparse.Namespace) -> None:
    p = Problems()
    where = rel(ONCE_UNIT)
    unit = unit_settings(ONCE_UNIT)
    env: dict[str, str] = {}
    for line in unit.get("Environment", []):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = value
    state = (unit.get("StateDirectory") or [""])[-1]
    textfile_dir = env.get("AMG_ROTATOR__EXPORT__TEXTFILE_DIR", "")
    name = env.get("AMG_ROTATOR__EXPORT__TEXTFILE_NAME", DEFAULT_TEXTFILE_NAME)
    # The only place the sandbox (ProtectSystem=strict) lets the transient user write.
    p.check(bool(state) and textfile_dir == f"/var/lib/{state}", where,
            f"AMG_ROTATOR__EXPORT__TEXTFILE_DIR {textfile_dir!r} is not the unit's StateDirectory ({state!r}), the one place it may write")
    p.check(name.endswith(".prom"), where, f"textfile {name!r}: node_exporter reads only *.prom")
    posts = [c for c in unit.get("ExecStopPost", []) if f"{textfile_dir}/{name}" in c]
    p.check(len(posts) == 1, where, f"no single ExecStopPost moves {textfile_dir}/{name} into {NODE_EXPORTER_TEXTFILE_DIR}")
    p.exit("systemd")
    command = posts[0]
    prefix = command[: len(command) - len(command.lstrip("@-:+!"))]
    # Root, outside the sandbox, may write node_exporter's directory; a failure must show.
    p.check("+" in prefix and "-" not in prefix, where,
            f"ExecStopPost prefix {prefix!r}: needs '+' (as root, outside the sandbox) and no '-' (which would hide a failure)")
    argv = shlex.split(command[len(prefix):])
    p.check(argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3, where, f"ExecStopPost is not one /bin/sh -c script: {argv}")
    p.exit("systemd")
    # Negative control: a plain copy into place (not atomic, not root's, mode kept from the
    # source, fails when the run wrote nothing, leaves the source) must be refused.
    broken = f"cp {textfile_dir}/{name} {NODE_EXPORTER_TEXTFILE_DIR}/{name}"
    p.check(len(textfile_move_problems(broken, textfile_dir, name)) >= 4, "systemd check",
            "accepted a plain cp into node_exporter's directory (negative control)")
    p.exit("negative control")
    ok("negative control: a plain cp into node_exporter's directory is refused")
    for problem in textfile_move_problems(argv[2], textfile_dir, name):
        p.add(where, f"ExecStopPost: {problem}")
    root = os.geteuid() == 0
    p.exit("systemd")
    ok(f"{where}: once writes {name} into its StateDirectory /var/lib/{state}; ExecStopPost (+, as root) installs it "
       f"into {NODE_EXPORTER_TEXTFILE_DIR} by a rename, 0644{' root:root' if root else ''}, mtime kept, nothing left behind; "
       "nothing to do after a run that wrote none; fails without node_exporter's directory")


# ---------------------------------------------------------------------------------------------
# ECS.

ECS_FILES = {
    "task-definition.json": ("ecs", "RegisterTaskDefinition"),
    "task-definition-once.json": ("ecs", "RegisterTaskDefinition"),
    "task-definition-replicated.json": ("ecs", "RegisterTaskDefinition"),
    "service.json": ("ecs", "CreateService"),
    "service-replicated.json": ("ecs", "CreateService"),
    "schedule-once.json": ("scheduler", "CreateSchedule"),
}
FARGATE_MEMORY = {"256": {"512", "1024", "2048"}, "512": {str(m) for m in range(1024, 4097, 1024)},
                  "1024": {str(m) for m in range(2048, 8193, 1024)}}


def enum_errors(value: Any, shape: Any, path: str) -> list[str]:
    """botocore's validator checks keys and types but not enum values: this does."""
    errors = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                errors += enum_errors(v, shape.members[k], f"{path}.{k}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            errors += enum_errors(v, shape.member, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for k, v in value.items():
            errors += enum_errors(v, shape.value, f"{path}.{k}")
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        errors.append(f"{path}: {value!r} is not one of {shape.enum}")
    return errors


def aws_errors(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    errors = [line for line in report.generate_report().splitlines() if line.strip()] if report.has_errors() else []
    return errors + enum_errors(params, shape, operation)


ECS_ALARMS = ROOT / "deploy/ecs/alarms.json"
EMF_METRICS = {"CredentialExpiresInSeconds", "CredentialHealthy"}
EMF_DEFAULT_DIMENSIONS = ["workspace", "service_account"]
TREAT_MISSING_DATA = {"breaching", "notBreaching", "ignore", "missing"}


def emf_task(where: str, env: dict[str, str], rotator: dict[str, Any], alarms: list[dict[str, Any]], p: Problems) -> None:
    """The once task prints EMF lines (one per credential) that CloudWatch Logs turns into the
    metrics alarms.json watches: a namespace, stdout through awslogs, the alarms on that
    namespace, its metrics and its default dimension set; and one alarm that goes off when the
    lines stop coming."""
    namespace = env.get("AMG_ROTATOR__EXPORT__EMF_NAMESPACE", "")
    p.check(bool(namespace) and not namespace.startswith("AWS/"), where,
            f"AMG_ROTATOR__EXPORT__EMF_NAMESPACE {namespace!r}: the once task emits no metrics (or into a namespace AWS reserves)")
    # EMF needs no agent: awslogs sends each stdout line as a log event and CloudWatch Logs
    # extracts the metrics of those that are EMF (the x-amzn-logs-format header is optional).
    p.check(rotator.get("logConfiguration", {}).get("logDriver") == "awslogs", where, "the EMF lines do not reach CloudWatch Logs (no awslogs)")
    p.check("AMG_ROTATOR__EXPORT__EMF_DIMENSIONS" not in env and "AMG_ROTATOR__EXPORT__EMF_STATIC_DIMENSIONS" not in env, where,
            f"EMF dimensions changed: the alarms' SCHEMA({namespace}, {', '.join(EMF_DEFAULT_DIMENSIONS)}) would find nothing; change both")
    schema = f"FROM SCHEMA({namespace}, {', '.join(EMF_DEFAULT_DIMENSIONS)})"
    watched = set()
    for alarm in alarms:
        for query in alarm.get("Metrics", []):
            m = re.fullmatch(r"SELECT (MIN|MAX|AVG|SUM|COUNT)\((\w+)\) (.*)", query.get("Expression", ""))
            p.check(bool(m) and m.group(2) in EMF_METRICS and m.group(3) == schema, rel(ECS_ALARMS),
                    f"{alarm['AlarmName']}: {query.get('Expression')!r} is not a Metrics Insights query of {sorted(EMF_METRICS)} {schema}")
            if m:
                watched.add(m.group(2))
    p.check(watched == EMF_METRICS, rel(ECS_ALARMS), f"alarms on {sorted(watched)}, not on each of {sorted(EMF_METRICS)}")
    p.check(any(a.get("TreatMissingData") == "breaching" for a in alarms), rel(ECS_ALARMS),
            "no alarm treats missing data as breaching: runs that stop reporting would go unseen")


def ecs_service_problems(svc: dict[str, Any], task_defs: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with a daemon service: one task unless its task definition turns
    coordination on, and then several, replaced one new before one old."""
    p = Problems()
    family = str(svc.get("taskDefinition", "")).rsplit("/", 1)[-1].split(":")[0]
    td = task_defs.get(family)
    if td is None:
        return [f"taskDefinition {svc.get('taskDefinition')!r} is none of the daemon's task definitions {sorted(task_defs)}"]
    rotator = next((c for c in td["containerDefinitions"] if c["name"] == "amg-token-rotator"), {})
    # The config.toml comes from an SSM parameter this check cannot read: only the variable,
    # which the config layers over the file, says that coordination is on.
    mode = coordination_mode({}, {e["name"]: e for e in rotator.get("environment", [])})
    count = svc.get("desiredCount")
    dc = svc.get("deploymentConfiguration", {})
    low, high = dc.get("minimumHealthyPercent", 100), dc.get("maximumPercent", 200)
    p.check(svc.get("launchType") == "FARGATE", "", "not Fargate")
    breaker = dc.get("deploymentCircuitBreaker", {})
    p.check(breaker.get("enable") is True and breaker.get("rollback") is True, "", "no deployment circuit breaker with rollback")
    if mode != "dynamodb":
        if isinstance(count, int) and count > 1:
            p.add("", f"desiredCount {count} on {family}, whose rotator does not set {COORDINATION_ENV}=dynamodb: they would race over the same credentials")
        else:
            p.check(count == 1, "", "not one task")
        p.check(high == 100 and low == 0, "",
                "a deployment may run two rotators at once: need maximumPercent 100, minimumHealthyPercent 0 (coordination off)")
    else:
        p.check(isinstance(count, int) and count >= 2, "", f"coordination is on but desiredCount is {count}: need at least 2")
        n = count if isinstance(count, int) else 1
        # ECS rounds minimumHealthyPercent up and maximumPercent down.
        p.check(low >= 100, "", f"minimumHealthyPercent {low}: a deployment would stop a rotator before its replacement is healthy; need 100")
        p.check(high * n // 100 > n, "", f"maximumPercent {high} of {n} tasks leaves no room for a new task beside the old ones: a deployment with minimumHealthyPercent 100 could not start")
    return [item.removeprefix(": ") for item in p.items]


def ecs_negative_controls(docs: dict[str, dict[str, Any]], task_defs: dict[str, dict[str, Any]], p: Problems) -> None:
    """The services broken one way at a time: each must be refused for that reason, and the
    files as written must pass, or the controls prove nothing."""
    def refused(svc: dict[str, Any], tds: dict[str, dict[str, Any]], expect: str) -> bool:
        return any(expect in e for e in ecs_service_problems(svc, tds))

    for name in ("service.json", "service-replicated.json"):
        p.check(not ecs_service_problems(docs[name], task_defs), f"deploy/ecs/{name}", "refused as written, so its controls prove nothing")
    uncoordinated = copy.deepcopy(task_defs)
    for td in uncoordinated.values():
        for c in td["containerDefinitions"]:
            c["environment"] = [e for e in c.get("environment", []) if e["name"] != COORDINATION_ENV]
    replicated = docs["service-replicated.json"]
    cases = [("service-replicated.json without the variable", replicated, uncoordinated, "they would race"),
             ("service.json with desiredCount 2", {**docs["service.json"], "desiredCount": 2}, task_defs, "they would race")]
    for key, value, expect in (("minimumHealthyPercent", 0, "need 100"), ("maximumPercent", 100, "no room for a new task")):
        svc = copy.deepcopy(replicated)
        svc["deploymentConfiguration"][key] = value
        cases.append((f"service-replicated.json with {key} {value}", svc, task_defs, expect))
    cases.append(("service-replicated.json with one task", {**replicated, "desiredCount": 1}, task_defs, "need at least 2"))
    for what, svc, tds, expect in cases:
        p.check(refused(svc, tds, expect), "ECS check", f"accepted {what} (expected a complaint: {expect!r})")


def cmd_ecs(args: argparse.Namespace) -> None:
    import botocore

    p = Problems()
    broken = json.loads(render((ROOT / "deploy/ecs/task-definition.json").read_text(), "task-definition.json"))
    broken["containerDefinitions"][1]["healthcheck"] = broken["containerDefinitions"][1].pop("healthCheck")
    p.check(bool(aws_errors("ecs", "RegisterTaskDefinition", broken)), "botocore", "accepted 'healthcheck'")
    broken["containerDefinitions"][1]["healthCheck"] = {"command": ["CMD"], "interval": "30"}
    broken["networkMode"] = "awsvpcc"
    errors = aws_errors("ecs", "RegisterTaskDefinition", broken)
    p.check(any("interval" in e for e in errors), "botocore", "accepted a string for an integer")
    p.check(any("awsvpcc" in e for e in errors), "enum check", "accepted networkMode 'awsvpcc'")
    alarms = json.loads(render(ECS_ALARMS.read_text(), rel(ECS_ALARMS)))
    broken = copy.deepcopy(alarms[0])
    broken["ComparisonOperator"] = "LessThan"
    broken["Metrics"][0]["Period"] = "1800"
    errors = aws_errors("cloudwatch", "PutMetricAlarm", broken)
    p.check(any("LessThan'" in e for e in errors) and any("Period" in e for e in errors), "botocore",
            "accepted an alarm with ComparisonOperator 'LessThan' and a string Period")
    p.exit("negative controls")
    ok("negative controls: an unknown key, a string for an integer and an unknown enum value are refused (ecs, cloudwatch)")

    docs: dict[str, dict[str, Any]] = {}
    for name, (service, operation) in ECS_FILES.items():
        path = ROOT / "deploy/ecs" / name
        docs[name] = params = json.loads(render(path.read_text(), rel(path)))
        errors = aws_errors(service, operation, params)
        for e in errors:
            p.add(rel(path), e)
        if not errors:
            ok(f"{rel(path)}: valid {service} {operation} input (botocore {botocore.__version__}: keys, types, required, enums)")

    for i, alarm in enumerate(alarms):
        errors = aws_errors("cloudwatch", "PutMetricAlarm", alarm)
        # A plain string in botocore's model; these are the values PutMetricAlarm documents.
        if alarm.get("TreatMissingData", "missing") not in TREAT_MISSING_DATA:
            errors.append(f"TreatMissingData {alarm['TreatMissingData']!r} is not one of {sorted(TREAT_MISSING_DATA)}")
        for e in errors:
            p.add(f"{rel(ECS_ALARMS)}[{i}]", e)
        if not errors:
            ok(f"{rel(ECS_ALARMS)}[{i}] {alarm['AlarmName']}: valid cloudwatch PutMetricAlarm input (botocore {botocore.__version__})")

    for name in ("task-definition.json", "task-definition-once.json", "task-definition-replicated.json"):
        td, where = docs[name], f"deploy/ecs/{name}"
        once = name.endswith("once.json")
        p.check(td.get("networkMode") == "awsvpc", where, "networkMode is not awsvpc")
        p.check(td.get("requiresCompatibilities") == ["FARGATE"], where, "not a Fargate task definition")
        p.check(td.get("memory") in FARGATE_MEMORY.get(td.get("cpu"), set()), where, f"cpu {td.get('cpu')} / memory {td.get('memory')} is no Fargate size")
        p.check(bool(td.get("taskRoleArn")) and bool(td.get("executionRoleArn")), where, "needs a task role (the rotator's AWS identity) and an execution role")
        containers = {c["name"]: c for c in td["containerDefinitions"]}
        for c in containers.values():
            logs = c.get("logConfiguration", {})
            p.check(logs.get("logDriver") == "awslogs" and {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(logs.get("options", {})),
                    where, f"container {c['name']} does not log to CloudWatch Logs")
            p.check(c.get("readonlyRootFilesystem") is True, where, f"container {c['name']} root file system is writable")
            p.check(c.get("linuxParameters", {}).get("capabilities", {}).get("drop") == ["ALL"], where, f"container {c['name']} keeps capabilities")
        rotator = containers.get("amg-token-rotator")
        if rotator is None:
            p.add(where, "no container named amg-token-rotator")
            continue
        p.check(rotator.get("essential") is True, where, "the rotator container is not essential")
        p.check(rotator.get("user") == "65532:65532", where, "the rotator does not run as 65532 (the image's nonroot user)")
        command = rotator.get("command", [])
        p.check(command[:1] == ["once" if once else "run"], where, f"command {command}")
        config_path = command[command.index("--config") + 1] if "--config" in command else f"{CONFIG_DIR}/config.toml"
        mounts = [m for m in rotator.get("mountPoints", []) if config_path.startswith(m["containerPath"].rstrip("/") + "/")]
        p.check(bool(mounts) and all(m.get("readOnly") for m in mounts), where, f"--config {config_path} is not on a read-only mount")
        for dep in rotator.get("dependsOn", []):
            p.check(dep["containerName"] in containers and dep["condition"] == "SUCCESS", where, f"dependsOn {dep}")
        p.check(10 < rotator.get("stopTimeout", 30) <= 120 and rotator.get("stopTimeout", 30) > DEFAULT_SHUTDOWN_TIMEOUT_S,
                where, "stopTimeout must exceed daemon.shutdown_timeout (60s) and Fargate allows at most 120")
        env = {e["name"]: e.get("value", "") for e in rotator.get("environment", [])}
        exports = sorted(k for k in env if k.startswith("AMG_ROTATOR__EXPORT__"))
        if once:
            emf_task(where, env, rotator, alarms, p)
        else:
            p.check(not exports, where, f"{exports}: the daemon ignores [export] (Prometheus scrapes its /metrics)")
        if not once:
            hc = rotator.get("healthCheck", {}).get("command", [])
            p.check(hc[:2] == ["CMD", "/usr/local/bin/healthcheck"], where, f"health check {hc} is not the image's probe")
            p.check(any(pm.get("containerPort") == DEFAULT_LISTEN_PORT for pm in rotator.get("portMappings", [])), where, f"no port {DEFAULT_LISTEN_PORT}")
    task_defs = {docs[n]["family"]: docs[n] for n in ("task-definition.json", "task-definition-replicated.json")}
    ecs_negative_controls(docs, task_defs, p)
    p.exit("negative controls")
    ok("negative controls: service-replicated.json on the uncoordinated task definition (2 tasks would race), service.json "
       "with desiredCount 2, service-replicated.json with minimumHealthyPercent 0 or maximumPercent 100 or one task, are each refused")
    # The replicated variant is the daemon's task definition with coordination turned on, and
    # nothing else: a difference would be one the single task lacks or the other way round.
    replicated = copy.deepcopy(docs["task-definition-replicated.json"])
    where = "deploy/ecs/task-definition-replicated.json"
    p.check(replicated.pop("family") != docs["task-definition.json"]["family"], where,
            "the same family as task-definition.json: whichever was registered last would be what both services run")
    for c in replicated["containerDefinitions"]:
        if "environment" in c:
            c["environment"] = [e for e in c["environment"] if e["name"] != COORDINATION_ENV]
    single = {k: v for k, v in docs["task-definition.json"].items() if k != "family"}
    p.check(replicated == single, where, f"differs from task-definition.json in more than its family and {COORDINATION_ENV}")
    for name in ("service.json", "service-replicated.json"):
        for problem in ecs_service_problems(docs[name], task_defs):
            p.add(f"deploy/ecs/{name}", problem)
    p.check(docs["service.json"]["serviceName"] == docs["service-replicated.json"]["serviceName"], "deploy/ecs/service-replicated.json",
            "not the same serviceName as service.json: one cluster could run both, the single rotator beside the replicas")
    sched, where = docs["schedule-once.json"], "deploy/ecs/schedule-once.json"
    ecs = sched["Target"].get("EcsParameters", {})
    p.check(ecs.get("TaskDefinitionArn", "").rsplit("/", 1)[-1].split(":")[0] == docs["task-definition-once.json"]["family"], where, "does not run the once task definition")
    p.check(ecs.get("TaskCount") == 1 and ecs.get("LaunchType") == "FARGATE", where, "not one Fargate task")
    p.exit("ECS")
    ok("deploy/ecs: awsvpc, Fargate sizes, task and execution roles, CloudWatch logs, read-only roots, dropped capabilities, "
       "health check, one task at a time (service.json and the schedule); the once task's EMF namespace, which the alarms query "
       "(each metric, the default dimensions, one alarm breaching on missing data); no [export] on the daemon")
    ok("deploy/ecs/service.json: coordination off, so 1 task, maximumPercent 100 / minimumHealthyPercent 0; "
       f"service-replicated.json: {COORDINATION_ENV}=dynamodb in its task definition, so >= 2 tasks, minimumHealthyPercent 100 "
       "and room for one more; both with the circuit breaker and rollback, under one serviceName; "
       "task-definition-replicated.json = task-definition.json but for its family and the variable")


# ---------------------------------------------------------------------------------------------
# DynamoDB.

DYNAMODB = ROOT / "deploy/dynamodb"
# What src/coordination/table.rs reads and writes: items keyed by `shard` alone, a string.
LEASE_TABLE = {
    "AttributeDefinitions": [{"AttributeName": "shard", "AttributeType": "S"}],
    "KeySchema": [{"AttributeName": "shard", "KeyType": "HASH"}],
    "BillingMode": "PAY_PER_REQUEST",
}
DEFAULT_LEASE_TABLE = "amg-token-rotator-leases"


class CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref X, !GetAtt A.B, !Sub ...) read as the long
    forms ({"Ref": "X"}, {"Fn::GetAtt": ["A", "B"]}, {"Fn::Sub": ...})."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _cfn_tag)


def lease_table_problems(params: dict[str, Any]) -> list[str]:
    """What the rotator needs of a CreateTable input (or a Table's properties), beyond its schema."""
    problems = [f"{key} is {params.get(key)!r}, not {want!r}" for key, want in LEASE_TABLE.items() if params.get(key) != want]
    if "ProvisionedThroughput" in params:
        problems.append("ProvisionedThroughput with on-demand billing")
    return problems


def cmd_dynamodb(args: argparse.Namespace) -> None:
    import botocore

    p = Problems()
    path = DYNAMODB / "create-table.json"
    params = json.loads(path.read_text())
    broken = copy.deepcopy(params)
    broken["AttributeDefinitions"][0]["AttributeType"] = "STRING"
    broken["BillingMode"] = "ON_DEMAND"
    broken["KeySchema"] = {"AttributeName": "shard", "KeyType": "HASH"}
    errors = aws_errors("dynamodb", "CreateTable", broken)
    p.check(any("STRING" in e for e in errors) and any("ON_DEMAND" in e for e in errors) and any("KeySchema" in e for e in errors),
            "botocore", "accepted a CreateTable input with a map for the KeySchema list, AttributeType 'STRING' and BillingMode 'ON_DEMAND'")
    wrong = {**params, "KeySchema": [{"AttributeName": "shard", "KeyType": "HASH"}, {"AttributeName": "owner", "KeyType": "RANGE"}],
             "BillingMode": "PROVISIONED"}
    p.check(len(lease_table_problems(wrong)) == 2, "lease table check", "accepted a sort key and provisioned billing")
    p.exit("negative controls")
    ok("negative controls: a CreateTable input with a map for a list and unknown enum values is refused (botocore); "
       "a lease table with a sort key or provisioned billing is refused")

    errors = aws_errors("dynamodb", "CreateTable", params)
    for e in errors:
        p.add(rel(path), e)
    if not errors:
        ok(f"{rel(path)}: valid dynamodb CreateTable input (botocore {botocore.__version__}: keys, types, required, enums)")
    for problem in lease_table_problems(params):
        p.add(rel(path), problem)

    template_path = DYNAMODB / "table.yaml"
    template = yaml.load(template_path.read_text(), Loader=CloudFormationLoader)
    tables = {k: r for k, r in template.get("Resources", {}).items() if r.get("Type") == "AWS::DynamoDB::Table"}
    p.check(len(tables) == 1, rel(template_path), f"{len(tables)} AWS::DynamoDB::Table resources, not one")
    name_param = template.get("Parameters", {}).get("TableName", {})
    default = name_param.get("Default")
    for key, table in tables.items():
        props = table.get("Properties", {})
        for problem in lease_table_problems(props):
            p.add(f"{rel(template_path)} {key}", problem)
        p.check(props.get("TableName") == {"Ref": "TableName"}, f"{rel(template_path)} {key}", "TableName is not !Ref TableName")
    p.check(default == params.get("TableName"), rel(template_path), f"parameter TableName defaults to {default!r}, create-table.json creates {params.get('TableName')!r}")
    pattern = name_param.get("AllowedPattern")
    p.check(pattern is None or bool(re.fullmatch(pattern, str(default))), rel(template_path), f"the default {default!r} does not match AllowedPattern {pattern!r}")

    # The table the replicated configurations name: the overlay's config.toml, and the ECS
    # variant, which sets only the mode (so the SSM config.toml's table, by default the default).
    config = tomllib.loads((ROOT / "deploy/kubernetes/replicated/config.toml").read_text())
    used = config.get("coordination", {}).get("table", DEFAULT_LEASE_TABLE)
    p.check(used == params.get("TableName") == DEFAULT_LEASE_TABLE, rel(path),
            f"TableName {params.get('TableName')!r}: deploy/kubernetes/replicated/config.toml uses {used!r}, the default is {DEFAULT_LEASE_TABLE!r}")
    p.exit("DynamoDB")
    ok(f"{rel(path)} and {rel(template_path)}: one table, partition key shard (S), no sort key, PAY_PER_REQUEST; "
       f"named {DEFAULT_LEASE_TABLE}, as deploy/kubernetes/replicated/config.toml and the default coordination.table")


# ---------------------------------------------------------------------------------------------
# Dockerfile.


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Last match wins, as in .dockerignore; enough for the allowlist this repository uses."""
    allowed = True
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if pat == "*" or path == pat or path.startswith(pat + "/"):
            allowed = negate
    return allowed


def cmd_dockerfile(args: argparse.Namespace) -> None:
    p = Problems()
    dockerfile = ROOT / "deploy/container/Dockerfile"
    text = dockerfile.read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    ignore = [ln.strip() for ln in (ROOT / "deploy/container/Dockerfile.dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    stages = [ln for ln in lines if ln.startswith("FROM ")]
    p.check(len(stages) >= 2, rel(dockerfile), "not a multi-stage build")
    runtime_start = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
    runtime = lines[runtime_start:]
    for ln in lines:
        if ln.startswith("COPY ") and "--from=" not in ln:
            for src in ln.split()[1:-1]:
                path = src.rstrip("/").removeprefix("./")
                p.check((ROOT / path).exists(), rel(dockerfile), f"COPY source {src} does not exist")
                p.check(dockerignore_allows(ignore, path), rel(dockerfile), f"COPY source {src} is excluded by Dockerfile.dockerignore")
    users = [ln.split()[1] for ln in runtime if ln.startswith("USER ")]
    p.check(bool(users) and users[-1].split(":")[0] not in ("0", "root"), rel(dockerfile), "the runtime stage runs as root")
    p.check(any(ln.split()[1:] == [str(DEFAULT_LISTEN_PORT)] for ln in runtime if ln.startswith("EXPOSE ")), rel(dockerfile), f"EXPOSE {DEFAULT_LISTEN_PORT} missing")
    copied = " ".join(ln for ln in runtime if ln.startswith("COPY "))
    for binary in ("amg-token-rotator", "healthcheck"):
        p.check(f"/out/{binary}" in copied, rel(dockerfile), f"{binary} is not copied into the runtime image")
    p.check(any("/usr/local/bin/healthcheck" in ln for ln in runtime if ln.startswith("HEALTHCHECK ")), rel(dockerfile), "HEALTHCHECK does not use the probe")
    p.check("cargo build --release --locked -p amg-token-rotator" in text, rel(dockerfile), "not a locked release build of the rotator")
    want = tuple(int(x) for x in tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"].split("."))
    m = re.search(r"ARG RUST_VERSION=(\d+)\.(\d+)", text)
    p.check(bool(m) and (int(m.group(1)), int(m.group(2))) >= want[:2], rel(dockerfile), f"RUST_VERSION is older than rust-version {want}")
    p.exit("Dockerfile")
    ok(f"{rel(dockerfile)}: multi-stage, COPY sources exist and pass Dockerfile.dockerignore, runtime user "
       f"{users[-1]}, EXPOSE {DEFAULT_LISTEN_PORT}, HEALTHCHECK with the probe, Rust >= rust-version")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    sub.add_parser("kubernetes").set_defaults(run=cmd_kubernetes)
    pr = sub.add_parser("prometheusrule")
    pr.add_argument("--write", action="store_true")
    pr.set_defaults(run=cmd_prometheusrule)
    sub.add_parser("systemd").set_defaults(run=cmd_systemd)
    sub.add_parser("ecs").set_defaults(run=cmd_ecs)
    sub.add_parser("dynamodb").set_defaults(run=cmd_dynamodb)
    sub.add_parser("dockerfile").set_defaults(run=cmd_dockerfile)
    rd = sub.add_parser("render")
    rd.add_argument("src")
    rd.add_argument("dst")
    rd.set_defaults(run=cmd_render)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()

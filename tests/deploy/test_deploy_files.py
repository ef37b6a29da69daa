"""Every file of the deployment (deploy/Dockerfile, deploy/docker, deploy/compose, deploy/k8s)
is checked here with a real validator, and against the code it deploys:

- compose.yaml against the Compose Specification schema (check-jsonschema's vendored copy);
- every Kubernetes manifest against the Kubernetes API schema (kubernetes-validate, strict);
- the KEDA resources against schemas generated from KEDA's CRDs (npm @kubernetes-models/keda,
  run with node: deploy/validate);
- the Dockerfile parsed (dockerfile-parse) and its COPY sources, user and entry point checked;
- consistency: every service of the mesh has a compose service and a Deployment whose probes
  use its real health port and a path it serves; every variable in the ConfigMap, the Secret
  and compose is one a service declares; KEDA scales Deployments that exist on queues that exist.

Each validator is also shown a broken file once, so a validator that accepts anything fails here.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from devenv.config import REPO_ROOT, DevSettings
from devenv.mesh import HTTP_PORT_VARS, SERVICES
from shared.config import COMMON_VARIABLES
from shared.topology import handler_queue_name

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
KEDA_TOOL = DEPLOY / "validate"
KUBERNETES_VERSION = "1.31"      # the oldest minor the manifests promise to apply to

HEALTH_PORT_VARS = HTTP_PORT_VARS  # every service's /healthz (alive) and /readyz (dependencies) port
SECRET_VARIABLES = {"TM_AMQP_URI", "TM_REDIS_URL", "TM_DESK_SECRET", "TM_CTI_TOKEN", "TM_IMAP_PASSWORD", "TM_SMTP_PASSWORD",
                    "TM_MAIL_TOKEN_SECRET", "TM_CUSTOMER_LINK_SECRET"}
DEMO_VARIABLES = {"TM_DEMO_IMAP_HOST", "TM_DEMO_CHAT_HOST", "TM_DEMO_PHONE_HOST"}   # devenv.config, the demo only
NOT_APPLIED = {"kustomization.yaml", "secrets.example.yaml"}


def deployment_name(service: str) -> str:
    return service.replace("_", "-")


def known_variables() -> set[str]:
    import importlib

    names = {v.name for v in COMMON_VARIABLES}
    for service in SERVICES:
        names |= {v.name for v in getattr(importlib.import_module(f"services.{service}.config"), "VARIABLES", ())}
    return names


def manifests(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_manifests() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in manifests(path)]


def find(kind: str, name: str | None = None) -> list[dict]:
    return [doc for _, doc in all_manifests() if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def configmap() -> dict[str, str]:
    [config] = find("ConfigMap", "ticketmesh-config")
    return config["data"]


def served_paths(service: str) -> set[str]:
    """The health paths a service's code registers today (a string search of its sources)."""
    sources = [REPO_ROOT / "services" / service / "service.py"]
    if "AioService" in (REPO_ROOT / "services" / service / "__main__.py").read_text() + sources[0].read_text():
        sources.append(REPO_ROOT / "shared" / "aio_service.py")
    health = REPO_ROOT / "services" / service / "health.py"   # a nameko service's shared/nameko_health.py mixin
    if health.exists() and "nameko_health" in health.read_text():
        sources.append(REPO_ROOT / "shared" / "nameko_health.py")
    text = "".join(path.read_text() for path in sources)
    return {path for path in ("/healthz", "/readyz") if f'"{path}"' in text}


# --- every file has a validator ---------------------------------------------------------------


def test_every_deployment_file_is_one_these_tests_validate():
    mine = [DOCKERFILE, DEPLOY / "Dockerfile.dockerignore", *sorted((DEPLOY / "docker").rglob("*")),
            *sorted((DEPLOY / "compose").rglob("*")), *sorted(K8S.rglob("*")),
            *sorted(p for p in KEDA_TOOL.rglob("*") if "node_modules" not in p.parts)]
    validated = {DOCKERFILE, DEPLOY / "Dockerfile.dockerignore", ENTRYPOINT, COMPOSE,
                 KEDA_TOOL / "package.json", KEDA_TOOL / "package-lock.json", KEDA_TOOL / "validate-keda.mjs",
                 *K8S.glob("*.yaml")}
    unchecked = [str(p.relative_to(REPO_ROOT)) for p in mine if p.is_file() and p not in validated]
    assert not unchecked, f"add a validation for {unchecked} to tests/deploy"


# --- compose ----------------------------------------------------------------------------------


def check_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_compose_file_follows_the_compose_specification(tmp_path):
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["redis"]["healthcheck"]["retries"] = "many"
    broken["services"]["dispatcher"]["restart_policy"] = "always"     # not a compose key
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    rejected = check_compose(tmp_path / "compose.yaml")
    assert rejected.returncode != 0 and "restart_policy" in rejected.stdout + rejected.stderr


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_every_service_with_its_health_check_and_the_demo():
    services = compose()["services"]
    assert set(services) == {*SERVICES, "rabbitmq", "redis", "mail", "demo"}
    for service in SERVICES:
        spec = services[service]
        env = spec["environment"]
        assert spec["command"] == [service]
        port = env[HEALTH_PORT_VARS[service]]
        url = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/\w+)", env["HEALTH_URL"])
        assert url and url.group(1) == port, f"{service}: health check is not on {HEALTH_PORT_VARS[service]}={port}"
        assert url.group(2) == "/readyz" and "/readyz" in served_paths(service), (service, url.group(2))
        assert "HEALTH_URL" in " ".join(spec["healthcheck"]["test"])
        assert {"rabbitmq", "redis"} <= set(spec["depends_on"])
    demo = services["demo"]
    assert demo["command"] == ["demo"]
    assert {"intake_email", "intake_chat", "intake_phone"} <= set(demo["depends_on"])
    settings = DevSettings.from_env(demo["environment"])
    assert (settings.demo_imap_host, settings.demo_chat_host, settings.demo_phone_host) == ("mail", "intake_chat", "intake_phone")


def test_compose_brokers_are_set_up_as_the_mesh_expects():
    services = compose()["services"]
    assert "management" in services["rabbitmq"]["image"]
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert services["dispatcher"]["environment"]["TM_QUEUE_TYPE"] == "quorum"
    assert all(volume.split(":")[1] in ("/var/lib/rabbitmq", "/data") for name in ("rabbitmq", "redis")
               for volume in services[name]["volumes"])


def test_compose_sets_only_variables_the_mesh_reads():
    known = known_variables() | DEMO_VARIABLES
    for name, spec in compose()["services"].items():
        unknown = {k for k in spec.get("environment", {}) if k.startswith("TM_")} - known
        assert not unknown, f"compose service {name} sets {unknown}, which no service reads"


# --- Kubernetes -------------------------------------------------------------------------------


def test_kubernetes_manifests_follow_the_api_schema_strictly():
    checked = 0
    for path, doc in all_manifests():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue      # CRDs: test_keda_resources_follow_the_crd_schema
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 2 * len(SERVICES)
    broken = copy.deepcopy(find("Deployment", "dispatcher")[0])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_template():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - NOT_APPLIED
    assert all(doc["metadata"].get("namespace", kustomization["namespace"]) == kustomization["namespace"]
               for _, doc in all_manifests() if doc["kind"] != "Namespace")
    assert {image["name"] for image in kustomization["images"]} == {"ticketmesh"}


def container(service: str) -> dict:
    [deployment] = find("Deployment", deployment_name(service))
    [main] = deployment["spec"]["template"]["spec"]["containers"]
    return main


def test_every_service_has_a_deployment_with_probes_on_its_health_port():
    config = configmap()
    assert {d["metadata"]["name"] for d in find("Deployment")} == {deployment_name(s) for s in SERVICES}
    for service in SERVICES:
        spec = container(service)
        assert spec["args"] == [service]
        port = int(config[HEALTH_PORT_VARS[service]])
        assert [p["containerPort"] for p in spec["ports"]] == [port]
        ready = spec["readinessProbe"]["httpGet"]
        assert ready["port"] == port
        assert ready["path"] == "/readyz" and "/readyz" in served_paths(service), (service, ready["path"])
        live = spec["livenessProbe"]
        assert (live.get("httpGet") or live["tcpSocket"])["port"] == port
        assert set(spec["resources"]["requests"]) == {"cpu", "memory"} and "memory" in spec["resources"]["limits"]
        assert {"configMapRef": {"name": "ticketmesh-config"}} in spec["envFrom"]
        assert {"secretRef": {"name": "ticketmesh-secrets"}} in spec["envFrom"]
        assert HEALTH_PORT_VARS[service].replace("_PORT", "_HOST") in config


def test_configmap_and_secret_hold_only_variables_a_service_declares():
    known = known_variables()
    config = set(configmap())
    assert not config - known, f"unknown variables in the ConfigMap: {config - known}"
    assert not config & SECRET_VARIABLES, "secrets belong in ticketmesh-secrets, not the ConfigMap"
    assert configmap()["TM_QUEUE_TYPE"] == "quorum"
    [secret] = find("Secret", "ticketmesh-secrets")
    assert set(secret["stringData"]) == SECRET_VARIABLES
    assert SECRET_VARIABLES <= known
    # Required variables (no default) that are not secrets must be in the ConfigMap.
    import importlib
    required = {v.name for s in SERVICES for v in getattr(importlib.import_module(f"services.{s}.config"), "VARIABLES", ())
                if v.default is None}
    assert required <= config | SECRET_VARIABLES, required - config - SECRET_VARIABLES
    roster_mount = configmap()["TM_ROSTER_FILE"]
    for service in SERVICES:
        mounts = {m["name"]: m["mountPath"] for m in container(service)["volumeMounts"]}
        assert roster_mount.startswith(mounts["roster"] + "/")


def dispatcher_queues() -> set[str]:
    """The dispatcher's handler queues, from its nameko entrypoints (in a child process: nameko
    imports eventlet, which this asyncio test process must not load)."""
    code = ("import inspect, json, services.dispatcher.service as m\n"
            "cls = next(c for c in vars(m).values() if inspect.isclass(c) and getattr(c, 'name', None) == 'dispatcher')\n"
            "print(json.dumps([[e.source_service, e.event_type, n] for n, f in inspect.getmembers(cls, inspect.isfunction)\n"
            "                  for e in getattr(f, 'nameko_entrypoints', ()) if hasattr(e, 'event_type')]))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=60, check=True).stdout
    return {handler_queue_name(source, event_type, "dispatcher", method) for source, event_type, method in json.loads(out)}


def test_keda_scales_intake_and_dispatcher_deployments_on_real_queues():
    scaled = {so["spec"]["scaleTargetRef"]["name"]: so for so in find("ScaledObject")}
    assert {"dispatcher", "intake-chat", "intake-phone"} <= set(scaled)
    for name, so in scaled.items():
        [deployment] = find("Deployment", name)
        assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the replica count"
        assert so["spec"]["minReplicaCount"] >= 2
    queues = dispatcher_queues()
    dispatcher_triggers = {t["metadata"]["queueName"] for t in scaled["dispatcher"]["spec"]["triggers"] if t["type"] == "rabbitmq"}
    assert dispatcher_triggers == {q for q in queues if "-ticket_received--" in q}
    chat_queues = {t["metadata"]["queueName"] for t in scaled["intake-chat"]["spec"]["triggers"] if t["type"] == "rabbitmq"}
    chat_source = (REPO_ROOT / "services/intake_chat/service.py").read_text()
    for queue in chat_queues:
        handler = queue.rsplit(".", 1)[1]
        assert queue.startswith("evt-agent_desk-agent_replied--intake_chat.") and f'"{handler}"' in chat_source
    [auth] = find("TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "host", "name": "ticketmesh-secrets", "key": "TM_AMQP_URI"}]


@pytest.fixture(scope="module")
def keda_validator() -> Path:
    """deploy/validate installed with npm ci under var/ (again only when its lock file changed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed to check the KEDA resources (Debian: apt-get install nodejs npm)")
    lock = (KEDA_TOOL / "package-lock.json").read_bytes()
    work = REPO_ROOT / "var" / "deploy-validate"
    stamp = work / ".lock-sha256"
    digest = hashlib.sha256(lock + (KEDA_TOOL / "validate-keda.mjs").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest or not (work / "node_modules").is_dir():
        work.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json", "validate-keda.mjs"):
            shutil.copy2(KEDA_TOOL / name, work / name)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=work, check=True, timeout=300)
        stamp.write_text(digest)
    return work


def run_keda_validator(tool: Path, resources: list[dict]) -> tuple[int, list[dict]]:
    result = subprocess.run(["node", str(tool / "validate-keda.mjs")], input=json.dumps(resources), capture_output=True,
                            text=True, timeout=60)
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_keda_resources_follow_the_crd_schema(keda_validator):
    resources = [doc for _, doc in all_manifests() if doc["apiVersion"].startswith("keda.sh/")]
    code, results = run_keda_validator(keda_validator, resources)
    assert code == 0 and len(results) == len(resources) >= 4, results
    broken = copy.deepcopy(find("ScaledObject", "dispatcher")[0])
    broken["spec"]["minReplicaCount"] = "two"
    del broken["spec"]["scaleTargetRef"]["name"]
    code, [result] = run_keda_validator(keda_validator, [broken])
    assert code == 1 and "minReplicaCount" in result["errors"][0] and "name" in result["errors"][0]


# --- image ------------------------------------------------------------------------------------


def test_dockerfile_builds_one_non_root_image_from_the_pinned_dependencies():
    parser = DockerfileParser(path=str(DOCKERFILE))
    instructions = parser.structure
    bases = [i["value"].split()[0] for i in instructions if i["instruction"] == "FROM"]
    assert bases and all(":" in b and not b.endswith(":latest") for b in bases), bases
    for copy_step in (i["value"].split() for i in instructions if i["instruction"] == "COPY"):
        if copy_step[0].startswith("--from"):
            continue
        for source in copy_step[:-1]:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
    runs = " ".join(i["value"] for i in instructions if i["instruction"] == "RUN")
    assert "-c constraints.txt" in runs
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert users and users[-1].isdigit() and users[-1] != "0"
    [entrypoint] = [i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["ticketmesh-entrypoint"]
    assert "deploy/docker/entrypoint.sh /usr/local/bin/ticketmesh-entrypoint" in parser.content
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {"**/.venv", "**/var", ".git"} <= set(ignored)


def test_image_entrypoint_starts_each_service_by_name(tmp_path):
    # A stand-in python on PATH shows what the entry point would exec.
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "python $*"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    for service in SERVICES:
        assert (REPO_ROOT / "services" / service / "__main__.py").exists()
        out = subprocess.run(["sh", str(ENTRYPOINT), service], env=env, capture_output=True, text=True, check=True).stdout
        assert out.strip() == f"python -m services.{service}"
    out = subprocess.run(["sh", str(ENTRYPOINT), "demo"], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "python -m devenv.demo"
    listed = subprocess.run(["sh", str(ENTRYPOINT), "help"], env=env, capture_output=True, text=True, check=True).stdout
    assert listed.splitlines()[1].split()[1:] == list(SERVICES)
    unknown = subprocess.run(["sh", str(ENTRYPOINT), "dispatch"], env=env, capture_output=True, text=True)
    assert unknown.returncode == 64 and "unknown command" in unknown.stderr


# --- the settings parse -----------------------------------------------------------------------


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` with nothing set: the default (what a bare ``up`` uses)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def service_settings(service: str, environ: dict[str, str]):
    import importlib

    return importlib.import_module(f"services.{service}.config").Settings.from_env(environ)


def test_every_service_accepts_the_compose_and_kubernetes_settings(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)       # the image's working directory holds deploy/ the same way
    services = compose()["services"]
    [secret] = find("Secret", "ticketmesh-secrets")
    cluster_env = {**configmap(), **secret["stringData"], "TM_REPLICA_ID": "pod-1",
                   # the roster Secret's mount, as the file it holds in the image
                   "TM_ROSTER_FILE": "deploy/demo/roster.yaml"}
    for service in SERVICES:
        compose_env = {k: interpolate(v) for k, v in services[service]["environment"].items()}
        for environ in (compose_env, cluster_env):
            settings = service_settings(service, environ)
            assert settings.common.queue_type == "quorum", service
        host_var = HEALTH_PORT_VARS[service].replace("_PORT", "_HOST")
        assert compose_env[host_var] == cluster_env[host_var] == "0.0.0.0"

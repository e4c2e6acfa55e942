"""deploy/kuberay/rayjob.yaml holds what the KubeRay operator (ray.io/v1) requires.

No Python package ships KubeRay's CRD schema, so the part of it this manifest uses is
written out below (required fields, types, enums, as in KubeRay's ray.io_rayjobs CRD)
and checked with jsonschema; then the project's own rules: token auth, no trial on the
head, GPU workers shaped like configs/cluster-gpu.yaml wants, S3 storage, the image's
Ray version equal to the pinned one, an entrypoint config that exists in the image.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "deploy" / "kuberay" / "rayjob.yaml"
DOCKERFILE = ROOT / "deploy" / "kuberay" / "Dockerfile"

_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_CONTAINER = {"type": "object", "required": ["name", "image"], "properties": {
    "name": {"type": "string"}, "image": {"type": "string"},
    "resources": {"type": "object", "properties": {
        "requests": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
        "limits": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}}}},
    "envFrom": {"type": "array", "items": {"type": "object"}},
    "env": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "value": {"type": "string"}}}},
    "ports": {"type": "array", "items": {"type": "object", "required": ["containerPort"]}}}}
_TEMPLATE = {"type": "object", "required": ["spec"], "properties": {"spec": {
    "type": "object", "required": ["containers"], "properties": {
        "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
        "serviceAccountName": {"type": "string"},
        "tolerations": {"type": "array", "items": {"type": "object"}}}}}}
RAYJOB_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"], "properties": {"name": {
            "type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}}},
        "spec": {"type": "object", "required": ["entrypoint", "rayClusterSpec"], "properties": {
            "entrypoint": {"type": "string"},
            "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode",
                                        "SidecarMode"]},
            "shutdownAfterJobFinishes": {"type": "boolean"},
            "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
            "rayClusterSpec": {"type": "object", "required": ["headGroupSpec"], "properties": {
                "rayVersion": {"type": "string"},
                "enableInTreeAutoscaling": {"type": "boolean"},
                "authOptions": {"type": "object", "properties": {
                    "mode": {"enum": ["disabled", "token"]}, "secretName": {"type": "string"},
                    "enableK8sTokenAuth": {"type": "boolean"}}, "additionalProperties": False},
                "headGroupSpec": {"type": "object", "required": ["template"], "properties": {
                    "rayStartParams": _STR_MAP, "template": _TEMPLATE}},
                "workerGroupSpecs": {"type": "array", "items": {
                    "type": "object",
                    "required": ["groupName", "maxReplicas", "minReplicas", "template"],
                    "properties": {
                        "groupName": {"type": "string"},
                        "replicas": {"type": "integer", "minimum": 0},
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 0},
                        "rayStartParams": _STR_MAP, "template": _TEMPLATE}}}}}}}}}


def _load() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def _containers(job: dict) -> list[dict]:
    rcs = job["spec"]["rayClusterSpec"]
    out = list(rcs["headGroupSpec"]["template"]["spec"]["containers"])
    for group in rcs.get("workerGroupSpecs", []):
        out += group["template"]["spec"]["containers"]
    return out


def test_manifest_matches_the_operator_schema():
    jsonschema.validate(_load(), RAYJOB_SCHEMA)


@pytest.mark.parametrize("breakage", [
    lambda j: j["spec"]["rayClusterSpec"].pop("headGroupSpec"),
    lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("maxReplicas"),
    lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
    lambda j: j["spec"]["rayClusterSpec"]["authOptions"].update({"mode": "Token"}),
])
def test_schema_catches_what_the_operator_would_reject(breakage):
    job = copy.deepcopy(_load())
    breakage(job)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, RAYJOB_SCHEMA)


def test_token_auth_on_and_no_trial_on_the_head():
    job = _load()
    rcs = job["spec"]["rayClusterSpec"]
    assert rcs["authOptions"]["mode"] == "token"
    for c in _containers(job):  # the operator sets RAY_AUTH_MODE / RAY_AUTH_TOKEN itself
        assert not any(e["name"].startswith("RAY_AUTH") for e in c.get("env", []))
    assert rcs["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_gpu_workers_autoscale_with_the_trial_shape():
    rcs = _load()["spec"]["rayClusterSpec"]
    assert rcs["enableInTreeAutoscaling"] is True
    sweep = yaml.safe_load((ROOT / "configs" / "cluster-gpu.yaml").read_text())
    per_trial = sweep["resources"]
    for group in rcs["workerGroupSpecs"]:
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        (c,) = group["template"]["spec"]["containers"]
        limits = c["resources"]["limits"]
        gpus, cpus = int(limits["nvidia.com/gpu"]), int(limits["cpu"])
        assert gpus >= 1 and c["resources"]["requests"] == limits
        trials = round(gpus / per_trial["gpu"])  # trials per pod by GPU share ...
        assert trials * per_trial["cpu"] <= cpus  # ... each with its CPU


def test_trial_processes_start_with_the_worker_environment():
    """Workers' pods set sweep.engine.allocator.WORKER_ENV (one malloc arena), as a local
    Ray's trial processes get it."""
    from sweep.engine.allocator import WORKER_ENV

    for group in _load()["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        (c,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert WORKER_ENV.items() <= env.items(), env


def test_entrypoint_runs_a_sweep_to_s3_from_the_image():
    job = _load()
    entry = job["spec"]["entrypoint"].split()
    assert entry[:2] == ["collapse-sweep", "run"]
    config = entry[2]
    assert config.startswith("/app/") and (ROOT / config.removeprefix("/app/")).is_file()
    assert entry[entry.index("--address") + 1] == "auto"
    assert entry[entry.index("--storage") + 1].startswith("s3://")


def test_image_is_the_projects_and_ray_versions_agree():
    job = _load()
    images = {c["image"] for c in _containers(job)}
    assert len(images) == 1 and images.pop().startswith("collapse-sweep:")
    ray_pin = re.search(r'"ray\[tune\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray_pin
    docker = DOCKERFILE.read_text()
    assert "pip install --no-cache-dir torch==2.13.0" in docker and "index-url" not in docker
    assert '".[cluster]"' in docker and "wget" in docker  # ray[default]; KubeRay's probes
    assert "COPY configs ./configs" in docker and "WORKDIR /app" in docker

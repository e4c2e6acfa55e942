"""deploy/aws_setup.py against moto's in-process AWS: the group, IAM profiles and bucket
it makes, and what `ray up`'s own AWS bootstrap then does with them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("moto")
pytest.importorskip("boto3")

from deploy import aws_setup  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CIDR = "203.0.113.7/32"


@pytest.fixture(scope="module")
def account():
    """One moto account for the module (starting one costs seconds); tests use own regions."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-west-2")
        mp.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # AmazonEC2FullAccess exists
        with mock_aws():
            yield


NAMES = iter(range(100))


@pytest.fixture
def aws(account, tmp_path):
    """cluster.yaml with its own group, profile and bucket names, as tmp_path/cluster.yaml.

    One region (moto loads seconds of EC2 data per region); the names keep tests apart.
    """
    n = next(NAMES)
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["provider"]["security_group"]["GroupName"] += f"-{n}"
    for node in cfg["available_node_types"].values():
        node["node_config"]["IamInstanceProfile"]["Name"] += f"-{n}"
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(cfg))
    return SimpleNamespace(client=aws_setup._session(cfg).client, n=n,
                           config_path=tmp_path / "cluster.yaml", bucket=f"collapse-test-{n}")


def _setup(aws, cidr=CIDR) -> int:
    return aws_setup.main(["--ssh-cidr", cidr, "--bucket", aws.bucket,
                           "--config", str(aws.config_path)])


def _cfg(aws) -> dict:
    return yaml.safe_load(aws.config_path.read_text())


def _group(session) -> dict | None:
    name = f"collapse-sweep-{session.n}"
    groups = session.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    return groups[0] if groups else None


def _rules(group: dict) -> set[tuple]:
    return aws_setup._rule_keys(group["IpPermissions"])


def _ray_bootstrap(cfg: dict) -> dict:
    """The subnet and security-group steps of `ray up`'s AWS bootstrap."""
    from ray.autoscaler._private.aws.config import _configure_security_group, _configure_subnet

    return _configure_security_group(_configure_subnet(copy.deepcopy(cfg)))


def test_setup_makes_a_closed_group_that_ray_then_uses(aws, capsys):
    assert _setup(aws) == 0
    group = _group(aws)
    gid = group["GroupId"]
    assert _rules(group) == {("tcp", 22, 22, "cidr", CIDR), ("-1", None, None, "group", gid)}

    booted = _ray_bootstrap(_cfg(aws))
    for node in booted["available_node_types"].values():
        assert node["node_config"]["SecurityGroupIds"] == [gid]
    assert _rules(_group(aws)) == _rules(group)  # Ray added no rule (no 0.0.0.0/0 SSH)
    assert "security group collapse-sweep" in capsys.readouterr().out


def test_without_setup_ray_would_open_ssh_to_the_world(aws):
    # Why the setup step exists: a group Ray creates itself admits SSH from anywhere.
    booted = _ray_bootstrap(_cfg(aws))
    gid = booted["available_node_types"]["head"]["node_config"]["SecurityGroupIds"][0]
    assert ("tcp", 22, 22, "cidr", "0.0.0.0/0") in _rules(
        aws.client("ec2").describe_security_groups(GroupIds=[gid])["SecurityGroups"][0])
    # ... and running the setup afterwards closes it again
    assert _setup(aws) == 0
    assert _rules(_group(aws)) == {("tcp", 22, 22, "cidr", CIDR), ("-1", None, None, "group", gid)}


def test_rerun_is_idempotent_and_follows_a_new_address(aws):
    assert _setup(aws) == 0
    cfg = _cfg(aws)
    first = aws_setup.ensure_security_group(cfg, CIDR)
    assert first["added"] == [] and first["removed"] == []
    moved = aws_setup.ensure_security_group(cfg, "198.51.100.0/24")
    assert moved["removed"] == [("tcp", 22, 22, "cidr", CIDR)]
    assert ("tcp", 22, 22, "cidr", "198.51.100.0/24") in _rules(_group(aws))


def test_iam_profiles_and_bucket(aws):
    assert _setup(aws) == 0
    iam = aws.client("iam")
    head_name, worker_name = f"collapse-sweep-head-{aws.n}", f"collapse-sweep-worker-{aws.n}"
    worker_arn = iam.get_role(RoleName=worker_name)["Role"]["Arn"]
    for name in (head_name, worker_name):
        roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
        assert [r["RoleName"] for r in roles] == [name]
    worker = iam.get_role_policy(RoleName=worker_name, PolicyName="collapse-sweep")
    w_doc = worker["PolicyDocument"]
    w_doc = json.loads(w_doc) if isinstance(w_doc, str) else w_doc
    assert [s["Resource"] for s in w_doc["Statement"]] == [
        [f"arn:aws:s3:::{aws.bucket}", f"arn:aws:s3:::{aws.bucket}/*"]]  # the bucket, nothing else
    assert not iam.list_attached_role_policies(RoleName=worker_name)["AttachedPolicies"]
    head = iam.get_role_policy(RoleName=head_name, PolicyName="collapse-sweep")
    h_doc = head["PolicyDocument"]
    h_doc = json.loads(h_doc) if isinstance(h_doc, str) else h_doc
    assert {"Effect": "Allow", "Action": "iam:PassRole", "Resource": [worker_arn]} in h_doc["Statement"]
    attached = iam.list_attached_role_policies(RoleName=head_name)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [aws_setup.EC2_FULL_ACCESS]
    s3 = aws.client("s3")
    block = s3.get_public_access_block(Bucket=aws.bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    assert _setup(aws) == 0  # exists: fine


def test_bad_cidr_is_refused_before_anything_changes(aws, capsys):
    for cidr in ["0.0.0.0/0", "10.0.0.0/4", "not-an-ip", "2001:db8::/64"]:
        assert _setup(aws, cidr) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --ssh-cidr:"), (cidr, err)
    assert _group(aws) is None
    assert aws.bucket not in {b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]}

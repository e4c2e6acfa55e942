"""Prepare an AWS account for `ray up cluster.yaml`: security group, IAM profiles, S3 bucket.

    python deploy/aws_setup.py --ssh-cidr 203.0.113.7/32 --bucket my-collapse-runs

Run it once (again after your address changes; it is idempotent). It creates, or brings
back to exactly these rules:

- the security group named in cluster.yaml (``provider.security_group.GroupName``), in
  the VPC that ``ray up`` will pick: SSH (22) from ``--ssh-cidr`` only, every port from
  members of the group itself (Ray's GCS 6379, raylets, object managers, workers), nothing
  else. Ray uses an existing group with that name as it is; a group that Ray creates
  itself opens SSH to 0.0.0.0/0, which is why this step comes first.
- the IAM instance profiles named in cluster.yaml: the head's may start and stop EC2
  instances, hand the worker profile to the workers it starts, and use the bucket; the
  workers' may only use the bucket (trials write their checkpoints to S3).
- the S3 bucket for ``--storage s3://BUCKET/runs``, with public access blocked.

Credentials and region come from the standard AWS environment (``AWS_PROFILE``,
``AWS_ACCESS_KEY_ID``, ...); the region is cluster.yaml's ``provider.region``.
Exit status 2 with one line on a bad argument; nothing is changed in that case.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EC2_FULL_ACCESS = "arn:aws:iam::aws:policy/AmazonEC2FullAccess"
EC2_TRUST = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


class SetupError(Exception):
    """A bad argument or cluster.yaml: one line for the user, exit status 2."""


# --------------------------------------------------------------------------- cluster.yaml
def load_cluster(path: Path) -> dict[str, Any]:
    cfg = yaml.safe_load(Path(path).read_text())
    if not isinstance(cfg, dict) or cfg.get("provider", {}).get("type") != "aws":
        raise SetupError(f"{path}: not an AWS cluster config (provider.type: aws)")
    return cfg


def group_name(cfg: dict[str, Any]) -> str:
    name = cfg["provider"].get("security_group", {}).get("GroupName")
    if not name:
        raise SetupError("cluster.yaml: provider.security_group.GroupName is not set")
    return name


def profile_names(cfg: dict[str, Any]) -> tuple[str, list[str]]:
    """(head profile, worker profiles) named in the node types' IamInstanceProfile.Name."""
    head_type = cfg["head_node_type"]
    head, workers = None, []
    for key, node_type in cfg["available_node_types"].items():
        name = node_type["node_config"].get("IamInstanceProfile", {}).get("Name")
        if not name:
            raise SetupError(f"cluster.yaml: {key}.node_config.IamInstanceProfile.Name is not set")
        if key == head_type:
            head = name
        elif name not in workers:
            workers.append(name)
    assert head is not None
    return head, workers


def ssh_network(cidr: str) -> str:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise SetupError(f"--ssh-cidr: {cidr!r} is not an address range ({exc})") from None
    if net.version != 4:
        raise SetupError(f"--ssh-cidr: {cidr!r}: give an IPv4 range (e.g. 203.0.113.7/32)")
    if net.prefixlen < 8:
        raise SetupError(f"--ssh-cidr: {cidr!r} opens SSH to {net.num_addresses} addresses; "
                         "give your own address (e.g. 203.0.113.7/32)")
    return str(net)


# --------------------------------------------------------------------------- security group
def cluster_vpc(cfg: dict[str, Any]) -> str:
    """The VPC `ray up` will use: Ray's own subnet choice for this cluster.yaml."""
    import copy

    from ray.autoscaler._private.aws.config import _configure_subnet

    chosen = _configure_subnet(copy.deepcopy(cfg))
    head = chosen["available_node_types"][chosen["head_node_type"]]["node_config"]
    ec2 = _session(cfg).resource("ec2")
    return ec2.Subnet(head["SubnetIds"][0]).vpc_id


def wanted_rules(group_id: str, ssh_cidr: str) -> list[dict[str, Any]]:
    return [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": ssh_cidr, "Description": "SSH from the operator"}]},
        {"IpProtocol": "-1",
         "UserIdGroupPairs": [{"GroupId": group_id, "Description": "Ray inside the cluster"}]},
    ]


def _rule_keys(perms: list[dict[str, Any]]) -> set[tuple]:
    """One hashable key per (protocol, ports, source) of a list of IpPermissions."""
    keys = set()
    for p in perms:
        proto = str(p.get("IpProtocol"))
        ports = (None, None) if proto == "-1" else (p.get("FromPort"), p.get("ToPort"))
        for r in p.get("IpRanges", []):
            keys.add((proto, *ports, "cidr", r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            keys.add((proto, *ports, "cidr6", r["CidrIpv6"]))
        for r in p.get("UserIdGroupPairs", []):
            keys.add((proto, *ports, "group", r["GroupId"]))
        for r in p.get("PrefixListIds", []):
            keys.add((proto, *ports, "prefix", r["PrefixListId"]))
    return keys


def _perm(key: tuple) -> dict[str, Any]:
    proto, lo, hi, kind, src = key
    perm: dict[str, Any] = {"IpProtocol": proto}
    if proto != "-1":
        perm.update(FromPort=lo, ToPort=hi)
    field = {"cidr": ("IpRanges", "CidrIp"), "cidr6": ("Ipv6Ranges", "CidrIpv6"),
             "group": ("UserIdGroupPairs", "GroupId"),
             "prefix": ("PrefixListIds", "PrefixListId")}[kind]
    perm[field[0]] = [{field[1]: src}]
    return perm


def ensure_security_group(cfg: dict[str, Any], ssh_cidr: str) -> dict[str, Any]:
    """Create or correct the cluster's group; returns {id, vpc, added, removed}."""
    ec2 = _session(cfg).client("ec2")
    name, vpc = group_name(cfg), cluster_vpc(cfg)
    found = ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": [name]}])
    if found["SecurityGroups"]:
        group = found["SecurityGroups"][0]
    else:
        gid = ec2.create_security_group(
            GroupName=name, VpcId=vpc,
            Description="collapse-sweep Ray cluster: SSH from one address, Ray inside the group",
            TagSpecifications=[{"ResourceType": "security-group", "Tags": [
                {"Key": "ray-cluster-name", "Value": cfg["cluster_name"]}]}])["GroupId"]
        group = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    gid = group["GroupId"]
    want = wanted_rules(gid, ssh_cidr)
    have_keys, want_keys = _rule_keys(group.get("IpPermissions", [])), _rule_keys(want)
    extra = sorted(have_keys - want_keys, key=str)
    missing = sorted(want_keys - have_keys, key=str)
    if extra:
        ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[_perm(k) for k in extra])
    if missing:
        ec2.authorize_security_group_ingress(
            GroupId=gid, IpPermissions=[p for p in want if _rule_keys([p]) & set(missing)])
    return {"id": gid, "vpc": vpc, "added": missing, "removed": extra}


# --------------------------------------------------------------------------- IAM + S3
def bucket_policy(bucket: str) -> dict[str, Any]:
    return {"Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject",
                       "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}


def _ensure_role(iam: Any, name: str, statements: list[dict[str, Any]],
                 managed: list[str]) -> str:
    try:
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
                              Description="collapse-sweep Ray cluster node")["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="collapse-sweep",
                        PolicyDocument=json.dumps({"Version": "2012-10-17",
                                                   "Statement": statements}))
    for policy in managed:
        iam.attach_role_policy(RoleName=name, PolicyArn=policy)
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except iam.exceptions.NoSuchEntityException:
        profile = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    if name not in {r["RoleName"] for r in profile.get("Roles", [])}:
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return arn


def ensure_profiles(cfg: dict[str, Any], bucket: str) -> dict[str, str]:
    """The head and worker instance profiles (one role each, same name); {name: role arn}."""
    iam = _session(cfg).client("iam")
    head, workers = profile_names(cfg)
    arns = {w: _ensure_role(iam, w, [bucket_policy(bucket)], []) for w in workers}
    pass_role = {"Effect": "Allow", "Action": "iam:PassRole", "Resource": list(arns.values())}
    arns[head] = _ensure_role(iam, head, [bucket_policy(bucket), pass_role], [EC2_FULL_ACCESS])
    return arns


def ensure_bucket(cfg: dict[str, Any], bucket: str) -> bool:
    """Create the bucket (public access blocked) unless it exists; True when created."""
    s3 = _session(cfg).client("s3")
    region = cfg["provider"]["region"]
    try:
        s3.head_bucket(Bucket=bucket)
        created = False
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise SetupError(f"--bucket: {bucket}: {exc}") from None
        kwargs: dict[str, Any] = {}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(Bucket=bucket, **kwargs)
        created = True
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True,
        "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    return created


def _session(cfg: dict[str, Any]) -> Any:
    return _region_session(cfg["provider"]["region"])


@functools.cache
def _region_session(region: str) -> Any:
    # One session per region: each new session parses botocore's service models again.
    import boto3

    return boto3.session.Session(region_name=region)


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python deploy/aws_setup.py",
        description=__doc__.split("\n\n")[0],
        epilog="Then: ray up cluster.yaml (see the README, 'On a GPU cluster').")
    parser.add_argument("--ssh-cidr", required=True,
                        help="the only addresses allowed to SSH to the nodes, e.g. "
                             "203.0.113.7/32 (your public address)")
    parser.add_argument("--bucket", required=True,
                        help="S3 bucket for sweep storage (created if missing)")
    parser.add_argument("--config", type=Path, default=ROOT / "cluster.yaml",
                        help="the Ray cluster config (default: cluster.yaml)")
    args = parser.parse_args(argv)
    try:
        cfg = load_cluster(args.config)
        cidr = ssh_network(args.ssh_cidr)
        group_name(cfg)
        profile_names(cfg)
        group = ensure_security_group(cfg, cidr)
        arns = ensure_profiles(cfg, args.bucket)
        created = ensure_bucket(cfg, args.bucket)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"security group {group_name(cfg)} ({group['id']}, {group['vpc']}): SSH from {cidr}, "
          f"all ports inside the group; {len(group['added'])} rule(s) added, "
          f"{len(group['removed'])} removed")
    for name, arn in arns.items():
        print(f"instance profile {name}: {arn}")
    print(f"bucket s3://{args.bucket} ({'created' if created else 'exists'}, public access "
          f"blocked); sweep storage: s3://{args.bucket}/runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Tests of the deployment files (deploy/): Kubernetes manifests, Dockerfile, systemd unit.
from __future__ import annotations

"""A real etcd and kube-apiserver on this machine, and the REST calls the cluster tests make.

The binaries come from ``tests/cluster/build_tools.sh`` (``make test-cluster`` builds them once
and passes their paths in ``KAFKA_KLAVIYO_ETCD`` and ``KAFKA_KLAVIYO_KUBE_APISERVER``). There is
no controller-manager, scheduler or kubelet: objects are stored and validated, nothing runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support import free_port, wait_for

TOKEN = "kafka-klaviyo-cluster-test-token"
START_TIMEOUT_S = 120.0


def tool(variable: str) -> Path:
    """A binary named by ``variable``; a missing one fails with how to get it."""
    value = os.environ.get(variable, "")
    path = Path(value)
    if not value or not path.is_file():
        raise AssertionError(
            f"{variable} must name the binary (run `make test-cluster`, which builds etcd, "
            "kube-apiserver and helm once into ~/.cache/kafka-klaviyo/tools)"
        )
    return path


@dataclass
class ApiServer:
    """A running kube-apiserver: its URL, a kubeconfig for helm, an authenticated client."""

    url: str
    kubeconfig: Path
    client: httpx.Client
    _resources: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)

    # -- discovery ------------------------------------------------------------------------

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural resource name, namespaced) of a kind, from the server's discovery."""
        key = (api_version, kind)
        if key not in self._resources:
            prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            listing = self.client.get(prefix)
            listing.raise_for_status()
            for item in listing.json()["resources"]:
                if "/" not in item["name"]:
                    self._resources[(api_version, item["kind"])] = (
                        item["name"],
                        item["namespaced"],
                    )
        if key not in self._resources:
            raise AssertionError(f"the server serves no {kind} in {api_version}")
        return self._resources[key]

    def collection(self, manifest: Mapping[str, Any], namespace: str) -> str:
        """The collection URL path a manifest is created in."""
        api_version = manifest["apiVersion"]
        plural, namespaced = self.resource(api_version, manifest["kind"])
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        namespace = manifest["metadata"].get("namespace", namespace)
        where = f"/namespaces/{namespace}" if namespaced else ""
        return f"{prefix}{where}/{plural}"

    # -- calls ----------------------------------------------------------------------------

    def create(
        self, manifest: Mapping[str, Any], namespace: str, *, dry_run: bool = False
    ) -> httpx.Response:
        """POST a manifest with strict field validation (unknown or duplicate fields fail)."""
        params = {"fieldValidation": "Strict"} | ({"dryRun": "All"} if dry_run else {})
        return self.client.post(
            self.collection(manifest, namespace), params=params, json=dict(manifest)
        )

    def get(self, manifest: Mapping[str, Any], namespace: str) -> httpx.Response:
        """GET the stored object a manifest names."""
        return self.client.get(
            f"{self.collection(manifest, namespace)}/{manifest['metadata']['name']}"
        )

    def wait_established(self, crd_name: str) -> None:
        """Wait until a CustomResourceDefinition serves its kind."""

        def established() -> bool:
            answer = self.client.get(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name}"
            )
            conditions = (answer.json().get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        wait_for(established, 60, f"CRD {crd_name} established")
        self._resources.clear()  # discovery changed


def _write_service_account_keys(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "sa.key"
    public = directory / "sa.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(text[-lines:])


@contextmanager
def running_apiserver(work: Path) -> Iterator[ApiServer]:
    """Start etcd, then kube-apiserver against it; stop both (the API server first)."""
    etcd_bin = tool("KAFKA_KLAVIYO_ETCD")
    apiserver_bin = tool("KAFKA_KLAVIYO_KUBE_APISERVER")
    client_port, peer_port, secure_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{client_port}"
    etcd_log = work / "etcd.log"
    etcd = subprocess.Popen(
        [
            str(etcd_bin),
            "--data-dir", str(work / "etcd"),
            "--listen-client-urls", etcd_url,
            "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
        ],
        stdout=etcd_log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    apiserver: subprocess.Popen[bytes] | None = None
    try:

        def etcd_healthy() -> bool:
            if etcd.poll() is not None:
                raise AssertionError(f"etcd exited {etcd.returncode}:\n{_log_tail(etcd_log)}")
            try:
                return httpx.get(f"{etcd_url}/health", timeout=2).json().get("health") == "true"
            except (httpx.HTTPError, ValueError):
                return False

        wait_for(etcd_healthy, START_TIMEOUT_S, "etcd /health", interval_s=0.5)
        private, public = _write_service_account_keys(work)
        tokens = work / "tokens.csv"
        tokens.write_text(f"{TOKEN},admin,admin,system:masters\n")
        apiserver_log = work / "kube-apiserver.log"
        apiserver = subprocess.Popen(
            [
                str(apiserver_bin),
                f"--etcd-servers={etcd_url}",
                f"--cert-dir={work / 'certs'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={secure_port}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={public}",
                f"--service-account-signing-key-file={private}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={tokens}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
            ],
            stdout=apiserver_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        url = f"https://127.0.0.1:{secure_port}"
        # A throwaway self-signed serving certificate: this test talks to its own process.
        client = httpx.Client(
            base_url=url, verify=False, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        server = apiserver

        def ready() -> bool:
            if server.poll() is not None:
                raise AssertionError(
                    f"kube-apiserver exited {server.returncode}:\n{_log_tail(apiserver_log)}"
                )
            try:
                return client.get("/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, START_TIMEOUT_S, "kube-apiserver /readyz", interval_s=0.5)
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {"server": url, "insecure-skip-tls-verify": True},
                        }
                    ],
                    "users": [{"name": "admin", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
                    "current-context": "test",
                }
            )
        )
        kubeconfig.chmod(0o600)
        try:
            yield ApiServer(url, kubeconfig, client)
        finally:
            client.close()
    finally:
        # The API server shuts down gracefully in a few seconds; etcd must outlive it.
        if apiserver is not None:
            _stop(apiserver, 60)
        _stop(etcd, 30)

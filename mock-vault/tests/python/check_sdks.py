"""Drive mock-vault with the official Python SDKs, unmodified.

Usage: check_sdks.py PATH-TO-mock-vault-BINARY

Starts the binary on a free port, reads its JSON start-up line, and exercises keys
(CryptographyClient wraps locally with the public key, the vault unwraps), secrets and
certificates through azure-keyvault-* and azure-identity. TLS is verified against the mock's
CA and challenge-resource verification stays on. Exits non-zero on the first failure.
"""

import base64
import json
import os
import socket
import subprocess
import sys

from azure.identity import ClientSecretCredential
from azure.keyvault.certificates import CertificateClient, CertificatePolicy
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, EncryptionAlgorithm
from azure.keyvault.secrets import SecretClient


def main() -> int:
    binary = sys.argv[1]
    proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        run(info)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print("python SDK check: 1 passed, 0 failed")
    return 0


def run(info: dict) -> None:
    # *.vault.localhost does not resolve everywhere: pin the mock's host names, as the Rust
    # tests do with reqwest's resolve(). The SDK itself is untouched.
    pinned = {host: addr.rsplit(":", 1)[0] for host, addr in info["resolve"].items()}
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real_getaddrinfo(pinned.get(host, host), *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    os.environ["REQUESTS_CA_BUNDLE"] = info["ca_pem_path"]
    os.environ["SSL_CERT_FILE"] = info["ca_pem_path"]

    credential = ClientSecretCredential(
        info["tenant_id"],
        info["client_id"],
        info["client_secret"],
        authority=info["authority_host"],
        disable_instance_discovery=True,
        connection_verify=info["ca_pem_path"],
    )
    url = info["vaults"]["kv1"]["url"]
    verify = {"connection_verify": info["ca_pem_path"]}

    keys = KeyClient(url, credential, **verify)
    key = keys.create_rsa_key("py-kek", size=2048)
    assert key.properties.version, "created key has a version"
    crypto = CryptographyClient(key, credential, **verify)
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"\x07" * 32)  # local, public key
    assert wrapped.key_id == key.id, (wrapped.key_id, key.id)
    unwrapped = crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)  # vault
    assert unwrapped.key == b"\x07" * 32, "vault unwraps what the SDK wrapped locally"
    sealed = crypto.encrypt(EncryptionAlgorithm.rsa_oaep, b"hello")
    assert crypto.decrypt(EncryptionAlgorithm.rsa_oaep, sealed.ciphertext).plaintext == b"hello"
    rotated = keys.rotate_key("py-kek")
    assert rotated.properties.version != key.properties.version
    assert len(list(keys.list_properties_of_key_versions("py-kek"))) == 2

    secrets = SecretClient(url, credential, **verify)
    secrets.set_secret("py-secret", "s3cret", content_type="text/plain")
    got = secrets.get_secret("py-secret")
    assert got.value == "s3cret" and got.properties.content_type == "text/plain"

    certs = CertificateClient(url, credential, **verify)
    poller = certs.begin_create_certificate("py-cert", CertificatePolicy.get_default())
    cert = poller.result()
    assert cert.cer, "certificate has its DER"
    backing = secrets.get_secret("py-cert")
    pfx = base64.b64decode(backing.value)
    assert backing.properties.managed and pfx[:1] == b"\x30", "backing secret is a PFX"
    print("keys, secrets and certificates work with the Python SDKs")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes an OCI image layout from a root filesystem directory.

usage: layout.py ROOTFS OUT_DIR CONFIG_JSON

CONFIG_JSON is the image config's `config` section (Entrypoint, Cmd, Env, WorkingDir, User).
One uncompressed layer holds ROOTFS (owners root:root, modes and symlinks kept)."""

import hashlib
import io
import json
import os
import sys
import tarfile


def main():
    rootfs, out, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(rootfs)):
            def owner(info):
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                return info
            tar.add(os.path.join(rootfs, entry), arcname=entry, filter=owner)
    layer = put(buf.getvalue())
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    cfg = put(json.dumps(image_config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
    }
    m = put(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **m}],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"{out}: manifest {m['digest']}, layer {layer['size']} bytes")


if __name__ == "__main__":
    main()

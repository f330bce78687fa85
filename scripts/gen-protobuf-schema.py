#!/usr/bin/env python3
"""Generates control/src/apiserver/protobuf/schema.rs, the wire schema of the Kubernetes kinds
whose protobuf bodies the API server decodes.

Why a Go binary: the JSON form of a Kubernetes object is Go's `encoding/json` output of the Go
struct, and that depends on facts the .proto files lose: whether a scalar is a pointer (so an
explicit zero is kept) or a plain value with `omitempty` (so a zero is dropped), which fields are
`json:",inline"`, and the JSON name of every field. All of it is in the reflection data of any Go
binary that links k8s.io/api, such as kubectl: struct types with their field names, Go types and
full struct tags (`json:"replicas,omitempty" protobuf:"varint,1,opt,name=replicas"`).

The schema is cross-checked against the prost-generated `k8s-pb` crate (tag numbers and wire
types of every field), an independent source of the same .proto files.

Run from the repository root; the output is formatted with `rustfmt --edition 2024`:

    python3 scripts/gen-protobuf-schema.py [--kubectl /usr/bin/kubectl] [--k8s-pb DIR]
"""

import argparse
import glob
import os
import re
import struct
import subprocess
import sys

OUT = "control/src/apiserver/protobuf/schema.rs"

# The kinds decoded: (apiVersion, kind, Go package, Go type).
API = "k8s.io/api/"
META = "k8s.io/apimachinery/pkg/apis/meta/v1"
ROOTS = [
    ("v1", "Namespace", API + "core/v1", "Namespace"),
    ("v1", "Pod", API + "core/v1", "Pod"),
    ("v1", "Node", API + "core/v1", "Node"),
    ("v1", "Service", API + "core/v1", "Service"),
    ("v1", "Endpoints", API + "core/v1", "Endpoints"),
    ("v1", "ConfigMap", API + "core/v1", "ConfigMap"),
    ("v1", "Secret", API + "core/v1", "Secret"),
    ("v1", "Event", API + "core/v1", "Event"),
    # client-go's events library and kube-rs's Recorder write events.k8s.io/v1 Events.
    ("events.k8s.io/v1", "Event", API + "events/v1", "Event"),
    ("v1", "ServiceAccount", API + "core/v1", "ServiceAccount"),
    ("v1", "Binding", API + "core/v1", "Binding"),
    ("apps/v1", "Deployment", API + "apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet", API + "apps/v1", "ReplicaSet"),
    ("apps/v1", "DaemonSet", API + "apps/v1", "DaemonSet"),
    ("apps/v1", "StatefulSet", API + "apps/v1", "StatefulSet"),
    ("v1", "PersistentVolumeClaim", API + "core/v1", "PersistentVolumeClaim"),
    ("v1", "PersistentVolume", API + "core/v1", "PersistentVolume"),
    # `kubectl create quota`.
    ("v1", "ResourceQuota", API + "core/v1", "ResourceQuota"),
    ("storage.k8s.io/v1", "StorageClass", API + "storage/v1", "StorageClass"),
    # `kubectl create role|clusterrole|rolebinding|clusterrolebinding|ingress`.
    ("rbac.authorization.k8s.io/v1", "Role", API + "rbac/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", API + "rbac/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", API + "rbac/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", API + "rbac/v1", "ClusterRoleBinding"),
    ("networking.k8s.io/v1", "Ingress", API + "networking/v1", "Ingress"),
    ("networking.k8s.io/v1", "IngressClass", API + "networking/v1", "IngressClass"),
    ("networking.k8s.io/v1", "NetworkPolicy", API + "networking/v1", "NetworkPolicy"),
    ("batch/v1", "Job", API + "batch/v1", "Job"),
    ("batch/v1", "CronJob", API + "batch/v1", "CronJob"),
    ("discovery.k8s.io/v1", "EndpointSlice", API + "discovery/v1", "EndpointSlice"),
    ("node.k8s.io/v1", "RuntimeClass", API + "node/v1", "RuntimeClass"),
    ("coordination.k8s.io/v1", "Lease", API + "coordination/v1", "Lease"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", API + "autoscaling/v2", "HorizontalPodAutoscaler"),
    # kubectl autoscale falls back to autoscaling/v1 when v2 fails.
    ("autoscaling/v1", "HorizontalPodAutoscaler", API + "autoscaling/v1", "HorizontalPodAutoscaler"),
    ("autoscaling/v1", "Scale", API + "autoscaling/v1", "Scale"),
    ("policy/v1", "Eviction", API + "policy/v1", "Eviction"),
    ("policy/v1", "PodDisruptionBudget", API + "policy/v1", "PodDisruptionBudget"),
    # `kubectl auth can-i` and `kubectl auth can-i --list`.
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview", API + "authorization/v1",
     "SelfSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview", API + "authorization/v1",
     "SelfSubjectRulesReview"),
    # `kubectl auth whoami`.
    ("authentication.k8s.io/v1", "SelfSubjectReview", API + "authentication/v1",
     "SelfSubjectReview"),
    # DeleteOptions is sent under the version of the resource being deleted.
    ("v1", "DeleteOptions", META, "DeleteOptions"),
    ("meta.k8s.io/v1", "DeleteOptions", META, "DeleteOptions"),
    ("apps/v1", "DeleteOptions", META, "DeleteOptions"),
    ("batch/v1", "DeleteOptions", META, "DeleteOptions"),
    ("discovery.k8s.io/v1", "DeleteOptions", META, "DeleteOptions"),
    ("node.k8s.io/v1", "DeleteOptions", META, "DeleteOptions"),
    ("coordination.k8s.io/v1", "DeleteOptions", META, "DeleteOptions"),
    ("autoscaling/v2", "DeleteOptions", META, "DeleteOptions"),
    ("autoscaling/v1", "DeleteOptions", META, "DeleteOptions"),
    ("policy/v1", "DeleteOptions", META, "DeleteOptions"),
    ("events.k8s.io/v1", "DeleteOptions", META, "DeleteOptions"),
    ("storage.k8s.io/v1", "DeleteOptions", META, "DeleteOptions"),
    ("rbac.authorization.k8s.io/v1", "DeleteOptions", META, "DeleteOptions"),
    ("networking.k8s.io/v1", "DeleteOptions", META, "DeleteOptions"),
    ("scheduling.k8s.io/v1", "DeleteOptions", META, "DeleteOptions"),
]

# Go types with their own JSON form, decoded by hand-written code.
SPECIAL = {
    (META, "Time"): "Time",
    (META, "MicroTime"): "MicroTime",
    (META, "Duration"): "Duration",
    (META, "FieldsV1"): "FieldsV1",
    ("k8s.io/apimachinery/pkg/util/intstr", "IntOrString"): "IntOrString",
    ("k8s.io/apimachinery/pkg/api/resource", "Quantity"): "Quantity",
    ("k8s.io/apimachinery/pkg/runtime", "RawExtension"): "RawExtension",
}

GO_KINDS = {1: "bool", 5: "int32", 6: "int64", 14: "float64", 21: "map", 22: "ptr",
            23: "slice", 24: "string", 25: "struct", 8: "uint8"}
SCALARS = {"bool": "Bool", "int32": "Int32", "int64": "Int64", "float64": "Double",
           "string": "String"}


class GoBinary:
    """Reads struct types from the reflection data of a non-PIE amd64 ELF Go binary."""

    def __init__(self, path):
        self.b = open(path, "rb").read()
        b = self.b
        if b[:4] != b"\x7fELF" or b[4] != 2:
            sys.exit(f"{path}: not a 64-bit ELF file")
        shoff, = struct.unpack_from("<Q", b, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", b, 0x3A)
        raw = [struct.unpack_from("<IIQQQQ", b, shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx][4]
        self.sections = {}
        for name, _typ, _flags, addr, off, size in raw:
            n = b[names + name:b.index(b"\0", names + name)].decode()
            self.sections[n] = (addr, off, size)
        # moduledata.types starts .rodata in binaries linked by the Go linker.
        self.types = self.sections[".rodata"][0]

    def off(self, va):
        for addr, off, size in self.sections.values():
            if addr and addr <= va < addr + size:
                return va - addr + off
        raise ValueError(f"address {va:#x} outside the binary")

    def u8(self, va):
        return self.b[self.off(va)]

    def i32(self, va):
        return struct.unpack_from("<i", self.b, self.off(va))[0]

    def u64(self, va):
        return struct.unpack_from("<Q", self.b, self.off(va))[0]

    def varint(self, va):
        v = s = 0
        while True:
            c = self.u8(va)
            va += 1
            v |= (c & 0x7F) << s
            s += 7
            if c < 0x80:
                return v, va

    def name(self, va):
        """Decodes an abi.Name: flags, varint length, name, then varint length and tag."""
        flags = self.u8(va)
        n, p = self.varint(va + 1)
        o = self.off(p)
        name, tag = self.b[o:o + n].decode(), ""
        if flags & 2:
            tl, p = self.varint(p + n)
            o = self.off(p)
            tag = self.b[o:o + tl].decode()
        return flags, name, tag

    def kind(self, t):
        return GO_KINDS.get(self.u8(t + 23) & 0x1F, "other")

    def type_name(self, t):
        _, n, _ = self.name(self.types + self.i32(t + 40))
        return n[1:] if self.u8(t + 20) & 2 else n

    def pkg_path(self, t):
        """The package of a named struct type, from its uncommon type (after the 80-byte StructType)."""
        if not self.u8(t + 20) & 1 or self.kind(t) != "struct":
            return None
        return self.name(self.types + self.i32(t + 80))[1]

    def structs(self):
        """Every struct type reachable from the type links: {(pkg, name): [(field, tag, type)]}."""
        addr, off, size = self.sections[".typelink"]
        stack = [self.types + struct.unpack_from("<i", self.b, off + 4 * i)[0]
                 for i in range(size // 4)]
        seen, out = set(), {}
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            k = self.kind(t)
            if k in ("ptr", "slice"):
                stack.append(self.u64(t + 48))
            elif k == "map":
                stack += [self.u64(t + 48), self.u64(t + 56)]
            elif k == "struct":
                fields = []
                for j in range(self.u64(t + 64)):
                    fa = self.u64(t + 56) + 24 * j
                    _, fname, tag = self.name(self.u64(fa))
                    ft = self.u64(fa + 8)
                    fields.append((fname, tag, ft))
                    stack.append(ft)
                pkg = self.pkg_path(t)
                if pkg:
                    out[(pkg, self.type_name(t).split(".")[-1])] = fields
        return out


def tag_value(tag, key):
    m = re.search(key + r':"([^"]*)"', tag)
    return m.group(1) if m else None


class Schema:
    def __init__(self, go):
        self.go = go
        self.structs = go.structs()
        self.index = {}
        self.messages = []

    def message(self, pkg, name):
        key = (pkg, name)
        if key in self.index:
            return self.index[key]
        if key not in self.structs:
            sys.exit(f"{pkg}.{name}: not in the Go binary")
        i = len(self.messages)
        self.index[key] = i
        entry = {"pkg": pkg, "name": name, "fields": []}
        self.messages.append(entry)
        for fname, tag, t in self.structs[key]:
            json_tag = tag_value(tag, "json")
            proto = tag_value(tag, "protobuf")
            if json_tag is None:
                sys.exit(f"{pkg}.{name}.{fname}: no json tag")
            json_name, *opts = json_tag.split(",")
            if json_name == "-" or proto is None:
                # TypeMeta (set from the envelope) and fields Go never serializes.
                if json_name not in ("-", "") and fname != "TypeMeta":
                    print(f"note: {name}.{fname} has no protobuf tag; skipped", file=sys.stderr)
                continue
            number = proto.split(",")[1]
            shape, ty, key_ty = self.shape(t, f"{pkg}.{name}.{fname}")
            inline = "inline" in opts
            if inline and (shape != "Value" or not ty.startswith("Message(")):
                sys.exit(f"{name}.{fname}: inline field that is not a struct")
            # The tag's wire type is not always what the generated code writes (SecretVolumeSource
            # defaultMode says "bytes" but is a varint); the k8s-pb cross-check is authoritative.
            entry["fields"].append({
                "go": fname, "tag": int(number), "json": "" if inline else json_name,
                "shape": shape, "omitempty": "omitempty" in opts, "ty": ty, "key": key_ty,
            })
        return i

    def elem(self, t, where):
        """The element type of a field: a scalar, bytes, a special type or a message."""
        g = self.go
        k = g.kind(t)
        if k == "struct":
            pkg, name = g.pkg_path(t), g.type_name(t).split(".")[-1]
            if (pkg, name) in SPECIAL:
                return SPECIAL[(pkg, name)]
            return f"Message({self.message(pkg, name)})"
        if k == "slice" and g.kind(g.u64(t + 48)) == "uint8":
            return "Bytes"
        if k == "slice" and g.type_name(t).split(".")[-1] == "ExtraValue":
            # authentication/v1 ExtraValue: a named []string, on the wire a message {items = 1}.
            return "StringList"
        if k in SCALARS:
            return SCALARS[k]
        sys.exit(f"{where}: unsupported Go type {g.type_name(t)}")

    def shape(self, t, where):
        g = self.go
        k = g.kind(t)
        if k == "ptr":
            return "Pointer", self.elem(g.u64(t + 48), where), None
        if k == "slice" and g.kind(g.u64(t + 48)) != "uint8":
            return "Slice", self.elem(g.u64(t + 48), where), None
        if k == "map":
            key = g.u64(t + 48)
            if g.kind(key) != "string":
                sys.exit(f"{where}: map key is not a string")
            return "Map", self.elem(g.u64(t + 56), where), "String"
        return "Value", self.elem(t, where), None


def k8s_pb_messages(root):
    """{(module dir, message): {tag: (prost type, rust field)}} from the k8s-pb sources."""
    out = {}
    for path in glob.glob(os.path.join(root, "**", "mod.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), root)
        current = None
        pending = None
        for line in open(path):
            m = re.match(r"pub struct (\w+) \{", line)
            if m:
                current = out.setdefault((module, m.group(1).lower()), {})
                continue
            m = re.search(r"#\[prost\((.*)tag = \"(\d+)\"", line)
            if m and current is not None:
                pending = (m.group(1), int(m.group(2)))
                continue
            m = re.match(r"\s*pub (?:r#)?(\w+):", line)
            if m and pending and current is not None:
                current[pending[1]] = (pending[0], m.group(1))
                pending = None
    return out


def cross_check(schema, pb):
    """Every field's tag and wire type must agree with k8s-pb's prost attributes."""
    problems = 0
    for msg in schema.messages:
        pkg = msg["pkg"]
        module = pkg.replace("k8s.io/", "")
        key = (module, msg["name"].lower())
        if key not in pb:
            print(f"error: {pkg}.{msg['name']} not in k8s-pb", file=sys.stderr)
            problems += 1
            continue
        fields = pb[key]
        for f in msg["fields"]:
            got = fields.get(f["tag"])
            if got is None:
                print(f"error: {msg['name']}.{f['go']} tag {f['tag']} not in k8s-pb", file=sys.stderr)
                problems += 1
                continue
            attr, rust = got
            if f["json"] and rust.replace("_", "") != f["json"].lower().replace("_", "") and \
                    rust.replace("_", "") != re.sub(r"[^a-z0-9]", "", f["json"].lower()):
                print(f"note: {msg['name']} tag {f['tag']}: json {f['json']}, k8s-pb {rust}", file=sys.stderr)
            ty = f["ty"]
            want = {"String": "string", "Bool": "bool", "Int32": "int32", "Int64": "int64",
                    "Double": "double", "Bytes": "bytes"}.get(ty, "message")
            if f["shape"] == "Map":
                ok = attr.startswith("btree_map") and attr.split(",")[1].strip().strip('"') == want
            else:
                ok = attr.startswith(want) and ("repeated" in attr) == (f["shape"] == "Slice")
            if not ok:
                print(f"error: {msg['name']}.{f['go']}: {f['shape']} {ty} vs k8s-pb {attr}", file=sys.stderr)
                problems += 1
        go_tags = {f["tag"] for f in msg["fields"]}
        for tag, (attr, rust) in fields.items():
            if tag not in go_tags:
                # k8s-pb follows a newer Kubernetes; a 1.32 client never sends these.
                print(f"note: {msg['name']}: newer field {rust} (tag {tag}) not decoded", file=sys.stderr)
    if problems:
        sys.exit(f"{problems} disagreements with k8s-pb")


def emit(schema, roots):
    lines = [
        "// @generated by scripts/gen-protobuf-schema.py from the reflection data of kubectl",
        "// v1.32 and cross-checked against k8s-pb 0.9; do not edit by hand.",
        "",
        "//! The wire schema of the decoded kinds: for every Go struct, its fields in declaration",
        "//! order with their protobuf tag, JSON name and Go shape.",
        "",
        "use super::{KindDef, MessageDef, Shape::*, Type::*, f, k, m};",
        "",
        "/// Top-level kinds: `(apiVersion, kind, message)`.",
        "pub(super) static KINDS: &[KindDef] = &[",
    ]
    for api_version, kind, pkg, name in roots:
        lines.append(f'    k("{api_version}", "{kind}", {schema.index[(pkg, name)]}),')
    lines += ["];", "", "/// Every message reachable from [`KINDS`], indexed by `Type::Message`.",
              "#[rustfmt::skip]", "pub(super) static MESSAGES: &[MessageDef] = &["]
    for i, msg in enumerate(schema.messages):
        short = re.sub(r"^k8s\.io/(api|apimachinery/pkg/(apis|api|util))/", "", msg["pkg"])
        lines.append(f"    // {i}")
        lines.append(f'    m("{short}.{msg["name"]}", &[')
        for fd in msg["fields"]:
            lines.append(f'        f({fd["tag"]}, "{fd["json"]}", {fd["shape"]}, '
                         f'{"true" if fd["omitempty"] else "false"}, {fd["ty"]}),')
        lines.append("    ]),")
    lines.append("];")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubectl", default="/usr/bin/kubectl")
    ap.add_argument("--k8s-pb", default=None, help="k8s-pb-0.9.0/src (default: cargo registry)")
    args = ap.parse_args()
    pb_root = args.k8s_pb or next(iter(sorted(glob.glob(os.path.expanduser(
        "~/.cargo/registry/src/*/k8s-pb-0.9.0/src")))), None)
    if not pb_root:
        sys.exit("k8s-pb 0.9.0 sources not found; pass --k8s-pb")
    schema = Schema(GoBinary(os.path.realpath(args.kubectl)))
    for _, _, pkg, name in ROOTS:
        schema.message(pkg, name)
    cross_check(schema, k8s_pb_messages(pb_root))
    with open(OUT, "w") as out:
        out.write(emit(schema, ROOTS))
    subprocess.run(["rustfmt", "--edition", "2024", OUT], check=True)
    print(f"wrote {OUT}: {len(schema.messages)} messages", file=sys.stderr)


if __name__ == "__main__":
    main()

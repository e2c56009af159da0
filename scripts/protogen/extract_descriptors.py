"""Writes the serialized FileDescriptorProto embedded in each tensorboard/compat/proto/*_pb2.py
to <out>/<name>.pb. The pip `tensorboard` package ships these generated modules but not the
.proto files; the descriptors are the official schema in binary form.

Usage: python3 extract_descriptors.py <tensorboard/compat/proto dir> <out dir>
"""
import ast
import pathlib
import sys

source, out = map(pathlib.Path, sys.argv[1:3])
out.mkdir(parents=True, exist_ok=True)
for module in sorted(source.glob("*_pb2.py")):
    tree = ast.parse(module.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "AddSerializedFile"
        ):
            data = ast.literal_eval(node.args[0])
            (out / (module.name[: -len("_pb2.py")] + ".pb")).write_bytes(data)

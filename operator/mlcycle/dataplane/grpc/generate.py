"""Regenerates grpc_predict_v2.proto's modules: `python -m mlcycle.dataplane.grpc.generate`.

grpcio-tools' protoc writes the messages (_pb2.py), their type stubs (_pb2.pyi, so mypy
checks the code using them) and the service (_pb2_grpc.py). One edit follows: the
messages register in a descriptor pool of their own, not protobuf's default pool, because
tritonclient registers its own copy of the same `inference` package there (its
grpc_service.proto) and protobuf refuses a second definition of a symbol in one pool: the
tests, which load both, and any process using tritonclient beside the server, would fail
at import. The wire does not see pools.

A unit test regenerates into a temporary directory and fails when the committed files differ.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO = PACKAGE_DIR / "grpc_predict_v2.proto"
# The import root: the proto's path below it becomes the generated modules' package.
SOURCE_ROOT = PACKAGE_DIR.parents[2]
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")

_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "# Not the default pool: tritonclient registers the same `inference` symbols there\n"
    "# (see mlcycle/dataplane/grpc/generate.py).\n"
    "DESCRIPTOR = _descriptor_pool.DescriptorPool().AddSerializedFile("
)


def generate() -> dict[str, str]:
    """The generated modules' text, by file name."""
    from grpc_tools import protoc  # a development dependency: the server never imports it

    with tempfile.TemporaryDirectory(prefix="mlcycle-protoc-") as output:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"--proto_path={SOURCE_ROOT}",
                f"--python_out={output}",
                f"--pyi_out={output}",
                f"--grpc_python_out={output}",
                str(PROTO),
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed on {PROTO} (exit status {status})")
        written = Path(output) / PACKAGE_DIR.relative_to(SOURCE_ROOT)
        files = {name: (written / name).read_text() for name in GENERATED}
    messages = files["grpc_predict_v2_pb2.py"]
    if messages.count(_DEFAULT_POOL) != 1:
        raise RuntimeError(
            f"protoc's output no longer registers in the default pool as {_DEFAULT_POOL!r}"
        )
    files["grpc_predict_v2_pb2.py"] = messages.replace(_DEFAULT_POOL, _PRIVATE_POOL)
    return files


def main() -> int:
    for name, text in generate().items():
        (PACKAGE_DIR / name).write_text(text)
        print(f"wrote {PACKAGE_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

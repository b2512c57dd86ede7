"""Regenerate the Python code of the omnistock gRPC API from the .proto files.

    python proto/gen.py           # rewrite proto/omnistock/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py
    python proto/gen.py --check   # exit 1, naming the stale files, if the committed code differs

Generation runs grpc_tools.protoc with `-I proto`, so the generated modules import each other as
`from omnistock.v1 import types_pb2`, which is how the wheel installs them (`proto/omnistock` is
the top-level package `omnistock`). The output depends only on the .proto files and the
grpcio-tools version, so the check is exact; a version mismatch is reported as such.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "omnistock" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
# The generated stubs do not follow the project's lint rules; ruff's config excludes the .py
# files, and this header covers the .pyi stubs.
PYI_HEADER = "# ruff: noqa\n"

__all__ = ["generate", "main", "proto_files"]


def proto_files() -> list[Path]:
    """The .proto files of the API, sorted so that the protoc invocation is deterministic."""
    return sorted(PACKAGE_DIR.glob("*.proto"))


def _tools_version() -> str:
    return importlib.metadata.version("grpcio-tools")


def generate(out_root: Path) -> list[Path]:
    """Generate code for every .proto into `out_root` (laid out like `proto/`).

    Returns the generated files, relative to `out_root`.
    """
    import grpc_tools
    from grpc_tools import protoc

    include_well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    names = [path.relative_to(PROTO_ROOT).as_posix() for path in proto_files()]
    if not names:
        raise SystemExit(f"gen.py: no .proto files under {PACKAGE_DIR}")
    (out_root / "omnistock" / "v1").mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include_well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *names,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"gen.py: protoc failed with exit code {code}")
    generated = sorted(
        path.relative_to(out_root)
        for path in (out_root / "omnistock" / "v1").iterdir()
        if path.name.endswith(GENERATED_SUFFIXES)
    )
    for relative in generated:
        if relative.name.endswith(".pyi"):
            target = out_root / relative
            target.write_text(PYI_HEADER + target.read_text(encoding="utf-8"), encoding="utf-8")
    return generated


def _committed() -> set[Path]:
    return {
        path.relative_to(PROTO_ROOT)
        for path in PACKAGE_DIR.iterdir()
        if path.name.endswith(GENERATED_SUFFIXES)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and fail if the committed code is stale",
    )
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="omnistock-gen-") as tmp:
        out_root = Path(tmp)
        fresh = generate(out_root)
        committed = _committed()
        stale = [
            relative
            for relative in fresh
            if not (PROTO_ROOT / relative).is_file()
            or (PROTO_ROOT / relative).read_bytes() != (out_root / relative).read_bytes()
        ]
        orphans = sorted(committed - set(fresh))

        if options.check:
            if not stale and not orphans:
                print(f"gen.py: {len(fresh)} generated files are up to date")
                return 0
            lines = [f"gen.py: generated code is stale (grpcio-tools {_tools_version()}):"]
            lines += [f"  differs or missing: proto/{relative}" for relative in stale]
            lines += [f"  no longer generated: proto/{relative}" for relative in orphans]
            lines.append("Run `python proto/gen.py` and commit the result. If only the")
            lines.append("'Protobuf Python Version' header differs, use the pinned grpcio-tools.")
            print("\n".join(lines), file=sys.stderr)
            return 1

        for relative in stale:
            shutil.copyfile(out_root / relative, PROTO_ROOT / relative)
            print(f"wrote proto/{relative}")
        for relative in orphans:
            (PROTO_ROOT / relative).unlink()
            print(f"removed proto/{relative}")
        print(f"gen.py: {len(fresh)} files, {len(stale)} updated, {len(orphans)} removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

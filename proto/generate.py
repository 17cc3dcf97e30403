"""Generate the Python code of proto/ into pipeline/inference_api/ (what `make proto` runs).

    python proto/generate.py [OUT_DIR]

protoc writes modules that import their siblings by the proto's package path
(`from distillery.inference.v1 import inference_pb2`), which is no Python package here: the
import is rewritten to the package the code lives in. The output depends only on the .proto
files and grpcio-tools' version, so a test can regenerate it and compare.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
PROTOS = ["distillery/inference/v1/inference.proto"]
PACKAGE = "pipeline.inference_api"
OUT = ROOT.parent / "pipeline" / "inference_api"


def generate(out: Path) -> list[Path]:
    with tempfile.TemporaryDirectory() as scratch:
        args = [f"-I{ROOT}", f"-I{Path(protoc.__file__).parent / '_proto'}",
                f"--python_out={scratch}", f"--grpc_python_out={scratch}",
                f"--pyi_out={scratch}", *(str(ROOT / p) for p in PROTOS)]  # fmt: skip
        if protoc.main(["protoc", *args]) != 0:
            raise SystemExit("protoc failed")
        written = []
        out.mkdir(parents=True, exist_ok=True)
        for made in sorted(Path(scratch).rglob("*_pb2*")):
            text = re.sub(r"^from distillery\.inference\.v1 import ",
                          f"from {PACKAGE} import ", made.read_text(), flags=re.M)  # fmt: skip
            (out / made.name).write_text(text)
            written.append(out / made.name)
        return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(path)

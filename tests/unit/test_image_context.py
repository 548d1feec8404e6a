"""The image's build context (an allow-list in .dockerignore) holds every module of `infra/`
that the code it runs imports: the launcher and the deployer share a few (constants, the
instance-type table) with the CDK app, and a missing one fails the image build."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def infra_imports() -> set[str]:
    """Modules of infra/ imported anywhere in training/ and inference/ (late ones too)."""
    found = set()
    for path in [*ROOT.glob("training/**/*.py"), *ROOT.glob("inference/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "infra":
                    found |= {f"infra.{alias.name}" for alias in node.names}
                elif node.module.startswith("infra."):
                    found.add(node.module)
    return found


def test_every_infra_module_the_runtime_imports_is_in_the_image() -> None:
    allowed = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    imported = infra_imports()
    assert imported  # the scan sees the launcher's imports
    # infra.outputs is read on the client side only (cdk-outputs.json), never in a container.
    needed = {m for m in imported if m != "infra.outputs"}
    missing = [m for m in sorted(needed) if f"!{m.replace('.', '/')}.py" not in allowed]
    assert not missing, f"add to .dockerignore: {', '.join(f'!{m}' for m in missing)}"

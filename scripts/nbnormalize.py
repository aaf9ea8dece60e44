"""Normalize book notebooks for git: python3 kernelspec, no outputs, no execution counts,
no editor metadata. Usage: python scripts/nbnormalize.py book/*.ipynb"""

import hashlib
import json
import sys

KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

for path in sys.argv[1:]:
    with open(path) as f:
        nb = json.load(f)
    nb["metadata"] = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    for i, cell in enumerate(nb["cells"]):
        if "id" not in cell:  # nbformat 4.5 requires cell ids; derive a stable one
            cell["id"] = hashlib.sha1(f"{path}{i}{''.join(cell['source'])}".encode()).hexdigest()[:8]
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    with open(path, "w") as f:
        json.dump(nb, f, indent=1, ensure_ascii=False)
        f.write("\n")

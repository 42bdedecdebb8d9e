"""Train the VGAE stage of KD-GAT (optionally distilled from a teacher VGAE) on preprocessed CAN graphs."""

import logging
import sys
from pathlib import Path

try:
    from kdgat.training import vgae
except ImportError:  # the package is not installed: use the catalog's own src/
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
    from kdgat.training import vgae

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
)
try:
    vgae.run(
        train=snakemake.input.train,
        val=snakemake.input.val,
        metadata=snakemake.input.metadata,
        teacher=snakemake.input.get("teacher"),
        settings=snakemake.params.settings,
        checkpoint=snakemake.params.get("checkpoint"),
        outputs={name: snakemake.output[name] for name in ("model", "metrics", "history")},
        threads=snakemake.threads,
    )
except Exception:
    logging.getLogger("train_vgae").exception("VGAE training failed")
    raise

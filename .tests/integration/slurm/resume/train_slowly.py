"""One second per epoch; the epoch counter is checkpointed atomically so a killed job resumes."""

# ruff: noqa: F821 (Snakemake injects `snakemake` into script: rules)

import os
import time
from pathlib import Path

checkpoint = Path(snakemake.params.checkpoint)
checkpoint.parent.mkdir(parents=True, exist_ok=True)
start = int(checkpoint.read_text()) if checkpoint.exists() else 0
with open(snakemake.log[0], "a") as log:
    print(f"resumed from epoch {start}" if start else "starting from epoch 0", file=log, flush=True)
    for epoch in range(start + 1, snakemake.params.epochs + 1):
        time.sleep(1)
        tmp = checkpoint.with_suffix(".tmp")
        tmp.write_text(str(epoch))
        os.replace(tmp, checkpoint)
        print(f"epoch {epoch} done", file=log, flush=True)
Path(snakemake.output[0]).write_text(f"trained {snakemake.params.epochs} epochs\n")

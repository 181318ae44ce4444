"""notebooks/walkthrough.ipynb runs end to end offline, and is stored without outputs.

The notebook's cells assert what they print (checkpoint names, strict load,
verify's per-endpoint tolerances, the boring-video identity, top-5 agreement
with TensorFlow), so executing it without an error is the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
#: Seconds any one cell may take (the whole notebook takes about a minute on 2 cores).
CELL_TIMEOUT_S = 600


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert all("attachments" not in cell for cell in nb.cells)


@pytest.mark.slow
def test_walkthrough_runs_end_to_end_offline():
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("tensorflow")
    pytest.importorskip("matplotlib")
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, with the failing cell's traceback, if any assert fails
    finished = nb.cells[-1].outputs
    assert any("walkthrough finished" in out.get("text", "") for out in finished)
    noise = [line for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
             for line in str(out.get("text", "")).splitlines()
             if any(word in line for word in ("cuInit", "oneDNN", "TF-TRT", "cuda_blas", "cudnn_fft"))]
    assert noise == [], "TensorFlow start-up noise in the outputs: " + " | ".join(noise[:3])

"""The course's progress bar (`course_utils.progress.tqdm`).

A notebook executed headless keeps, as the `text/plain` of a progress bar's output, the
finished bar, not the 0 % bar that plain `tqdm.auto` leaves there; outside a kernel the bar
is plain `tqdm.auto` (text on stderr).
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import tqdm.auto

from course_utils import progress

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"

CELLS = {
    # mininterval=0: tqdm refreshes the widget on every iteration; still one output only
    "course": "from course_utils.progress import tqdm\n"
              "import course_utils.progress as p\n"
              "assert p.NOTEBOOK\n"
              "for _ in tqdm(range(50), desc='loop', mininterval=0):\n"
              "    pass",
    "plain": "from tqdm.auto import tqdm as auto_tqdm\n"
             "for _ in auto_tqdm(range(50), desc='loop'):\n"
             "    pass",
    "fit": "import torch\n"
           "from course_utils import train\n"
           "torch.manual_seed(0)\n"
           "x = torch.randn(64, 1)\n"
           "res = train.fit(torch.nn.Linear(1, 1), lambda m, b: (m(b) - 3 * b).pow(2).mean(),\n"
           "                lambda step: x, train.TrainConfig(steps=30, lr=1e-2, desc='train'))",
    "disabled": "for _ in tqdm(range(20), disable=True):\n"
                "    pass",
    "no_leave": "for _ in tqdm(range(20), desc='gone', leave=False):\n"
                "    pass",
    "stopped": "bar = tqdm(total=50, desc='stop')\n"
               "bar.update(20)\n"
               "bar.close()",
}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """{cell name: its outputs} of the notebook above, executed headless with nbclient."""
    mp = pytest.MonkeyPatch()
    mp.setenv("COURSE_MODE", "fast")
    mp.setenv("COURSE_DEVICE", "cpu")
    try:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS.values()]
        path = tmp_path_factory.mktemp("nb") / "bars.ipynb"
        nbformat.write(nb, path)
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, kernel_name="python3", timeout=60,
                       resources={"metadata": {"path": str(ROOT)}}).execute()
        nbformat.validate(nb)
    finally:
        mp.undo()
    return {name: cell.outputs for name, cell in zip(CELLS, nb.cells)}


def text_plain(outputs) -> str:
    return "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs
                     if o.output_type in ("display_data", "execute_result"))


def the_bar(outputs):
    """The one output of a cell that shows one bar (and nothing else)."""
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    return outputs[0]


def test_executed_copy_shows_the_finished_bar(executed):
    bar = the_bar(executed["course"])
    text = bar.data["text/plain"]
    assert "100%" in text and "50/50" in text and text.startswith("loop: 100%|")
    assert "0%|" not in text.replace("100%|", "")
    assert WIDGET in bar.data  # the live widget stays the same widget


def test_plain_tqdm_auto_leaves_the_bar_frozen_at_0_percent(executed):
    """The problem this module solves (a negative control): tqdm.auto's text/plain is the
    bar as it was displayed."""
    text = the_bar(executed["plain"]).data["text/plain"]
    assert "100%" not in text and "50/50" not in text
    assert "0%|" in text and "0/50" in text


def test_fit_in_a_notebook_leaves_its_finished_bar(executed):
    text = the_bar(executed["fit"]).data["text/plain"]
    assert text.startswith("train: 100%|") and "30/30" in text and "loss=" in text


def test_disabled_bar_shows_nothing(executed):
    assert executed["disabled"] == []


def test_a_finished_leave_false_bar_is_removed(executed):
    bar = the_bar(executed["no_leave"])
    assert bar.data == {"text/plain": ""}


def test_a_bar_that_stopped_short_keeps_where_it_stopped(executed):
    text = the_bar(executed["stopped"]).data["text/plain"]
    assert text.startswith("stop:  40%|") and "20/50" in text


def test_outside_a_notebook_it_is_tqdm_auto_on_stderr(capsys):
    assert not progress.NOTEBOOK and progress.tqdm is tqdm.auto.tqdm
    for _ in progress.trange(7, desc="cli", mininterval=0):
        pass
    for _ in progress.tqdm(range(7), desc="off", disable=True):
        pass
    out, err = capsys.readouterr()
    assert out == "" and "cli: 100%|" in err and "7/7" in err and "off" not in err

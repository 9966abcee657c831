"""``python -m dmamap``: the ``dmamap`` command."""

from dmamap.cli import app

app(prog_name="dmamap")

"""``python -m cityscale.cli``: the same CLI as the ``cityscale`` script (the loopback server runners use it)."""

from cityscale.cli.main import app

app(prog_name="cityscale")

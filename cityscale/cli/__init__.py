"""The ``cityscale`` command line (typer): ``main`` assembles it from one module per command group."""

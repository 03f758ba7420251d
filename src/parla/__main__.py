from parla.cli import app

app()

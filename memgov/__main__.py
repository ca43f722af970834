from memgov.cli import app

app()

"""Command line: filled in with the benchmark."""
def main() -> None:
    raise SystemExit("not yet")

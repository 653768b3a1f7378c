"""Command scripts: each module has a `make_parser(prog)` built from documented dataclasses and a `main(...)`."""

"""Command scripts: each module has a `make_parser(prog)` built from documented dataclasses and a `main(...)`;
what several scripts share lives in a private module (`_eval_task`)."""

"""What torchrun's own parser (torch.distributed.run.get_args_parser, the one `torchrun` calls) makes of fm command
lines, for tests/test_cli.cpp. torchrun's argparse accepts abbreviations of its options anywhere on the line, so an fm
option that abbreviates one of them (`--n` of `--nnodes`, `--nproc-per-node`, ...) would be taken by torchrun, or
refused as ambiguous, before fm starts.

  torchrun_args.py IN OUT   IN: JSON list of fm argument lists (each after `fm`); OUT: JSON list, per case, of
                            {"script": ..., "args": [...]} as torchrun would launch it, or {"error": "..."}
"""
import contextlib
import io
import json
import sys

from torch.distributed.run import get_args_parser


def main(src, dst):
    with open(src) as f:
        cases = json.load(f)
    parser = get_args_parser()
    results = []
    for fm_args in cases:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                a = parser.parse_args(["--no-python", "--nproc-per-node", "1", "fm"] + fm_args)
            results.append({"script": a.training_script, "args": a.training_script_args})
        except SystemExit:
            results.append({"error": err.getvalue().strip().splitlines()[-1] if err.getvalue() else "exit"})
    with open(dst, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

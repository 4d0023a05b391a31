"""Start one "host" of a multi-instance job under torchrun: set its SM_* variables, then run the script.

    torchrun --standalone --nproc-per-node 2 host_entry.py <job>/input/config/hosts train.py --epochs 2

torchrun gives every process the same environment; this picks the host named after the
process's rank (RANK 0 -> algo-1, RANK 1 -> algo-2, ...) and loads that host's variables, written
by the Estimator, before running the user's script as __main__. It imports only the standard
library, so it adds no start-up time.
"""
import json
import os
import runpy
import sys


def main() -> None:
    hosts_folder, script, *args = sys.argv[1:]
    host = f"algo-{int(os.environ.get('RANK', '0')) + 1}"
    with open(os.path.join(hosts_folder, f"{host}.json"), encoding="utf-8") as handle:
        os.environ.update(json.load(handle))
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()

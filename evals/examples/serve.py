"""Serve the SIMULATED refund model on loopback for the docs' walkthrough.

    python -m evals.examples.serve --port 18550 --seconds 600

It is llmcalls' fake OpenAI-compatible provider (tests/llmcalls/fake_provider.py) with the
answer text computed by evals.examples.refund_model.respond. It stops by itself.
"""

from __future__ import annotations

import argparse
import sys
import time

from evals.examples.refund_model import respond
from tests.evals.scripted_provider import ScriptedProvider


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18550)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    server = ScriptedProvider(args.port, responder=respond).start()
    sys.stderr.write(
        f"simulated provider at {server.base_url('sim')} for {args.seconds:g}s (models: "
        "sim-large, sim-small, sim-tiny)\n"
    )
    try:
        time.sleep(args.seconds)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

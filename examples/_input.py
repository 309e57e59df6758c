"""Input for the examples: a bundled list, or lines from a socket like the customer's programs.

The customer's programs read ``socketTextStream("localhost", 19523)``; the examples do the
same when given ``--port`` (start ``nc -lk 19523`` and type lines), and otherwise read the
bundled sample lines so that they run anywhere.
"""

from __future__ import annotations

import argparse


def source(env, sample: list[str], description: str):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, help="read lines from this socket instead")
    args = parser.parse_args()
    if args.port:
        return env.socket_text_stream(args.host, args.port)
    return env.from_collection(sample)

"""The queues imagegen is measured against, side by side (``bench/bench_queue.py --compare``).

Each peer module runs under the peers' own virtualenv (``requirements-bench.txt``) as
``python -m bench.peers.<name> drain|pickup ...`` and prints one JSON line with its result.
"""

"""The 1,000-record job whose end-to-end wall time bench/test_startup.py measures.

Run as ``flowrun run bench/job_startup.py -p 2 -- OUT_DIR``: from_collection ->
map -> key_by -> reduce -> a sink that writes each subtask's last count per key
to OUT_DIR, so the benchmark can check the result, and prints the job's net
runtime (deployment to end) so that the wall time can be split into start-up
and running. Deliberately tiny: what is
measured is everything around the data -- interpreter start, imports, fork
server, deployment of the subtasks, teardown.
"""

import sys

from _sinks import LastValueSink

from flowrun.core import StreamExecutionEnvironment, Types

RECORDS = 1000
KEYS = 10

env = StreamExecutionEnvironment.get_execution_environment()
(
    env.from_collection(list(range(RECORDS)), type_info=Types.LONG())
    .map(lambda i: (f"k{i % KEYS}", 1), output_type=Types.TUPLE([Types.STRING(), Types.LONG()]))
    .key_by(lambda pair: pair[0])
    .reduce(lambda a, b: (a[0], a[1] + b[1]))
    .sink_to(LastValueSink(sys.argv[1]))
)
result = env.execute("bench startup")
print(f"net_runtime_ms={result.get_net_runtime()}")

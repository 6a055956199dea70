"""The API server, supervised: what `python -m api serve` runs
(api/commands/serve.py is its command line).

What restarts what:

- granian's main process (the *server*) respawns a worker that dies, at once
  (`respawn_failed_workers`); the other workers go on answering meanwhile.
  A worker that dies again within 5.5 s makes granian exit instead of loop.
- the supervisor (supervisor.py) runs the server as its child and starts a
  new one at once when it exits for any reason but a stop (kill -9
  included); only while new servers keep dying within seconds of starting
  does it wait, up to 4 s. It counts and logs every restart, the server's
  and the workers' (seen in /proc), in /metrics
  (`utterstream_api_restarts_total{process}`) and in the `--state` file
  (state.py) that ops/status shows.
- the supervisor itself is restarted by whatever started it: ops/api's loop,
  a second after it exits, or the container's restart policy. A supervisor
  that finds the state file of one that died without stopping carries its
  counts on and counts it (`process="supervisor"`).

Nothing is left behind: a server and its workers form a process group of
their own, which the supervisor kills whole when the server dies; on Linux
the server gets SIGTERM when the supervisor dies, and each worker SIGKILL
when its server dies (PR_SET_PDEATHSIG, processes.py). SIGTERM or SIGINT
stop the server gracefully, then the supervisor; SIGHUP is passed on
(granian reloads its workers).

The supervisor imports the app once and forks each server from itself, and
granian forks the workers from the server, so a restart does not pay for
importing the app again (several seconds on a busy machine): a new server
answers once its workers have connected to Cassandra and Redis. New code
therefore needs the supervisor restarted (ops/down and ops/up, or a new
container).
"""

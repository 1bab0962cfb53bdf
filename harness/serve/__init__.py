"""`wanbench serve`: the runtime behind HTTP, with what each video cost.

One process loads one model once (the CLI, harness/cli/serve.py) and serves it with FastAPI and
uvicorn (app.py, server.py). Requests use the runtime's parameter spec (intake.py); jobs wait in a
bounded queue (jobqueue.py; the service's limits: limits.py) and run one at a time on a worker
thread (service.py), measured as a results row is (execute.py); every job's record, upload and video live in the service's folder
(jobs.py, store.py), so finished videos survive a restart. loadtest.py drives a running service
with concurrent clients (bench/serve_load.py and the tests use it).
"""
